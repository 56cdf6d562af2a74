"""The shape of an answer (rules 8, 9, 12, 13), and _analyse: raw answer -> what the comparison needs.

A parsed answer is a tuple node:
  ("expr", e, dec)                              one value; dec is _decinfo (rule 6) or None
  ("eq", lhs, rhs, is_assignment, rhs_dec)      an equation; "x = 3" is an assignment of 3 to a name
  ("seq", open, close, items)                   tuple or interval; the brackets are kept (rule 9)
  ("set", items)  ("list", items)  ("union", items)  ("matrix", rows)
"""
from __future__ import annotations

import functools
import re

import sympy as sp

from .cleanup import _clean, _is_text
from .latex import _CLOSE, _GREEK, _OPEN, _RELS, _decinfo, _expression, _tokenize
from .limits import MAX_ITEMS, _Reject, _Unparsable

_MATRIX = re.compile(r"^\(?\s*\\begin\{(p|b|B|small|)matrix\}(.*)\\end\{\1matrix\}\s*\)?$|"
                     r"^\(?\s*\\begin\{array\}\s*\{[lcr|\s]*\}(.*)\\end\{array\}\s*\)?$", re.S)


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
    """A value, an equation (rule 8), or a one-variable inequality read as its interval (rule 9)."""
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
