"""Limits on what the math checker will build or spend, and the two ways an answer can fail to parse.

An answer over any limit is rejected (rule 7): it is never equal to anything, not even to itself.
"""
from __future__ import annotations

MAX_ANSWER_CHARS = 1000   # longer "answers" are garbage or attacks; real golds are far shorter
MAX_DEPTH = 40            # bracket nesting; deeper input would only exhaust the recursion limit
MAX_ITEMS = 32            # elements of a tuple/set/list
_MAX_BITS = 100_000       # largest exact number we are willing to build (~30k decimal digits)
_DPS = 50                 # working precision of the numeric comparison (decimal digits)
_MAX_DPS = 12_000         # numbers beyond ~10^11950 are not compared numerically (undecided -> False)
TIME_BUDGET = 1.5         # seconds; checked between steps (the batch API adds a hard kill on top)


class _Unparsable(Exception):
    """We do not understand this answer: only an exact (normalised) string match can still accept it."""


class _Reject(Exception):
    """Pathological answer (too long/deep/big): never equal to anything, not even itself."""
