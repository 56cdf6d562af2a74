r"""reward.py — the binary verifier r(y, a) ∈ {0, 1} that drives SD-Zero.

SD-Zero (arXiv 2604.12002, §1 and §5.3) learns from nothing but a binary reward: r(y, a) = 1 iff the
final answer of response y matches the reference a. Phase 1 uses r to pick the reviser's control phrase
P_r and to keep only verified-correct revisions; Phase 2 uses it again to pick P_r for the teacher's
context. Everything downstream trusts this bit, so this file optimises for *no false positives* first
(a lenient grader teaches the model to game it), then for speed and recall.

Math (rewards.md §2.2 ranks the rules; comments cite them as "rule N"):
  extract_boxed(text)              content of the last complete \boxed{...} / \fbox{...} / \boxed 5
  math_equal(gold, pred)           are two final answers equivalent?
  math_reward(response, gold)      1.0 / 0.0; grades only the text after the last control phrase P_r
  math_reward_batch(...)           many pairs on a bounded pool of worker processes, hard timeout per item

  How: a symmetric, token-aware string clean-up; then our own small LaTeX parser that builds sympy objects
  directly (sympy's parse_latex needs an ANTLR version we do not have, and parse_expr is `eval` — untrusted
  model text never reaches eval/sympify/parse_expr here); then typed comparison (tuples vs intervals vs sets
  vs unordered lists, equations, matrices) where single values are compared *exactly* when rational and
  numerically otherwise, at 50 digits or more (never by rounding: 1/2^99 must differ from 1/2^98, and
  e^{10000}+1 from e^{10000}). Expressions with symbols are compared at fixed random points (probabilistic
  identity testing) instead of calling simplify(), whose running time is unbounded. Size guards reject power
  towers, huge factorials, huge radicands and deep nesting before anything is evaluated, and a cooperative
  time budget (TIME_BUDGET) stops long comparisons; math_reward_batch adds a hard, kill-based timeout.
  Policies where anchors disagree (rewards.md §2.2) are documented at the rule they implement: decimals
  count for an exact gold only with >= 6 significant digits, correctly rounded or truncated; k = 5 == x = 5;
  x <= 3 == (-\infty, 3]; symbols are taken as positive unless |.|, floor or ceil appear; no unit conversion;
  a column vector is not a tuple; "\log" is the natural log.

Code:
  extract_code(text)               last complete fenced block, preferring ```python
  run_python(source, ...)          one program in a contained subprocess, returns rc/stdout/timeout
  code_reward(response, tests)     1.0 iff every test passes; tests = {"stdio": [...]} or HumanEval-style
                                   {"entry_point": "f", "test": "def check(candidate): ..."}
  code_reward_batch(...)           thread pool of run_python calls
  sandbox_protections()            which protections this machine actually provides

  The code runner is NOT a security sandbox (same wording as human-eval, EvalPlus, LiveCodeBench). It
  contains accidents and the reward hacks RL finds (exit(0) before the asserts, printing "PASSED", objects
  whose __eq__ is always True) and, where the machine allows it, keeps programs off the disk, because a
  program written by the policy that edits test data, the verifier or a checkpoint is a reward hack, and
  one that deletes files loses data. What is contained depends on the machine (sandbox_protections() says):
    * root (CI, GPU containers that may create namespaces): each program runs in its own mount, network and
      PID namespace; every mount, submounts included, is read-only, nodev and nosuid; only its fresh temp
      dir (and a private /dev/shm) is writable; /proc is read-only (and its own, where the kernel allows);
      devices other than null, zero, full, random, urandom and tty cannot be opened; it holds no
      capabilities, so it can neither write, delete, rename, chmod or chown anything outside its temp dir
      nor remount anything read-write;
    * unprivileged with user namespaces: the same, inside `unshare --user --map-root-user`;
    * neither (no unshare, or namespaces forbidden, e.g. a default Docker seccomp profile; macOS): file
      writes are NOT contained (network and PID isolation may be missing too); the first call prints one
      warning saying why, and sandbox_protections()["read_only_filesystem"] is False with the reason.
  Never contained: reading any file the trainer can read (test data included); Unix sockets and FIFOs on
  disk, which reach the processes behind them (a daemon may write for the program); filling its own temp
  dir (bounded only by RLIMIT_FSIZE per file); a program that deliberately inspects the harness's own frames
  to find the nonce or patches the harness in memory; kernel exploits; CPU/disk contention with the
  trainer; side channels. uid 0 ignores RLIMIT_NPROC even without capabilities (the PID namespace and the
  process-group kill end a fork swarm).
"""
from __future__ import annotations

import atexit
import functools
import importlib
import json
import math
import os
import random
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import mpmath  # ships with sympy (a hard dependency of it)
import sympy as sp

VERIFIER_VERSION = "sdzero-reward-1.0"

# The reviser's control phrases P_r (paper §2.1; DESIGN.md). revise.py owns its own copies; we only need
# them to grade the text *after* the last one, because a transcript y_init + P_r + y_revised has two boxes.
CONTROL_PHRASES = (
    "Let me rephrase the above solution.",                        # r = 1 (paper and code)
    "Wait, this response is not correct, let me start over.",     # r = 0 (paper)
    "Wait, this response is wrong. Let me correct it.",           # r = 0 (official code, Qwen)
)

MAX_ANSWER_CHARS = 1000   # rule 7: longer "answers" are garbage or attacks; real golds are far shorter
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


# ============================================================================================
# Extraction
# ============================================================================================
def _match_brace(s: str, i: int) -> int:
    """Index of the '}' matching the '{' at s[i], or -1 when unterminated. Skips \\{ and \\}."""
    depth, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def extract_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} (or \\fbox{...}, or the TeX form "\\boxed 5").

    None when there is no box, or when the last box is unterminated: a truncated "\\boxed{5" must not
    score (Qwen/PRM800K extract "5" from it: a false positive, rewards.md pair X5). Nested boxes are
    returned whole (the outer one wins); the clean-up unwraps them.
    """
    if not isinstance(text, str):
        return None
    last, i, n = None, 0, len(text)
    while True:
        m = _BOX.search(text, i)
        if not m:
            return last
        j = k = m.end()
        while k < n and text[k] in " \t\n":
            k += 1
        if k < n and text[k] == "{":
            end = _match_brace(text, k)
            if end < 0:
                return None          # unterminated: the final answer was cut off
            last, i = text[k + 1:end], end + 1
        elif k > j and k < n:        # "\boxed 5": up to whitespace or '$' (hendrycks' convention)
            mm = re.match(r"[^\s$]+", text[k:k + MAX_ANSWER_CHARS + 1])
            last, i = mm.group(0), k + mm.end()
        else:
            i = j


def _after_last_phrase(text: str, phrases) -> str:
    """The text after the last control phrase, i.e. y_revised of a y_init + P_r + y_revised transcript."""
    cut = -1
    for p in phrases or ():
        k = text.rfind(p)
        if k >= 0:
            cut = max(cut, k + len(p))
    return text if cut < 0 else text[cut:]


# ============================================================================================
# Math: clean-up (rule 2). Symmetric: gold and prediction go through exactly the same steps.
# ============================================================================================
_UNICODE = {"−": "-", "–": "-", "×": r"\times ", "·": r"\cdot ", "÷": r"\div ", "√": r"\sqrt ",
            "π": r"\pi ", "∞": r"\infty ", "≤": r"\le ", "≥": r"\ge ", "≠": r"\ne ", "∪": r"\cup ",
            "∅": r"\emptyset ", "°": "", "²": "^2", "³": "^3", "±": r"\pm ", "∓": r"\mp ", "ℝ": r"\Reals "}
_TEXT_CMDS = ("text", "textbf", "textit", "textrm", "textnormal", "textsf", "mathrm", "mathbf", "mathit",
              "mathsf", "mbox", "hbox", "operatorname", "boldsymbol", "bm")
_UNIT_WORDS = (r"cm|mm|km|meters?|metres?|inch(?:es)?|feet|foot|ft|yards?|yds?|miles?|units?|degrees?"
               r"|dollars?|cents?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?"
               r"|kg|grams?|pounds?|lbs?|ounces?|oz|liters?|litres?|ml|mph|kph|percent")
_TRAILING_UNIT = re.compile(r"(?<=[\d}).\s])\s*(?:(?:square|sq\.?|cubic)\s+)?(?:" + _UNIT_WORDS
                            + r")(?:\^\s*\{?\s*[23]\s*\}?)?\s*\.?\s*$")
_TRAILING_TEXT = re.compile(r"\\(?:text|mbox|mathrm|textrm|textnormal)\s*\{([^{}]*)\}\s*"
                            r"(?:\^\s*\{?\s*[23]\s*\}?)?\s*$")
_NOT_UNITS = {"or", "and", "not", "no", "none", "undefined", "never", "infinite", "all", "only", "yes"}
# Plain-text spellings models use ("sqrt(2)", "2pi"): map them to commands so they are not read as letters.
_PLAIN_WORDS = re.compile(r"(?<![\\a-zA-Z])(sqrt|arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|cot|sec"
                          r"|csc|ln|log|exp|pi|infinity|infty|inf)(?![a-zA-Z])", re.I)


def _unwrap(s: str, names) -> str:
    """\\name{content} -> " content " (brace-matched, repeated for nesting). Unbalanced -> _Unparsable."""
    pat = re.compile(r"\\(?:" + "|".join(names) + r")(?![a-zA-Z])\s*\{")
    for _ in range(10):
        m = pat.search(s)
        if not m:
            return s
        out, i = [], 0
        while m:
            end = _match_brace(s, m.end() - 1)
            if end < 0:
                raise _Unparsable("unbalanced braces")
            out += [s[i:m.start()], " ", s[m.end():end], " "]
            i = end + 1
            m = pat.search(s, i)
        s = "".join(out) + s[i:]
    return s


def _clean(raw: str) -> str:
    s = raw.strip()
    if len(s) > MAX_ANSWER_CHARS:
        raise _Reject("too long")
    depth = best = 0
    for c in s:                       # rule 7: deep nesting only ever exhausts the recursion limit
        depth += (c in "([{") - (c in ")]}")
        best = max(best, depth)
    if best > MAX_DEPTH:
        raise _Reject("too deep")
    if depth != 0 or _match_brace("{" + s + "}", 0) != len(s) + 1:
        raise _Reject("unbalanced brackets")   # broken LaTeX: not an answer, not even equal to itself
    m = re.match(r"\\(?:boxed|fbox)\s*\{", s)
    if m and _match_brace(s, m.end() - 1) == len(s) - 1:   # the whole answer is one box
        s = s[m.end():-1]
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = s.replace("\\$", " ").replace("$", " ")                      # currency and math-mode delimiters
    s = re.sub(r"\\[)\]]\s*$", "", re.sub(r"^\s*\\[(\[]", "", s))  # \( ... \) and \[ ... \]
    s = re.sub(r"\\(?:left|right)\s*\.", " ", s)                     # \left. and \right. are invisible
    s = re.sub(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])", " ", s)
    s = re.sub(r"\\(?:displaystyle|textstyle|limits|quad|qquad)(?![a-zA-Z])|(?<!\\)\\[,;:! ]|~", " ", s)
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
    s = re.sub(r"\\mathbb\s*\{?\s*R\s*\}?|\\R(?![a-zA-Z])", r"\\Reals ", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])", " ", s)   # degrees
    s = re.sub(r"\\?%", " ", s)                                       # rule 10: 50% == 50, never 0.5
    # Rule 11: a trailing \text{unit words} after the value is dropped ("5\text{ cm}" == "5"), but an
    # answer that *is* text ("\text{(C)}", "\text{no}") is kept.
    for _ in range(3):
        m = _TRAILING_TEXT.search(s)
        words = m.group(1).lower().replace(".", " ").split() if m else []
        if not (words and s[:m.start()].strip() and all(w.isalpha() and w.isascii() for w in words)
                and not set(words) & _NOT_UNITS and (len(words[0]) > 1 or words[0] in "mgshlknjwv")):
            break                                 # (single letters: "5\text{ m}" yes, "2\mathrm{i}" no)
        s = s[:m.start()]
    s = _unwrap(s, _TEXT_CMDS)
    s = re.sub(r"(?<=\d)\{,\}(?=\d{3}(?!\d))", "", s).replace("{,}", ",")   # 10{,}000 is one number
    for _ in range(2):
        m = _TRAILING_UNIT.search(s)
        if m and s[:m.start()].strip():
            s = s[:m.start()]
    s = re.sub(r"\s*(?<![a-zA-Z\\])(?:or|and)(?![a-zA-Z])\s*", ",", s)    # "x=2 or x=3" is a list
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in(?![a-zA-Z])", " ", s)                 # "x \in [1,2]"
    s = _PLAIN_WORDS.sub(lambda m: "\\" + {"infinity": "infty", "inf": "infty"}.get(m.group(1).lower(),
                                                                                     m.group(1).lower()) + " ", s)
    s = re.sub(r"(?<![a-zA-Z])(\d)[eE]([+-]?\d+)(?![\d.a-zA-Z])", r"\1\\times 10^{\2}", s)   # 6e3, 1.5E-4
    s = re.sub(r"(?<![\d.])(\d{1,3})((?: \d{3})+)(?![\d.])",                          # "1 000" (thin space)
               lambda m: m.group(1) + m.group(2).replace(" ", ""), s)
    s = s.strip().rstrip(".").strip()
    # Rule 3: thousands separators only when the whole answer is a well-formed grouped number
    # ("1,000" -> 1000; "0,1" and "1,2" stay lists: lm-eval PR #4039 fused them).
    if re.fullmatch(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    return s


def _is_text(s: str) -> bool:
    """Answers that are words ("\\text{Tuesday}", "no"): compared as case-insensitive text (rule 11).

    Never split a word into a product of letters: y*e*s would equal s*e*y.
    """
    s = re.sub(r"\\begin\s*\{array\}\s*\{[^{}]*\}|\\(?:begin|end)\s*\{[a-zA-Z*]*\}", " ", s)
    if re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s):
        return True
    return bool(re.fullmatch(r"[a-zA-Z ]*[a-zA-Z]{2}[a-zA-Z ]*", s))


# ============================================================================================
# Math: tokens and a small LaTeX parser that builds sympy objects (rule 4). No eval anywhere.
# ============================================================================================
_TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|(\\[a-zA-Z]+|\\[{}|\\])|([a-zA-Z])"
                    r"|(\*\*|<=|>=|!=|[-+*/^_!=<>()\[\]{}|,;&'])|(\S))")
_ALIAS = {"\\cdot": "*", "\\times": "*", "\\ast": "*", "**": "^", "\\div": "/", "\\le": "<=", "\\leq": "<=",
          "\\leqslant": "<=", "\\ge": ">=", "\\geq": ">=", "\\geqslant": ">=", "\\lt": "<", "\\gt": ">",
          "\\ne": "!=", "\\neq": "!=", "\\lbrace": "\\{", "\\rbrace": "\\}", "\\lvert": "|", "\\rvert": "|",
          "\\vert": "|", "\\mid": "|", "\\lbrack": "[", "\\rbrack": "]", "\\infin": "\\infty",
          "\\varnothing": "\\emptyset", "\\O": "\\emptyset"}
_FUNCS = {"\\sin": sp.sin, "\\cos": sp.cos, "\\tan": sp.tan, "\\cot": sp.cot, "\\sec": sp.sec,
          "\\csc": sp.csc, "\\arcsin": sp.asin, "\\arccos": sp.acos, "\\arctan": sp.atan, "\\sinh": sp.sinh,
          "\\cosh": sp.cosh, "\\tanh": sp.tanh, "\\ln": sp.log, "\\log": sp.log, "\\exp": sp.exp}
_INVERSE = {sp.sin: sp.asin, sp.cos: sp.acos, sp.tan: sp.atan}
_GREEK = set("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi "
             "rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi "
             "Omega".split())
_OPEN, _CLOSE = {"(", "[", "{", "\\{", "\\langle"}, {")", "]", "}", "\\}", "\\rangle"}
_RELS = {"=", "<", ">", "<=", ">=", "!="}
_ATOM_START = {"(", "{", "|", "\\frac", "\\sqrt", "\\binom", "\\lfloor", "\\lceil", "\\pi", "\\infty"}


def _tokenize(s: str) -> list[str]:
    toks, pos = [], 0
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if m.group(5) is not None:
            raise _Unparsable(f"unexpected character {m.group(5)!r}")
        tok = next(g for g in m.groups()[:4] if g is not None)
        toks.append(_ALIAS.get(tok, tok))
        pos = m.end()
    if "i" in toks and "j" in toks:              # 3i + 4j are unit vectors, not 7 times the imaginary unit
        toks = ["ı" if t == "i" else "ȷ" if t == "j" else t for t in toks]
    return toks


def _bits(x) -> int:
    return max(abs(int(x.p)).bit_length(), int(x.q).bit_length()) if x.is_Rational else 0


def _pow(b, e):
    """b**e with size guards (rule 7): 10^{10^{10}} is rejected here before anything is computed."""
    if e.is_Rational:
        mag = abs(e)
        if b.is_Rational:
            if b not in (0, 1, -1) and (mag > 10 ** 5 or _bits(b) * mag > _MAX_BITS):
                raise _Reject("number too large")
            if not e.is_Integer and _bits(b) > 256:   # sympy factors radicands: \sqrt{2^{50000}+1} ran 10 min
                raise _Reject("radicand too large")
        elif mag > 10 ** 4:
            raise _Reject("exponent too large")
    elif any(_bits(a) > 1000 for a in e.atoms(sp.Rational)):
        raise _Reject("exponent too large")
    elif e.free_symbols or b.free_symbols:
        if _height(e) >= 2:                      # e^{e^{e^x}}: point checks would need 10^{10^7} digits
            raise _Reject("symbolic tower")
    elif b not in (0, 1, -1):
        _magnitude(e, 10 ** 4)                   # e^{e^{e^e}}: no finite precision evaluates it
    return sp.Pow(b, e)


def _height(x) -> int:
    """Height of the exponential tower in x: x^2 -> 0, e^{x^2} -> 1, e^{e^{x}} -> 2."""
    if isinstance(x, sp.exp):
        return 1 + _height(x.args[0])
    if x.is_Pow:
        return max(_height(x.base), (1 + _height(x.exp)) if not x.exp.is_Rational else 0)
    return max((_height(a) for a in x.args), default=0)


def _magnitude(x, limit):
    """Reject a constant whose absolute value exceeds `limit` (x is already bounded, so evalf is cheap)."""
    v = x.evalf(15)
    if not v.is_number or v.has(sp.oo, -sp.oo, sp.zoo, sp.nan) or abs(v) > limit:
        raise _Reject("constant too large")


def _radicands(x) -> int:
    return sum(_bits(p.base) for p in x.atoms(sp.Pow) if p.base.is_Rational and not p.exp.is_Integer)


def _mul(a, b):
    if _bits(a) + _bits(b) > 2 * _MAX_BITS:
        raise _Reject("number too large")
    if _radicands(a) + _radicands(b) > 1024:      # Mul merges \sqrt{a}\sqrt{b} into \sqrt{ab} and factors it
        raise _Reject("radicands too large")
    return sp.Mul(a, b)


def _root(x, n):
    """n-th root; odd roots of negative reals are real (\\sqrt[3]{-8} = -2, as in competitions)."""
    if n.is_Integer and n % 2 == 1 and x.is_negative:
        return -_pow(-x, 1 / n)
    return _pow(x, 1 / n)


def _small_args(a):
    """Functions of astronomically large numbers (sin 10^{1000}, floor) need that many digits to evaluate."""
    if any(_bits(r) > 4096 for r in a.atoms(sp.Rational)):
        raise _Reject("function argument too large")
    return a


def _factorial(n):
    if n.is_Integer and 0 <= n <= 3000:
        return sp.factorial(n)
    if n.free_symbols:
        return sp.factorial(n)
    raise _Reject("factorial too large or not an integer")


def _expression(toks: list[str]):
    """Parse a token list into a sympy expression (precedence climbing, TeX macro arguments)."""
    toks, pos, abs_depth = list(toks), 0, 0      # arg() may split a digit run: work on a copy

    def peek(k=0):
        return toks[pos + k] if pos + k < len(toks) else None

    def take(expected=None):
        nonlocal pos
        t = peek()
        if t is None or (expected is not None and t != expected):
            raise _Unparsable(f"expected {expected!r}, got {t!r}")
        pos += 1
        return t

    def starts_atom(t):
        if t is None or (t == "|" and abs_depth):
            return False
        return t[0].isalpha() or t in _ATOM_START or t in _FUNCS or t[1:] in _GREEK

    def expr():
        node = signed()
        while peek() in ("+", "-"):
            node = sp.Add(node, signed() if take() == "+" else -signed())
        return node

    def signed():
        if peek() == "-":
            take()
            return -product()
        if peek() == "+":
            take()
        return product()

    def product():
        node = power()
        while True:
            t = peek()
            if t in ("*", "/"):
                take()
                rhs = signed() if peek() in ("-", "+") else power()
                node = _mul(node, rhs) if t == "*" else _mul(node, _pow(rhs, sp.Integer(-1)))
            elif starts_atom(t):                 # implicit multiplication: 2\pi, 3\sqrt2, xy
                node = _mul(node, power())       # (never before a number: "1 2" is not 12 nor 2)
            else:
                return node

    def power():
        base = postfix()
        if peek() == "^":
            take()
            return _pow(base, exponent())
        return base

    def exponent():
        if peek() in ("-", "+"):
            sign = -1 if take() == "-" else 1
            return sign * exponent()
        e = postfix()
        if peek() == "^":                        # plain-text towers 2^3^2 = 2^(3^2)
            take()
            e = _pow(e, exponent())
        return e

    def postfix():
        node = atom()
        while peek() == "!":
            take()
            if peek() == "!":
                raise _Unparsable("double factorial")
            node = _factorial(node)
        return node

    def group(close):
        node = expr()
        take(close)
        return node

    def arg():
        """A TeX macro argument: {...}, (...) from plain text, one digit ("\\frac12"), or one atom."""
        t = peek()
        if t == "{":
            take()
            return group("}")
        if t == "(":
            take()
            return group(")")
        if t is not None and t[0].isdigit():
            if len(t) > 1 and "." not in t:
                toks[pos] = t[1:]               # TeX reads one character: \frac12 = 1/2
                return sp.Integer(int(t[0]))
            take()
            return _number(t)
        return atom()

    def atom():
        nonlocal abs_depth, pos
        t = take()
        if t[0].isdigit() or t[0] == ".":
            # Mixed number 7\frac{3}{4} = 7 + 3/4, not 7 * 3/4 (rule 4, pair F11).
            if "." not in t and peek() == "\\frac":
                save, saved = pos, list(toks)
                take()
                num, den = arg(), arg()
                if num.is_Integer and den.is_Integer and num >= 0 and den > 0:
                    return sp.Integer(int(t)) + sp.Rational(num, den)
                pos, toks[:] = save, saved
            return _number(t)
        if t[0].isalpha():
            name = t
            if peek() == "_":
                take()
                name += "_" + subscript()
            elif t in ("e", "i", "j"):
                return sp.E if t == "e" else sp.I        # rule 4/15: e is Euler's number, i/j the unit
            return sp.Symbol(name)
        if t in ("(", "["):
            return group(")" if t == "(" else "]")
        if t == "{":
            return group("}")
        if t == "|":
            abs_depth += 1
            node = _small_args(expr())
            take("|")
            abs_depth -= 1
            return sp.Abs(node)
        if t == "\\frac":
            num, den = arg(), arg()
            return _mul(num, _pow(den, sp.Integer(-1)))
        if t == "\\sqrt":
            n = sp.Integer(2)
            if peek() == "[":
                take()
                n = group("]")
            return _root(arg(), n)
        if t == "\\binom":
            n, k = arg(), arg()
            if n.is_Integer and (n > 20000 or n < 0):
                raise _Reject("binomial too large")
            return sp.binomial(n, k)
        if t in ("\\lfloor", "\\lceil"):
            node = _small_args(group("\\rfloor" if t == "\\lfloor" else "\\rceil"))
            return sp.floor(node) if t == "\\lfloor" else sp.ceiling(node)
        if t == "\\pi":
            return sp.pi
        if t == "\\infty":
            return sp.oo
        if t[1:] in _GREEK:
            name = t[1:]
            if peek() == "_":
                take()
                name += "_" + subscript()
            return sp.Symbol(name)
        if t in _FUNCS:
            return function(_FUNCS[t], t)
        raise _Unparsable(f"unsupported token {t!r}")

    def subscript():
        t = take()
        if t == "{":
            parts = []
            while peek() not in ("}", None):
                parts.append(take())
            take("}")
            if not parts or not all(re.fullmatch(r"[a-zA-Z0-9]+", p) for p in parts):
                raise _Unparsable("subscript")
            return "".join(parts)
        if re.fullmatch(r"[a-zA-Z0-9]+", t):
            return t
        raise _Unparsable("subscript")

    def function(f, name):
        power_of = None
        base = None
        if name == "\\log" and peek() == "_":
            take()
            base = arg()
        if peek() == "^":                        # \sin^2 x, \sin^{-1} x
            take()
            power_of = exponent()
        if peek() in ("(", "{"):
            a = group(")" if take() == "(" else "}")
        else:                                    # \sin 2x, \ln 3: a run of implicit products
            a = power()
            while starts_atom(peek()) and peek() not in _FUNCS:
                a = _mul(a, power())
        _small_args(a)
        if f is sp.exp:
            if a.free_symbols:
                if _height(a) >= 2:
                    raise _Reject("symbolic tower")
            else:
                _magnitude(a, 10 ** 4)
        if power_of == -1 and f in _INVERSE:
            return _INVERSE[f](a)
        val = sp.log(a, base) if base is not None else f(a)
        return _pow(val, power_of) if power_of is not None else val

    result = expr()
    if pos != len(toks):
        raise _Unparsable(f"trailing tokens {toks[pos:]}")
    return result


def _number(t: str):
    """Decimal literals are exact rationals (rule 3): 0.1 + 0.2 == 3/10, 3.0 == 3."""
    if "." in t:
        whole, frac = t.split(".")
        return sp.Rational(int((whole or "0") + frac) if frac else int(whole or "0"), 10 ** len(frac))
    return sp.Integer(int(t))


def _decinfo(toks):
    """(value, ulp, significant digits) when the tokens are one decimal literal like -0.3333 or 1.5*10^{-3}.

    Used by rule 6: a decimal for an exact gold counts only if it has >= 6 significant digits and is within
    one unit in its last place (0.3333333 == 1/3; 0.333, 33.3 for 100/3, 3.1416 for pi do not).
    """
    t = list(toks)
    sign = -1 if t and t[0] == "-" else 1
    if t and t[0] in "+-":
        t = t[1:]
    if not t or not re.fullmatch(r"\d*\.\d+", t[0]):
        return None
    mant, exp = t[0], 0
    rest = t[1:]
    if rest:
        m = re.fullmatch(r"\*10\^(?:\{([+-]?)(\d+)\}|([+-]?)(\d+))", "".join(rest))
        if not m or len(rest) > 7:
            return None
        exp = int(m.group(2) or m.group(4)) * (-1 if (m.group(1) or m.group(3)) == "-" else 1)
    digits = mant.replace(".", "").lstrip("0")
    if not digits or abs(exp) > 400:
        return None
    decimals = len(mant.split(".")[1])
    return sign * Fraction(mant) * Fraction(10) ** exp, Fraction(10) ** (exp - decimals), len(digits)


# ============================================================================================
# Math: answer structure (rules 8, 9, 12, 13). Nodes are tuples:
#   ("expr", e, dec)  ("eq", lhs, rhs, is_assignment, rhs_dec)  ("seq", open, close, items)
#   ("set", items)  ("list", items)  ("union", items)  ("matrix", rows)
# ============================================================================================
_MATRIX = re.compile(r"^\(?\s*\\begin\{(p|b|B|small|)matrix\}(.*)\\end\{\1matrix\}\s*\)?$|"
                     r"^\(?\s*\\begin\{array\}\s*\{[lcr|\s]*\}(.*)\\end\{array\}\s*\)?$", re.S)


def _split(toks, seps):
    """Split at top-level separators (outside any bracket). Returns (parts, separators)."""
    parts, ops, cur, depth = [], [], [], 0
    for t in toks:
        if t in _OPEN:
            depth += 1
        elif t in _CLOSE:
            depth -= 1
        if depth == 0 and t in seps:
            parts.append(cur)
            ops.append(t)
            cur = []
        else:
            cur.append(t)
    parts.append(cur)
    return parts, ops


def _encloses(toks) -> bool:
    """True when toks[0] is an opener whose matching closer is the last token: "(1,2]" but not "(1)(2)"."""
    depth = 0
    for k, t in enumerate(toks):
        depth += (t in _OPEN) - (t in _CLOSE)
        if depth == 0:
            return k == len(toks) - 1
    return False


def _parse_answer(s: str):
    m = _MATRIX.match(s.strip())
    if m:
        body = m.group(2) if m.group(2) is not None else m.group(3)
        rows = [r for r in re.split(r"\\\\", body) if r.strip() and not r.strip().startswith("\\hline")]
        if not rows or len(rows) > MAX_ITEMS:
            raise _Unparsable("matrix")
        cells = [tuple(_single(_tokenize(c)) for c in r.split("&")) for r in rows]
        if len({len(r) for r in cells}) != 1:
            raise _Unparsable("ragged matrix")
        return ("matrix", tuple(cells))
    toks = _tokenize(s)
    if not toks:
        raise _Unparsable("empty")
    parts, _ = _split(toks, (",", ";"))
    items = [v for p in parts for v in _variants(p)]
    if len(items) > MAX_ITEMS:
        raise _Unparsable("too many items")
    return items[0] if len(items) == 1 else ("list", tuple(items))


def _variants(toks):
    """One comma-free chunk -> one node, or two for \\pm (rule 13: "1 \\pm \\sqrt2" is a 2-element set)."""
    if not toks:
        raise _Unparsable("empty item")
    cups, _ = _split(toks, ("\\cup",))
    if len(cups) > 1:
        return [("union", tuple(_single(c) for c in cups))]
    if "\\pm" in toks or "\\mp" in toks:
        plus = ["+" if t == "\\pm" else "-" if t == "\\mp" else t for t in toks]
        minus = ["-" if t == "\\pm" else "+" if t == "\\mp" else t for t in toks]
        return [_single(plus), _single(minus)]
    return [_single(toks)]


def _single(toks):
    if not toks:
        raise _Unparsable("empty item")
    first, last = toks[0], toks[-1]
    if first in ("(", "[") and last in (")", "]") and _encloses(toks):
        parts, _ = _split(toks[1:-1], (",",))
        if len(parts) >= 2:                      # ordered pair / interval: brackets are kept (rule 9)
            return ("seq", first, last, tuple(_single(p) for p in parts))
    if first == "\\{" and last == "\\}" and _encloses(toks):
        if len(toks) == 2:
            return ("set", ())
        parts, _ = _split(toks[1:-1], (",", ";"))
        return ("set", tuple(v for p in parts for v in _variants(p)))
    if first == "\\langle" and last == "\\rangle" and _encloses(toks):
        parts, _ = _split(toks[1:-1], (",",))
        return ("seq", "<", ">", tuple(_single(p) for p in parts))
    if toks == ["\\emptyset"]:
        return ("set", ())
    if toks == ["\\Reals"]:
        return ("seq", "(", ")", (("expr", -sp.oo, None), ("expr", sp.oo, None)))
    return _relation(toks)


def _is_name(toks) -> bool:
    """Left-hand sides we read as "the thing asked for": x, x_1, \\theta, AB, f(x), \\angle ABC."""
    if toks and toks[0] == "\\angle":
        toks = toks[1:]
    if len(toks) >= 3 and toks[1] == "_" and (toks[0].isalpha() or toks[0][1:] in _GREEK):
        return toks[2].isalnum() or (toks[2] == "{" and toks[-1] == "}")
    if 1 <= len(toks) <= 3 and all(len(t) == 1 and t.isalpha() for t in toks):
        return True
    if len(toks) == 1 and toks[0][1:] in _GREEK:
        return True
    return (len(toks) >= 4 and len(toks[0]) == 1 and toks[0].isalpha() and toks[1] == "(" and toks[-1] == ")"
            and all(len(t) == 1 and (t.isalpha() or t == ",") for t in toks[2:-1]))


def _relation(toks):
    parts, ops = _split(toks, _RELS)
    if not ops:
        return ("expr", _expression(toks), _decinfo(toks))
    if "!=" in ops or any(not p for p in parts):
        raise _Unparsable("relation")
    if ops == ["="]:
        (lt, rt) = parts
        if _is_name(rt) and not _is_name(lt):
            lt, rt = rt, lt
        rhs = _expression(rt)
        try:
            lhs = _expression(lt)
        except _Unparsable:
            lhs = None
        assign = _is_name(lt) and not (lhs is not None and lhs.is_Symbol and lhs in rhs.free_symbols)
        if lhs is None and not assign:
            raise _Unparsable("equation")
        return ("eq", lhs, rhs, assign, _decinfo(rt))
    if "=" in ops:
        raise _Unparsable("chained equation")
    # Rule 9 policy: a one-variable inequality is the interval it describes (x \le 3 == (-\infty, 3]).
    up = all(o in ("<", "<=") for o in ops)
    if not (up or all(o in (">", ">=") for o in ops)):
        raise _Unparsable("mixed inequality")
    if not up:                                   # read "a > x >= b" as "b <= x < a"
        parts, ops = parts[::-1], [{">": "<", ">=": "<="}[o] for o in ops[::-1]]
    if len(parts) == 2 and _is_name(parts[0]) and not _is_name(parts[1]):
        lo, hi, lo_op, hi_op = -sp.oo, _expression(parts[1]), "<", ops[0]
    elif len(parts) == 2 and _is_name(parts[1]) and not _is_name(parts[0]):
        lo, hi, lo_op, hi_op = _expression(parts[0]), sp.oo, ops[0], "<"
    elif len(parts) == 3 and _is_name(parts[1]):
        lo, hi, lo_op, hi_op = _expression(parts[0]), _expression(parts[2]), ops[0], ops[1]
    else:
        raise _Unparsable("inequality")
    return ("seq", "[" if lo_op == "<=" else "(", "]" if hi_op == "<=" else ")",
            (("expr", lo, None), ("expr", hi, None)))


@functools.lru_cache(maxsize=8192)
def _analyse(raw: str):
    """raw answer -> (status, node, key, lower_key, is_text). Cached: golds repeat across a batch."""
    try:
        s = _clean(raw)
    except _Reject:
        return ("reject", None, None, None, False)
    except Exception:
        key = " ".join(raw.split())
        return ("ok", None, key, key.lower(), False)
    key = " ".join(s.split())
    lkey = key.lower().strip(" .")
    if _is_text(s):
        return ("ok", None, key, lkey, True)
    try:
        node = _parse_answer(s)
    except _Reject:
        return ("reject", None, None, None, False)
    except Exception:          # _Unparsable, RecursionError, anything sympy raises on odd input
        node = None
    return ("ok", node, key, lkey, False)


# ============================================================================================
# Math: comparison (rules 5, 6, 8, 9, 12, 14)
# ============================================================================================
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


def _rounds_to(d, ulp, x) -> bool:
    """Is the decimal d the exact value x rounded (|d - x| <= ulp/2) or truncated toward zero?"""
    diff = (x - d) if d >= 0 else (d - x)
    return abs(x - d) * 2 <= ulp or 0 <= diff < ulp


_LOCAL = threading.local()   # per-thread deadline of the current math_equal call


def _check_deadline():
    """Cooperative time budget: long comparisons (32-element lists of expressions) give up with False."""
    if time.monotonic() > getattr(_LOCAL, "deadline", float("inf")):
        raise _Reject("time budget exhausted")


def _expr_equal(a, b, da=None, db=None) -> bool:
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


def _unordered(xs, ys) -> bool:
    return (all(any(_equal(x, y) for y in ys) for x in xs)
            and all(any(_equal(x, y) for x in xs) for y in ys))


def _equal(g, p) -> bool:
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


_SIMPLE = re.compile(r"\s*(-?)\s*(?:(\d{1,400})|(\d*\.\d{1,400})|\\frac\{(\d{1,400})\}\{(\d{1,400})\}"
                     r"|(\d{1,400})/(\d{1,400}))\s*")


def _simple_number(s: str):
    """Fast path (no sympy) for the commonest golds: integers, decimals, plain fractions."""
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


def math_equal(gold: str, pred: str) -> bool:
    """Are two final answers (LaTeX, no \\boxed needed) equivalent? Never raises; unsure means False."""
    try:
        if not isinstance(gold, str) or not isinstance(pred, str):
            return False
        a, b = _simple_number(gold), _simple_number(pred)
        if a is not None and b is not None:
            if a[0] == b[0]:
                return True
            if (a[1] is None) == (b[1] is None):
                return False
            (value, (ulp, sig)), exact = (a, b[0]) if a[1] is not None else (b, a[0])
            return sig >= 6 and exact.denominator != 1 and _rounds_to(value, ulp, exact)
        _LOCAL.deadline = time.monotonic() + TIME_BUDGET
        G, P = _analyse(gold), _analyse(pred)
        if G[0] == "reject" or P[0] == "reject" or not G[2] or not P[2]:
            return False                         # pathological or empty: never an answer
        if G[2] == P[2] or ((G[4] or P[4]) and G[3] == P[3]):
            return True                          # same after normalisation (text: case-insensitive)
        if G[1] is None or P[1] is None or G[4] or P[4]:
            return False
        return _equal(G[1], P[1])
    except Exception:
        return False


def math_reward(response: str, gold: str, control_phrases=CONTROL_PHRASES) -> float:
    """r(y, a): 1.0 iff the last \\boxed{} after the last control phrase equals the gold, else 0.0.

    In-process and guarded, but without a hard time limit; use math_reward_batch for that.
    """
    if not isinstance(response, str):
        return 0.0
    answer = extract_boxed(_after_last_phrase(response, control_phrases))
    return 1.0 if answer is not None and math_equal(gold, answer) else 0.0


# ============================================================================================
# Batch grading: a bounded pool of worker *processes* with a hard per-item timeout.
# Why processes and not signal.alarm: alarms work only in the main thread and cannot interrupt
# big-integer C code (Math-Verify #63/#65). Why subprocess + JSON and not multiprocessing: spawn and
# forkserver re-import the caller's __main__ (a flat training script would run again in every worker),
# and fork is unsafe from a multi-threaded trainer. A stuck worker is killed and replaced.
# ============================================================================================
_POOL: list[dict] = []
_POOL_LOCK = threading.Lock()
_HERE = os.path.dirname(os.path.abspath(__file__))


def _serve() -> None:
    """Worker main loop: one JSON request per line on stdin -> one JSON reply per line."""
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)                                 # stray prints must not corrupt the protocol channel
    out.write(b'{"ready": true}\n')
    for line in sys.stdin.buffer:
        try:
            msg = json.loads(line)
            fn = getattr(importlib.import_module(msg["mod"]), msg["fn"])
            reply = {"ok": True, "result": fn(*msg["args"])}
        except Exception as e:                    # noqa: BLE001 — a failed item scores the default
            reply = {"ok": False, "error": repr(e)[:200]}
        out.write(json.dumps(reply).encode() + b"\n")


def _spawn_worker() -> dict:
    code = f"import sys; sys.path.insert(0, {_HERE!r}); import reward; reward._serve()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, close_fds=True)
    return {"proc": proc, "ready": False, "buf": b"", "born": time.monotonic()}


def _kill_worker(w: dict) -> None:
    try:
        w["proc"].kill()
        w["proc"].wait(timeout=5)
    except Exception:
        pass


@atexit.register
def _shutdown_pool() -> None:
    for w in _POOL:
        _kill_worker(w)
    _POOL.clear()


def _pool_map(mod: str, fn: str, arglist, workers: int = 2, timeout: float = 3.0, default=0.0,
              startup_timeout: float = 60.0) -> list:
    """[mod.fn(*args) for args in arglist] on worker processes; `default` for a timeout, crash or error."""
    results, todo, busy, failures = [default] * len(arglist), deque(range(len(arglist))), {}, 0
    with _POOL_LOCK:
        while len(_POOL) < workers:
            _POOL.append(_spawn_worker())

        def replace(k):
            _kill_worker(_POOL[k])
            _POOL[k] = _spawn_worker()

        while (todo or busy) and failures <= 3 * workers:    # workers that cannot start: give up, not spin
            pool = _POOL[:workers]
            for k, w in enumerate(pool):                       # busy: pool index -> (item, deadline)
                if w["ready"] and k not in busy and todo:
                    i = todo.popleft()
                    busy[k] = (i, time.monotonic() + timeout)
                    try:
                        w["proc"].stdin.write(json.dumps({"mod": mod, "fn": fn, "args": list(arglist[i])}).encode()
                                              + b"\n")
                        w["proc"].stdin.flush()
                    except OSError:
                        pass                                   # a dead worker shows up below as EOF
            waiting = {w["proc"].stdout.fileno(): k for k, w in enumerate(pool) if k in busy or not w["ready"]}
            deadlines = [d for _, d in busy.values()] + [w["born"] + startup_timeout for w in pool if not w["ready"]]
            ready, _, _ = select.select(list(waiting), [], [], max(0.0, min(deadlines) - time.monotonic()))
            for fd in ready:
                k = waiting[fd]
                w, chunk = pool[k], os.read(fd, 1 << 16)
                if not chunk:                                  # died: crash, os._exit, OOM kill
                    failures += k not in busy
                    busy.pop(k, None)
                    replace(k)
                    continue
                w["buf"] += chunk
                while b"\n" in w["buf"]:
                    line, w["buf"] = w["buf"].split(b"\n", 1)
                    reply = json.loads(line)
                    if not w["ready"]:
                        w["ready"] = True
                    elif k in busy:
                        i, _ = busy.pop(k)
                        if reply.get("ok"):
                            results[i] = reply["result"]
            now = time.monotonic()
            for k, w in enumerate(_POOL[:workers]):
                if k in busy and busy[k][1] <= now:            # timed out: the item keeps `default`
                    busy.pop(k)
                    replace(k)
                elif not w["ready"] and now > w["born"] + startup_timeout:
                    failures += 1
                    replace(k)
    return results


def math_reward_batch(responses, golds, workers: int = 2, timeout: float = 3.0,
                      control_phrases=CONTROL_PHRASES) -> list[float]:
    """math_reward over many pairs on `workers` processes; an item over `timeout` seconds scores 0.0.

    Safe to call from any thread (calls are serialised on one persistent pool). workers=0 grades in-process
    (no hard timeout; for debugging).
    """
    responses, golds = list(responses), list(golds)
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
    phrases = list(control_phrases or ())
    if workers <= 0:
        return [math_reward(r, g, phrases) for r, g in zip(responses, golds)]
    args = [(r if isinstance(r, str) else "", g if isinstance(g, str) else "", phrases)
            for r, g in zip(responses, golds)]
    return [float(x) if isinstance(x, (int, float)) else 0.0
            for x in _pool_map("reward", "math_reward", args, workers, timeout)]


# ============================================================================================
# Code: extraction and a contained subprocess runner (rewards.md §3.2, measured on this machine)
# ============================================================================================
_PY_LANGS = {"python", "py", "python3", "py3"}


def extract_code(text: str) -> str | None:
    """The last complete fenced block tagged python (else the last untagged one); None if neither.

    A ```text or ```cpp block after the python one is ignored (rewards.md C16); an unterminated final
    fence (truncated output) is ignored.
    """
    if not isinstance(text, str):
        return None
    blocks, lang, buf = [], None, []
    for line in text.split("\n"):
        st = line.strip()
        if lang is None:
            m = re.match(r"^```+\s*([A-Za-z0-9_+#.-]*)", st)
            if m:
                lang, buf = m.group(1).lower(), []
        elif st.startswith("```") and not st.strip("`"):
            blocks.append((lang, "\n".join(buf)))
            lang = None
        else:
            buf.append(line)
    for want in (lambda l_: l_ in _PY_LANGS, lambda l_: l_ == ""):
        found = [code for l_, code in blocks if want(l_)]
        if found:
            return found[-1]
    return None


# ---------------------------------------------------------------------------------------------
# Keeping programs off the disk. The program runs in its own mount namespace in which every mount is
# read-only, nodev and nosuid, except its own temp dir (read-write) and a private /dev/shm. Why each part:
#   * read-only on *every* mount, recursively: a read-only `/` with a writable /work or /home mounted
#     underneath would still let the program edit the test data, the verifier or a checkpoint;
#   * nodev: uid 0 owns /dev/sda & co. and needs no capability to open a block device for writing, and a
#     read-only mount does not stop writes to device nodes; so devices are refused everywhere and only the
#     harmless ones (/dev/null, zero, full, random, urandom, tty) are bound back;
#   * all capabilities dropped (bounding set too) and no_new_privs before the program starts: otherwise a
#     root program could simply remount rw. A nested user namespace does not help it either: the kernel
#     locks the read-only flags of every mount it copies into a less privileged namespace;
#   * a fresh, read-only /proc for the PID namespace: the program sees only its own processes, and the
#     read-only mount refuses writes to /proc/sys;
#   * changes stay inside the namespace: `unshare --propagation private`, and only per-mount flags are
#     changed (bind remounts, mount_setattr), never a file system's own flags, which the host shares.
# The setup needs mount(2) and mount_setattr(2), which Python's os module does not offer, hence ctypes in a
# small launcher that runs inside the namespace and then execs the program (no preexec_fn: the trainer that
# calls us is multi-threaded). The price is one extra interpreter start (with -S) plus loading ctypes, about
# 13 ms of CPU per run on the 2-core CI box (`python bench.py reward` measures it with and without). Any
# failed step exits with status 125 before the program starts: a run is never silently left uncontained.
_FS_LAUNCHER = r'''
import ctypes, os, resource, sys
work, method, limits, prog = sys.argv[1], sys.argv[2], sys.argv[3:8], sys.argv[8:]
libc = ctypes.CDLL(None, use_errno=True)
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND = 1, 2, 4, 8, 32, 4096
def prctl(*args):    # variadic in C: pass full-width arguments explicitly
    return libc.prctl(*(ctypes.c_ulong(a) for a in args))
def fail(what):
    os.write(2, ("sandbox setup failed: %s: %s\n" % (what, os.strerror(ctypes.get_errno()))).encode())
    os._exit(125)
def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    return libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0
def remount(path, add=0, drop=0):
    # A bind remount replaces all per-mount flags, and in a user namespace dropping an inherited (locked)
    # flag is refused, so start from the mount's current flags (statvfs's ST_RELATIME is MS_RELATIME).
    f = os.statvfs(path).f_flag
    f = (f & (RDONLY | NOSUID | NODEV | NOEXEC | 1024 | 2048)) | (1 << 21 if f & 4096 else 0)
    return mount(None, path, None, REMOUNT | BIND | ((f | add) & ~drop))
def setattr_all():   # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, {attr_set}): one call, every mount
    attr = (ctypes.c_uint64 * 4)(RDONLY | NOSUID | NODEV, 0, 0, 0)
    fn = getattr(libc, "mount_setattr", None)           # glibc >= 2.36; else the raw syscall
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t]
        return fn(-100, b"/", 0x8000, attr, 32) == 0
    if os.uname().machine in ("x86_64", "aarch64", "riscv64", "ppc64le", "s390x", "armv7l", "i686"):
        return libc.syscall(ctypes.c_long(442), ctypes.c_long(-100), b"/", ctypes.c_long(0x8000), attr,
                            ctypes.c_long(32)) == 0
    return False
def remount_each():  # kernels before 5.12: one bind remount per mount point, parents first
    for line in open("/proc/self/mountinfo"):
        mp = line.split()[4]
        for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
            mp = mp.replace(esc, ch)
        if not remount(mp, RDONLY | NOSUID | NODEV):
            try:     # a mount hidden under a later one cannot be reached by path, nor written through
                ok = os.statvfs(mp).f_flag & RDONLY
            except OSError:
                ok = False
            if not ok:
                fail("remount " + mp)
if method == "remount" or not setattr_all():
    remount_each()
# Fresh /proc of this PID namespace; where refused (some containers), the old one, read-only, stays.
mount("proc", "/proc", "proc", RDONLY | NOSUID | NODEV | NOEXEC)
if not (mount(work, work, None, BIND) and remount(work, drop=RDONLY)):
    fail("bind " + work)
for name in ("null", "zero", "full", "random", "urandom", "tty"):
    dev = "/dev/" + name
    if os.path.exists(dev) and not (mount(dev, dev, None, BIND) and remount(dev, drop=NODEV)):
        fail("bind " + dev)
if os.path.isdir("/dev/shm"):   # multiprocessing's locks live there; private, small, gone with the run
    mount("tmpfs", "/dev/shm", "tmpfs", NOSUID | NODEV, "size=64m,nr_inodes=4096,mode=1777")
os.chdir(work)                  # the old cwd is the read-only directory under the new bind mount
for name, v in zip(("AS", "CPU", "FSIZE", "NOFILE", "CORE"), limits):
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(v), int(v)))
if prctl(38, 1, 0, 0, 0) != 0:                             # PR_SET_NO_NEW_PRIVS
    fail("no_new_privs")
cap = 0
while prctl(23, cap, 0, 0, 0) >= 0:                        # PR_CAPBSET_READ: until past the last capability
    if prctl(24, cap, 0, 0, 0) != 0:                       # PR_CAPBSET_DROP
        fail("drop capability %d" % cap)
    cap += 1
prctl(47, 4, 0, 0, 0)                                      # PR_CAP_AMBIENT_CLEAR_ALL (absent before 4.3)
if libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()) != 0:
    fail("capset")
os.execv(prog[0], prog)
'''

# What the probe runs inside a candidate namespace: it must be refused a write outside its folder (EROFS),
# write and read back inside it, write to /dev/null, and hold no capabilities at all.
_FS_PROBE = r'''
import errno, os, sys
try:
    open(os.path.join(sys.argv[1], "escape"), "w").close()
    outside = "writable"
except OSError as e:
    outside = errno.errorcode.get(e.errno, str(e.errno))
with open("scratch", "w") as f:
    f.write("ok")
with open(os.devnull, "w") as f:
    f.write("x")
caps = {int(ln.split()[1], 16) for ln in open("/proc/self/status") if ln.startswith(("CapEff", "CapBnd"))}
print(outside, open("scratch").read(), sorted(caps))
'''
_FS_MOUNT = ["--mount", "--propagation", "private"]

# Private switch, for the benchmark and tests only (never turn containment off in training):
# "auto" = contain writes where possible; "remount" = force the per-mount fallback path (old kernels);
# "off" = the behaviour before write containment existed, so the benchmark can measure both side by side.
_FS_CONTAINMENT = "auto"

_SETUP: dict | None = None
_SETUP_LOCK = threading.Lock()


def _fs_command(prefix, work, mode, limits, prog):
    return [*prefix, sys.executable, "-I", "-S", "-B", "-c", _FS_LAUNCHER, work, mode, *map(str, limits), *prog]


def _probe_fs(ns_flags: list, unshare: str) -> tuple[list, str]:
    """(unshare prefix that contains file writes, how) or ([], why not). One probe run per candidate."""
    base = [f for f in ns_flags if f not in ("--user", "--map-root-user")]
    candidates = [] if "--user" in ns_flags else [("as root", base + _FS_MOUNT)]
    candidates.append(("inside a user namespace", ["--user", "--map-root-user", *base, *_FS_MOUNT]))
    failures = []
    for label, flags in candidates:
        outside, work = tempfile.mkdtemp(prefix="sdz_probe_"), tempfile.mkdtemp(prefix="sdz_run_")
        try:
            main = os.path.join(work, "main.py")
            with open(main, "w", encoding="utf-8") as f:
                f.write(_FS_PROBE)
            cmd = _fs_command([unshare, *flags], work, "auto", [1 << 30, 10, 1 << 20, 64, 0],
                              [sys.executable, "-I", "-B", main, outside])
            r = _spawn(cmd, work, "", 10.0, 1 << 16)
            if r["stdout"].split() == ["EROFS", "ok", "[0]"] and r["rc"] == 0 \
                    and not os.path.exists(os.path.join(outside, "escape")):
                return [unshare, *flags], "mount namespace " + label
            why = (r["stderr"].strip().splitlines() or [r["stdout"].strip() or f"exit status {r['rc']}"])[-1]
            failures.append(f"{label}: {why[:200]}")
        except (OSError, subprocess.SubprocessError) as e:
            failures.append(f"{label}: {e}")
        finally:
            shutil.rmtree(outside, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    return [], "no read-only mount namespace could be set up (" + "; ".join(failures) + ")"


def _probe_sandbox() -> dict:
    unshare, prlimit = shutil.which("unshare"), shutil.which("prlimit")
    true = shutil.which("true") or "/bin/true"
    ns_flags = []
    for flags in (["--net", "--pid", "--fork", "--kill-child"], ["--net", "--pid", "--fork"],   # root
                  ["--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"],   # user namespaces
                  ["--net"]):
        if not unshare:
            break
        try:
            if subprocess.run([unshare, *flags, true], capture_output=True, timeout=10).returncode == 0:
                ns_flags = flags
                break
        except (OSError, subprocess.SubprocessError):
            pass
    if not sys.platform.startswith("linux"):
        fs_prefix, fs_how = [], "mount namespaces exist only on Linux"
    elif not unshare:
        fs_prefix, fs_how = [], "the `unshare` tool (util-linux) is not installed"
    else:
        fs_prefix, fs_how = _probe_fs(ns_flags, unshare)
    return {"isolated_interpreter": True,           # python -I -B: no PYTHON* env, no user site, no .pyc
            "minimal_env": True, "fresh_temp_dir": True, "process_group_kill": True,
            "rlimits": ["AS", "CPU", "FSIZE", "NOFILE", "CORE"],
            "rlimits_via": "python-launcher" if fs_prefix or not prlimit else "prlimit",
            "network_namespace": "--net" in ns_flags, "pid_namespace": "--pid" in ns_flags,
            "user_namespace": "--user" in (fs_prefix or ns_flags),
            "running_as_root": hasattr(os, "getuid") and os.getuid() == 0,
            "read_only_filesystem": bool(fs_prefix), "read_only_filesystem_how": fs_how,
            "capabilities_dropped": bool(fs_prefix),
            "_unshare": [unshare, *ns_flags] if ns_flags else [], "_unshare_fs": fs_prefix, "_prlimit": prlimit}


def _sandbox_setup() -> dict:
    """Probe once per process (under a lock, so concurrent first calls probe and warn only once)."""
    global _SETUP
    with _SETUP_LOCK:
        if _SETUP is None:
            _SETUP = _probe_sandbox()
            if not _SETUP["read_only_filesystem"]:
                print("reward.py WARNING: programs under test can write and delete any file this process can "
                      f"(file writes are NOT contained: {_SETUP['read_only_filesystem_how']}). "
                      "See reward.sandbox_protections().", file=sys.stderr, flush=True)
        return _SETUP


def sandbox_protections() -> dict:
    """Which protections run_python applies on this machine (probed once, then cached)."""
    return {k: v for k, v in _sandbox_setup().items() if not k.startswith("_")}


# Sets rlimits then execs the program: used only where the prlimit tool is missing and file writes cannot
# be contained (the launcher above sets the rlimits itself). No preexec_fn anywhere, because preexec_fn can
# deadlock a multi-threaded parent (the trainer is one).
_LAUNCHER = ("import os, resource, sys\n"
             "for name, v in zip(('AS', 'CPU', 'FSIZE', 'NOFILE', 'CORE'), sys.argv[1:6]):\n"
             "    resource.setrlimit(getattr(resource, 'RLIMIT_' + name), (int(v), int(v)))\n"
             "os.execv(sys.argv[6], sys.argv[6:])\n")

_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _spawn(cmd: list, work: str, stdin: str, timeout: float, output_limit: int) -> dict:
    """Start cmd in `work` in its own session, stdio on unlinked temp files; kill the group when done."""
    t0 = time.monotonic()
    env = {**_ENV, "HOME": work, "TMPDIR": work}
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        fin.write(stdin.encode("utf-8", "replace"))
        fin.seek(0)
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=fin, stdout=fout, stderr=ferr,
                                start_new_session=True, close_fds=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        try:                                  # also reaps children left in the group after a normal exit
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rc = proc.wait()
        fout.seek(0)
        ferr.seek(0)
        out = fout.read(output_limit).decode("utf-8", "replace")
        err = ferr.read(64 << 10).decode("utf-8", "replace")
    return {"rc": rc, "timed_out": timed_out, "stdout": out, "stderr": err, "wall_s": time.monotonic() - t0}


def run_python(source: str, stdin: str = "", timeout: float = 2.0, files: dict | None = None, args=(),
               memory_mb: int = 1024, output_limit: int = 1 << 20) -> dict:
    """Run `source` as one program in a contained subprocess. Returns rc, timed_out, stdout, stderr, wall_s.

    Fresh temp dir as cwd and HOME, minimal env, `python -I -B`, own session (killpg on timeout), rlimits
    (AS, CPU, FSIZE, NOFILE, CORE), stdout/stderr to unlinked files capped by RLIMIT_FSIZE, network and
    PID namespaces when permitted, and, where a mount namespace is permitted, a read-only file system
    except the temp dir, with no capabilities. stdin is an unlinked file too, so the program cannot
    re-open it by name.
    """
    prot = _sandbox_setup()
    work = tempfile.mkdtemp(prefix="sdz_run_")
    try:
        main = os.path.join(work, "main.py")
        with open(main, "w", encoding="utf-8") as f:
            f.write(source)
        for name, text in (files or {}).items():
            with open(os.path.join(work, name), "w", encoding="utf-8") as f:
                f.write(text)
        limits = [memory_mb << 20, int(math.ceil(timeout)) + 1, output_limit, 64, 0]
        cmd = [sys.executable, "-I", "-B", main, *args]
        if prot.get("_unshare_fs") and _FS_CONTAINMENT != "off":
            cmd = _fs_command(prot["_unshare_fs"], work, _FS_CONTAINMENT, limits, cmd)
        else:
            if prot["_prlimit"]:
                cmd = [prot["_prlimit"], *(f"--{k}={v}" for k, v in
                                           zip(("as", "cpu", "fsize", "nofile", "core"), limits)), *cmd]
            else:
                cmd = [sys.executable, "-I", "-c", _LAUNCHER, *map(str, limits), *cmd]
            cmd = prot["_unshare"] + cmd
        return _spawn(cmd, work, stdin, timeout, output_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stdio_match(got: str, expected: str) -> bool:
    """LCB-like: trailing whitespace per line and trailing blank lines ignored; same line count and tokens."""
    def lines(s):
        ls = [ln.rstrip() for ln in s.replace("\r\n", "\n").split("\n")]
        while ls and not ls[-1]:
            ls.pop()
        return ls
    a, b = lines(got), lines(expected)
    return len(a) == len(b) and all(x.split() == y.split() for x, y in zip(a, b))


# The function-level harness. The nonce arrives on stdin and is printed only after check() returned, so
# sys.exit(0)/os._exit(0) before the asserts, or printing "PASSED", cannot fake success. Results must be
# plain built-in values, so an object whose __eq__ is always True fails. The test file is deleted before
# the solution runs, so the solution cannot read the expected answers from disk.
_HARNESS = r'''
import os, sys
def _main():
    nonce = sys.stdin.readline().strip()
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    sys.stdin.close()
    out = os.dup(1)
    with open("solution.py", encoding="utf-8") as f:
        src = f.read()
    with open("test_code.py", encoding="utf-8") as f:
        test = f.read()
    os.remove("test_code.py")
    def plain(x, depth=0):   # exact built-in types only: a subclass could override __eq__
        t = type(x)
        if t in (int, float, complex, str, bytes, bool, type(None)):
            return True
        if depth > 50 or t not in (list, tuple, set, frozenset, dict):
            return False
        return all(plain(v, depth + 1) for v in ([*x.keys(), *x.values()] if t is dict else x))
    g = {"__name__": "solution", "__builtins__": __builtins__}
    exec(compile(src, "solution.py", "exec"), g)
    fn = g.get(sys.argv[1])
    if not callable(fn):
        raise SystemExit("entry point not defined")
    def candidate(*args, **kwargs):
        result = fn(*args, **kwargs)
        if not plain(result):
            raise TypeError("result is not a plain built-in value")
        return result
    exec(compile(test, "test_code.py", "exec"), g)
    g["check"](candidate)
    for stream in (sys.stdout, sys.__stdout__):   # the solution's own prints go before the nonce
        try:
            stream.flush()
        except Exception:
            pass
    os.write(out, ("\n" + nonce + "\n").encode())
_main()
'''


def code_reward(response: str, tests: dict, timeout: float = 2.0, control_phrases=CONTROL_PHRASES) -> float:
    """1.0 iff the last python block passes every test (stdio cases, or HumanEval check(candidate))."""
    if not isinstance(response, str) or not isinstance(tests, dict):
        return 0.0
    code = extract_code(_after_last_phrase(response, control_phrases))
    if code is None or not code.strip():
        return 0.0
    if "stdio" in tests:
        cases = tests["stdio"]
        if not cases:
            return 0.0
        for case in cases:                        # stop at the first failure (SD-Zero's runner does too)
            r = run_python(code, stdin=str(case.get("input", "")), timeout=timeout)
            if r["timed_out"] or r["rc"] != 0 or not _stdio_match(r["stdout"], str(case.get("output", ""))):
                return 0.0
        return 1.0
    entry, test = tests.get("entry_point"), tests.get("test")
    if isinstance(entry, str) and entry.isidentifier() and isinstance(test, str):
        nonce = secrets.token_hex(16)
        r = run_python(_HARNESS, stdin=nonce + "\n", timeout=timeout, args=[entry],
                       files={"solution.py": code, "test_code.py": test})
        last = [ln.strip() for ln in r["stdout"].splitlines() if ln.strip()][-1:]
        return 1.0 if not r["timed_out"] and r["rc"] == 0 and last == [nonce] else 0.0
    return 0.0


def code_reward_batch(responses, tests_list, workers: int = 2, timeout: float = 2.0,
                      control_phrases=CONTROL_PHRASES) -> list[float]:
    """code_reward over many pairs; at most `workers` programs run at once (each is its own process)."""
    responses, tests_list = list(responses), list(tests_list)
    if len(responses) != len(tests_list):
        raise ValueError(f"{len(responses)} responses but {len(tests_list)} test sets")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(lambda rt: code_reward(rt[0], rt[1], timeout, control_phrases),
                           zip(responses, tests_list)))
