"""Math verifier tests: the numbered rules of reward.py's docstring (cases in verifier/cases/math_checker_cases.jsonl),
reflexivity over every shipped gold, extraction, control phrases, injection and pathological inputs."""
import ast
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import reward  # noqa: E402
import verifier.answer  # noqa: E402
from reward import CONTROL_PHRASES, VERIFIER_VERSION, extract_boxed, math_equal, math_reward  # noqa: E402


def _jsonl(name):
    return [json.loads(line) for line in (ROOT / "verifier" / "cases" / name).read_text(encoding="utf-8").splitlines()]


CASES, FIXTURES = _jsonl("math_checker_cases.jsonl"), _jsonl("math_fixtures.jsonl")


# ---------------------------------------------------------------- the rule battery (both orders)
@pytest.mark.parametrize("case", CASES, ids=[f"{c['id']}-{c['rule'].split()[0]}" for c in CASES])
def test_checker_case(case):
    t0 = time.monotonic()
    if "response" in case:
        assert (math_reward(case["response"], case["gold"]) == 1.0) is case["expected"], case
    else:
        assert math_equal(case["gold"], case["pred"]) is case["expected"], case
        assert math_equal(case["pred"], case["gold"]) is case["expected"], ("symmetry", case)
    assert time.monotonic() - t0 < 2.0


def test_every_rule_has_cases():
    rules = {c["rule"].split()[0] for c in CASES}
    assert {f"R{k}" for k in (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)} <= rules


# ---------------------------------------------------------------- reflexivity (rule 16)
GOLDS = sorted({r["answer"] for r in FIXTURES} | {c["gold"] for c in CASES})


@pytest.mark.parametrize("gold", GOLDS)
def test_every_gold_equals_itself(gold):
    assert math_equal(gold, gold)
    assert math_reward(f"Therefore the answer is $\\boxed{{{gold}}}$.", gold) == 1.0


def test_fixture_schema():
    assert 40 <= len(FIXTURES) <= 60
    for r in FIXTURES:
        assert isinstance(r["id"], str) and r["question"].strip() and isinstance(r["answer"], str)
        assert "\\boxed" not in r["answer"]
    assert len({r["id"] for r in FIXTURES}) == len(FIXTURES)


# ---------------------------------------------------------------- extraction and control phrases
@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{5}.", "5"),
    ("\\boxed{1} then \\boxed{\\frac{2}{3}}", "\\frac{2}{3}"),
    ("$\\boxed 7$", "7"),
    ("\\fbox{x+1}", "x+1"),
    ("\\boxed {4}", "4"),
    ("\\boxed{\\boxed{2}}", "\\boxed{2}"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed{3} and later \\boxed{5", None),       # truncated last box: no answer
    ("no box here", None),
    ("", None),
    (None, None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_control_phrases_constant():
    assert CONTROL_PHRASES == ("Let me rephrase the above solution.",
                               "Wait, this response is not correct, let me start over.",
                               "Wait, this response is wrong. Let me correct it.")
    assert isinstance(VERIFIER_VERSION, str) and VERIFIER_VERSION


def test_grades_only_after_last_phrase():
    for phrase in CONTROL_PHRASES:
        t = f"First try \\boxed{{4}}\n\n{phrase}\n\nSecond try \\boxed{{6}}"
        assert math_reward(t, "6") == 1.0 and math_reward(t, "4") == 0.0
    two = f"\\boxed{{1}}\n\n{CONTROL_PHRASES[1]}\n\n\\boxed{{2}}\n\n{CONTROL_PHRASES[0]}\n\n\\boxed{{3}}"
    assert math_reward(two, "3") == 1.0 and math_reward(two, "2") == 0.0


def test_custom_control_phrases():
    t = "\\boxed{1} Wrong. I need to redo all. \\boxed{2}"
    assert math_reward(t, "2") == 1.0                       # last box anyway
    assert math_reward(t, "1", control_phrases=()) == 0.0
    t = "\\boxed{1} Wrong. I need to redo all. The end."
    assert math_reward(t, "1") == 1.0
    assert math_reward(t, "1", control_phrases=("Wrong. I need to redo all.",)) == 0.0


def test_never_raises_on_odd_types():
    for g, p in [(None, "1"), ("1", None), (1, 1), ("1", ["1"]), ("", ""), ("  ", "  ")]:
        assert math_equal(g, p) is False
    assert math_reward(None, "1") == 0.0


# ---------------------------------------------------------------- injection: nothing is evaluated
def test_injection_payloads_do_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"__import__('pathlib').Path('{marker}').touch()",
        f"(lambda: open('{marker}', 'w'))()",
        f"().__class__.__bases__[0].__subclasses__() or open('{marker}','w')",
        f"x.__class__.__init__.__globals__['os'].system('touch {marker}')",
        f"eval(\"open('{marker}','w')\")",
        f"exec(\"open('{marker}','w')\")",
        f"\\text{{{{}}}}.__class__; open('{marker}','w')",
        f"1; import os; os.system('touch {marker}')",
    ]
    for p in payloads:
        for gold in ("2", "x+1", "(1, 2)", "\\text{yes}"):
            assert math_equal(gold, p) is False
            assert math_equal(p, gold) is False
            assert math_reward(f"\\boxed{{{p}}}", gold) == 0.0
        assert math_reward_batch_safe(p)
    assert not marker.exists()


def math_reward_batch_safe(p):
    return reward.math_reward_batch([f"\\boxed{{{p}}}"], ["2"], workers=0) == [0.0]


def test_no_eval_of_untrusted_text_in_source():
    """Static proof: reward.py and verifier/ never call eval/exec/sympify/parse_expr/parse_latex/compile
    themselves (the code harness's exec lives inside a string that runs in the sandboxed child process)."""
    sources = [ROOT / "reward.py", *sorted((ROOT / "verifier").glob("*.py"))]
    tree = ast.Module(body=[n for p in sources for n in ast.parse(p.read_text(encoding="utf-8")).body],
                      type_ignores=[])
    banned = {"eval", "exec", "sympify", "parse_expr", "parse_latex", "S", "__import__"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                assert f.id not in banned | {"compile"}, f"line {node.lineno}: {f.id}()"
            elif isinstance(f, ast.Attribute):              # re.compile is fine, sp.sympify is not
                assert f.attr not in banned, f"line {node.lineno}: .{f.attr}()"


# ---------------------------------------------------------------- pathological inputs: False within 2 s
PATHOLOGICAL = [
    "9^{9^{9^9}}", "10^{10^{10}}", "2^{2^{2^{2^{2^{2}}}}}", "e^{e^{e^{e^{e}}}}", "\\exp(\\exp(\\exp(10)))",
    "10^{10^{10}}!", "99999999!", "\\sqrt{2^{50000}+1}", "\\binom{10^{9}}{3}", "\\sin(10^{10^{5}})",
    "x" * 100_000, "1+" * 50_000 + "1", "(" * 5000 + "1" + ")" * 5000, "\\sqrt{" * 400 + "2" + "}" * 400,
    "\\frac{1}{2", "{" * 50 + "1", "(1,2", "\\left(" * 200, "-" * 900 + "1", "e^{e^{e^{x}}}",
    ", ".join(f"\\sqrt{{x+{k}}}" for k in range(40)), "\\begin{pmatrix}" + "1&" * 300 + "1\\end{pmatrix}",
]


@pytest.mark.parametrize("p", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_false_fast(p):
    for call in (lambda: math_equal("1", p), lambda: math_equal(p, "1"), lambda: math_equal("x+1", p),
                 lambda: math_reward("Answer: \\boxed{" + p + "}", "1") == 1.0):
        verifier.answer._analyse.cache_clear()              # time the cold path, not the cache
        t0 = time.monotonic()
        assert call() is False
        assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("p", ["10^{10^{10}}", "9^{9^{9^9}}", "\\frac{1}{2", "x" * 100_000, "(" * 5000 + ")" * 5000])
def test_pathological_never_equal_to_itself(p):
    verifier.answer._analyse.cache_clear()
    t0 = time.monotonic()
    assert math_equal(p, p) is False
    assert time.monotonic() - t0 < 2.0


def test_huge_response_is_fast():
    text = ("Let me think. " * 8000) + "\\boxed{42}" + (" tail" * 2000)   # ~120 KB
    t0 = time.monotonic()
    assert math_reward(text, "42") == 1.0
    assert math_reward("\\boxed{" * 20_000, "42") == 0.0
    assert time.monotonic() - t0 < 2.0


def test_large_values_are_resolved_not_rounded():
    assert not math_equal("e^{10000}", "e^{10000}+1")            # fixed 50 digits could not tell
    assert not math_equal("(x+1)^{1000}", "(x+1)^{1000}+1")
    assert math_equal("e^{100}\\cdot e^{100}", "e^{200}")
    assert not math_equal("\\frac{1}{e^{100}}", "\\frac{1}{e^{101}}")       # tiny values never collapse


def test_vectors_with_i_and_j_are_not_complex():
    assert not math_equal("3i+4j", "7i")
    assert math_equal("3i+4j", "4j+3i")
    assert math_equal("2i", "2j")
