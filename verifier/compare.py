"""Typed comparison of two parsed answers (rules 5, 6, 8, 9, 12, 14) and the time budget.

Single values are compared exactly when both are rational, otherwise numerically at 50 digits or more
(never by rounding: 1/2^99 must differ from 1/2^98, and e^{10000}+1 from e^{10000}). Expressions with
symbols are compared at fixed random points (probabilistic identity testing) instead of calling simplify(),
whose running time is unbounded. Structures (tuples, intervals, sets, lists, unions, equations, matrices)
are compared by kind; see answer.py for the node shapes.
"""
from __future__ import annotations

import random
import re
import threading
import time
from fractions import Fraction

import mpmath  # ships with sympy (a hard dependency of it)
import sympy as sp

from .limits import _DPS, _MAX_DPS, _Reject

_LOCAL = threading.local()   # per-thread deadline of the current math_equal call


def _start_budget(seconds: float) -> None:
    """Start the cooperative time budget of one math_equal call (per thread)."""
    _LOCAL.deadline = time.monotonic() + seconds


def _check_deadline():
    """Cooperative time budget: long comparisons (32-element lists of expressions) give up with False."""
    if time.monotonic() > getattr(_LOCAL, "deadline", float("inf")):
        raise _Reject("time budget exhausted")


# ---------------------------------------------------------------------------------------------
# Fast path: the commonest golds (integers, decimals, plain fractions) without sympy
# ---------------------------------------------------------------------------------------------
_SIMPLE = re.compile(r"\s*(-?)\s*(?:(\d{1,400})|(\d*\.\d{1,400})|\\frac\{(\d{1,400})\}\{(\d{1,400})\}"
                     r"|(\d{1,400})/(\d{1,400}))\s*")


def _simple_number(s: str):
    """(exact value, None) or (value, (ulp, significant digits)) for a decimal; None when not that simple."""
    m = _SIMPLE.fullmatch(s)
    if not m:
        return None
    sign = -1 if m.group(1) else 1
    if m.group(2):
        return sign * Fraction(int(m.group(2))), None
    if m.group(3):
        whole, frac = m.group(3).split(".")
        return sign * Fraction(m.group(3)), (Fraction(1, 10 ** len(frac)), len((whole + frac).lstrip("0")))
    num, den = (m.group(4), m.group(5)) if m.group(4) else (m.group(6), m.group(7))
    return (sign * Fraction(int(num), int(den)), None) if int(den) else None


def _simple_equal(gold: str, pred: str):
    """True/False when both answers are simple numbers (rules 3 and 6), None when the full path must decide."""
    a, b = _simple_number(gold), _simple_number(pred)
    if a is None or b is None:
        return None
    if a[0] == b[0]:
        return True
    if (a[1] is None) == (b[1] is None):
        return False
    (value, (ulp, sig)), exact = (a, b[0]) if a[1] is not None else (b, a[0])
    return sig >= 6 and exact.denominator != 1 and _rounds_to(value, ulp, exact)


def _rounds_to(d, ulp, x) -> bool:
    """Is the decimal d the exact value x rounded (|d - x| <= ulp/2) or truncated toward zero?"""
    diff = (x - d) if d >= 0 else (d - x)
    return abs(x - d) * 2 <= ulp or 0 <= diff < ulp


# ---------------------------------------------------------------------------------------------
# Values: exact, numeric, and at random points
# ---------------------------------------------------------------------------------------------
def _cnum(e, subs=None, dps=_DPS):
    """e as an mpmath complex at `dps` digits, or None if it is not a finite number."""
    v = e.evalf(dps, subs=subs) if subs else e.evalf(dps)
    if v.free_symbols or v.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
        return None
    re_, im_ = v.as_real_imag()
    if not (re_.is_Number and im_.is_Number):
        return None
    with mpmath.workdps(dps):
        return mpmath.mpc(mpmath.mpf(sp.Float(re_, dps)), mpmath.mpf(sp.Float(im_, dps)))


def _same(a, b, subs=None):
    """Numerically equal? None when neither is a finite number here or they are too large to resolve.

    Relative tolerance 1e-40 (tiny values never collapse: 1/2^99 != 1/2^98) *and* absolute 1e-20, with
    the precision raised to the size of the numbers, so e^{10000} + 1 != e^{10000} (a fixed 50 digits
    could not tell them apart).
    """
    u, v = _cnum(a, subs, 15), _cnum(b, subs, 15)
    if u is None or v is None:
        return None if u is None and v is None else False
    top = max(abs(u), abs(v))
    dps = _DPS + (int(mpmath.log10(top)) if top > 1 else 0)
    if dps > _MAX_DPS:
        return None
    u, v = _cnum(a, subs, dps), _cnum(b, subs, dps)
    if u is None or v is None:
        return None if u is None and v is None else False
    with mpmath.workdps(dps):
        diff, scale = abs(u - v), max(abs(u), abs(v))
        return scale == 0 or (diff <= mpmath.mpf(10) ** (10 - _DPS) * scale and diff <= mpmath.mpf(10) ** -20)


def _points(symbols, signed=False):
    """Four fixed pseudo-random substitutions, distinct per symbol (x+1 must differ from y+1, rule 14).

    Positive by default so that \\sqrt{1/n} == 1/\\sqrt{n} (rule 14); also negative when |.|/floor appear.
    """
    rng = random.Random(20240412)
    pts = []
    for _ in range(4):
        pt = {}
        for s in symbols:
            v = sp.Rational(rng.randint(1300, 2900), 1009)
            pt[s] = -v if signed and rng.random() < 0.5 else v
        pts.append(pt)
    return pts


def _symbols(*xs):
    return sorted(set().union(*(x.free_symbols for x in xs)), key=lambda s: s.name)


def _expr_equal(a, b, da=None, db=None) -> bool:
    """Two values (da, db: their _decinfo when written as decimals). Rules 5, 6 and 14."""
    _check_deadline()
    if a.has(sp.zoo, sp.nan) or b.has(sp.zoo, sp.nan):
        return False                             # 1/0, 0/0, \infty - \infty are not answers
    if a == b:
        return True
    if a.has(sp.oo, -sp.oo) or b.has(sp.oo, -sp.oo):
        return False
    if not a.free_symbols and not b.free_symbols:
        if not (a.is_Rational and b.is_Rational) and _same(a, b):   # differing rationals differ
            return True
        # Rule 6: a decimal stands for an exact value only with >= 6 significant digits, within 1 ulp.
        if (da is None) != (db is None):
            (value, ulp, sig), other = (da, b) if da is not None else (db, a)
            if sig < 6:
                return False
            if other.is_Integer:                 # an integer answer must be given exactly
                return False
            if other.is_Rational:
                return _rounds_to(value, ulp, Fraction(int(other.p), int(other.q)))
            w = _cnum(other)
            with mpmath.workdps(_DPS):
                return (w is not None and abs(w.imag) == 0 and _rounds_to(
                    mpmath.mpf(value.numerator) / value.denominator, mpmath.mpf(ulp.numerator) / ulp.denominator,
                    w.real))
        return False
    # Symbols: probabilistic identity test at fixed random points (simplify() has no time bound).
    signed = any(x.has(sp.Abs, sp.floor, sp.ceiling) for x in (a, b))
    good = 0
    for pt in _points(_symbols(a, b), signed):
        _check_deadline()
        same = _same(a, b, pt)
        if same is False:
            return False
        good += bool(same)
    return good >= 3


def _proportional(f, g) -> bool:
    """f = 0 and g = 0 are the same equation: f/g is a non-zero constant (y = 1 - x  ==  x + y = 1)."""
    if not (f.free_symbols or g.free_symbols):
        return f == 0 and g == 0
    ratios = []
    for pt in _points(_symbols(f, g)):
        u, v = _cnum(f, pt), _cnum(g, pt)
        if u is None or v is None or (u == 0) != (v == 0):
            return False
        if u != 0:
            ratios.append(u / v)
    with mpmath.workdps(_DPS):
        return len(ratios) >= 3 and all(abs(r - ratios[0]) <= mpmath.mpf(10) ** -30 * abs(ratios[0])
                                        for r in ratios)


# ---------------------------------------------------------------------------------------------
# Structures
# ---------------------------------------------------------------------------------------------
def _unordered(xs, ys) -> bool:
    return (all(any(_equal(x, y) for y in ys) for x in xs)
            and all(any(_equal(x, y) for x in xs) for y in ys))


def _equal(g, p) -> bool:
    """Two parsed answers (gold first; every rule below is symmetric)."""
    kg, kp = g[0], p[0]
    if kg in ("set", "list") and len(g[1]) == 1 and kp not in ("set", "list", "union"):
        return _equal(g[1][0], p)                # {3} == 3
    if kp in ("set", "list") and len(p[1]) == 1 and kg not in ("set", "list", "union"):
        return _equal(g, p[1][0])
    if kg == "expr" and kp == "expr":
        return _expr_equal(g[1], p[1], g[2], p[2])
    if kg == "eq" and kp == "eq":
        if g[3] and p[3] and _expr_equal(g[2], p[2], g[4], p[4]):   # k = 5 == x = 5 (rule 8 policy)
            return True
        return g[1] is not None and p[1] is not None and _proportional(g[1] - g[2], p[1] - p[2])
    if "eq" in (kg, kp):                          # x = 3 == 3; a non-assignment equation is not a value
        e, o = (g, p) if kg == "eq" else (p, g)
        return e[3] and o[0] == "expr" and _expr_equal(e[2], o[1], e[4], o[2])
    if kg == "seq" and kp == "seq":
        if len(g[3]) != len(p[3]) or (g[1] == "<") != (p[1] == "<"):
            return False
        for side, gb, pb in ((0, g[1], p[1]), (-1, g[2], p[2])):
            inf = any(x[0] == "expr" and x[1] in (sp.oo, -sp.oo) for x in (g[3][side], p[3][side]))
            if gb != pb and not inf:              # (1,2) != [1,2]; but [-\infty is just sloppy (-\infty
                return False
        return all(_equal(x, y) for x, y in zip(g[3], p[3]))
    if {kg, kp} == {"seq", "list"}:              # "x = 2, y = 3" == (2, 3): assignments in name order
        t, l_ = (g, p) if kg == "seq" else (p, g)
        eqs = [e for e in l_[1] if e[0] == "eq" and e[3] and e[1] is not None and e[1].is_Symbol]
        if ((t[1], t[2]) != ("(", ")") or not len(eqs) == len(l_[1]) == len(t[3])
                or len({e[1] for e in eqs}) < len(eqs)):
            return False
        eqs.sort(key=lambda e: e[1].name)
        return all(_equal(x, ("expr", e[2], e[4])) for x, e in zip(t[3], eqs))
    if kg in ("set", "list") and kp in ("set", "list"):
        return _unordered(g[1], p[1])            # {1,2} == {2,1} == "2, 1"
    if kg == "union" and kp == "union":
        return _unordered(g[1], p[1])
    if {kg, kp} == {"union", "list"}:            # "x<1 or x>3" == (-\infty,1) \cup (3,\infty)
        u, l_ = (g, p) if kg == "union" else (p, g)
        return all(x[0] == "seq" for x in l_[1]) and _unordered(u[1], l_[1])
    if kg == "matrix" and kp == "matrix":        # column vector vs tuple stays different (rule 12 policy)
        return (len(g[1]) == len(p[1]) and len(g[1][0]) == len(p[1][0])
                and all(_equal(x, y) for rg, rp in zip(g[1], p[1]) for x, y in zip(rg, rp)))
    return False
