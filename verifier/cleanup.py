"""Rule 2: the string clean-up of a final answer, before any parsing.

Symmetric: gold and prediction go through exactly the same steps, so a clean-up step can make two spellings
of one answer meet but can never make a wrong answer right on its own. Also here: the size checks that run
before anything else (rule 7), and the test for answers that are words (rule 11).
"""
from __future__ import annotations

import re

from .limits import MAX_ANSWER_CHARS, MAX_DEPTH, _Reject, _Unparsable


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
    """The clean-up, in order: size checks, LaTeX spellings, unit text, plain-text spellings."""
    s = raw.strip()
    _check_size(s)
    s = _normalise_commands(s)
    s = _drop_unit_text(s)
    s = _unwrap(s, _TEXT_CMDS)
    s = re.sub(r"(?<=\d)\{,\}(?=\d{3}(?!\d))", "", s).replace("{,}", ",")   # 10{,}000 is one number
    for _ in range(2):
        m = _TRAILING_UNIT.search(s)
        if m and s[:m.start()].strip():
            s = s[:m.start()]
    return _normalise_plain(s)


def _check_size(s: str) -> None:
    """Rule 7: too long, too deeply nested, or unbalanced is not an answer, not even equal to itself."""
    if len(s) > MAX_ANSWER_CHARS:
        raise _Reject("too long")
    depth = best = 0
    for c in s:                       # deep nesting only ever exhausts the recursion limit
        depth += (c in "([{") - (c in ")]}")
        best = max(best, depth)
    if best > MAX_DEPTH:
        raise _Reject("too deep")
    if depth != 0 or _match_brace("{" + s + "}", 0) != len(s) + 1:
        raise _Reject("unbalanced brackets")   # broken LaTeX: not an answer, not even equal to itself


def _normalise_commands(s: str) -> str:
    """One spelling per LaTeX construct: delimiters, sizing and spacing commands, \\dfrac, degrees, %."""
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
    return re.sub(r"\\?%", " ", s)                                    # rule 10: 50% == 50, never 0.5


def _drop_unit_text(s: str) -> str:
    """Rule 11: a trailing \\text{unit words} after the value is dropped ("5\\text{ cm}" == "5"), but an
    answer that *is* text ("\\text{(C)}", "\\text{no}") is kept."""
    for _ in range(3):
        m = _TRAILING_TEXT.search(s)
        words = m.group(1).lower().replace(".", " ").split() if m else []
        if not (words and s[:m.start()].strip() and all(w.isalpha() and w.isascii() for w in words)
                and not set(words) & _NOT_UNITS and (len(words[0]) > 1 or words[0] in "mgshlknjwv")):
            break                                 # (single letters: "5\text{ m}" yes, "2\mathrm{i}" no)
        s = s[:m.start()]
    return s


def _normalise_plain(s: str) -> str:
    """Plain-text spellings: "or"/"and" lists, "x \\in", sqrt/pi words, 6e3, "1 000", "1,000"."""
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
