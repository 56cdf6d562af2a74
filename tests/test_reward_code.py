"""Code verifier tests: extraction, stdio comparison, the fixtures' pass/fail paths, the runner's limits
(environment, timeout, memory, grandchildren, network, output size, fork swarm), and the reward hacks the
nonce/plain-type harness must defeat."""
import ast
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import verifier.harness  # noqa: E402
import verifier.sandbox  # noqa: E402
from reward import CONTROL_PHRASES, code_reward, code_reward_batch, extract_code, run_python, sandbox_protections  # noqa: E402

FIXTURES = [json.loads(ln) for ln in
            (ROOT / "verifier" / "cases" / "code_fixtures.jsonl").read_text(encoding="utf-8").splitlines()]
PROT = sandbox_protections()


def py(code, intro="Solution:"):
    return f"{intro}\n```python\n{code}\n```\n"


FUNC_TEST = {"entry_point": "double",
             "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-3) == -6\n"}
STDIO_TEST = {"stdio": [{"input": "21\n", "output": "42\n"}, {"input": "5\n", "output": "10"}]}


# ---------------------------------------------------------------- extraction
@pytest.mark.parametrize("text,expected", [
    ("```python\na = 1\n```", "a = 1"),
    ("```python\na = 1\n```\ntext\n```py\nb = 2\n```", "b = 2"),
    ("```python\na = 1\n```\n```text\nsample output\n```", "a = 1"),             # sample output after
    ("```\nuntagged = 1\n```", "untagged = 1"),
    ("```cpp\nint main(){}\n```", None),
    ("```python\ndone = 1\n```\n```python\ntruncated = ", "done = 1"),           # unterminated last fence
    ("no code at all", None),
    ("```Python3\nx = 3\n```", "x = 3"),
])
def test_extract_code(text, expected):
    assert extract_code(text) == expected


def test_code_grades_only_after_last_phrase():
    good, bad = py("def double(x):\n    return 2 * x"), py("def double(x):\n    return x")
    assert code_reward(f"{good}\n\n{CONTROL_PHRASES[1]}\n\n{bad}", FUNC_TEST) == 0.0
    assert code_reward(f"{bad}\n\n{CONTROL_PHRASES[0]}\n\n{good}", FUNC_TEST) == 1.0
    assert code_reward(f"{good}\n\n{CONTROL_PHRASES[0]}\n\nno code", FUNC_TEST) == 0.0


# ---------------------------------------------------------------- stdio comparison
@pytest.mark.parametrize("got,expected,ok", [
    ("42\n", "42", True), ("42   \n\n\n", "42\n", True), ("1 2\n3\n", "1  2\n3", True),       # spacing
    ("1\n\n2\n", "1\n2\n", False),                                                           # inner blank
    ("0.33333333\n", "0.3333333\n", False),                                                  # exact text
    ("", "0", False), ("1 2", "1 2 3", False), ("a\r\nb\r\n", "a\nb", True), ("YES", "yes", False),
])
def test_stdio_match(got, expected, ok):
    assert verifier.harness._stdio_match(got, expected) is ok


# ---------------------------------------------------------------- fixtures: pass and fail paths
def test_code_fixture_schema():
    shapes = {"stdio": 0, "entry_point": 0}
    for r in FIXTURES:
        assert r["id"] and r["question"] and "```python" in r["solution"] and "```python" in r["wrong_solution"]
        shapes["stdio" if "stdio" in r["tests"] else "entry_point"] += 1
    assert shapes["stdio"] >= 10 and shapes["entry_point"] >= 10


def test_code_fixtures_batch():
    """Every reference solution passes and every known-wrong one fails (through the batch API)."""
    rewards = code_reward_batch([r["solution"] for r in FIXTURES] + [r["wrong_solution"] for r in FIXTURES],
                                [r["tests"] for r in FIXTURES] * 2, workers=2)
    n = len(FIXTURES)
    assert rewards[:n] == [1.0] * n, [r["id"] for r, x in zip(FIXTURES, rewards) if x != 1.0]
    assert rewards[n:] == [0.0] * n, [r["id"] for r, x in zip(FIXTURES, rewards[n:]) if x != 0.0]


# ---------------------------------------------------------------- the runner: limits and clean-up
def test_baseline_and_environment():
    r = run_python("print(int(input()) * 2)", stdin="21")
    assert r == {**r, "rc": 0, "timed_out": False, "stdout": "42\n"}
    code = ("import os, resource\n"
            "print(os.getcwd())\n"
            "print(sorted(os.environ))\n"
            "for n in ('AS', 'CPU', 'FSIZE', 'NOFILE', 'CORE'):\n"
            "    print(n, resource.getrlimit(getattr(resource, 'RLIMIT_' + n))[0])\n")
    r = run_python(code, timeout=2.0, memory_mb=1024)
    lines = r["stdout"].splitlines()
    assert "sdz_run_" in lines[0] and not os.path.exists(lines[0])          # fresh dir, removed after
    assert set(ast.literal_eval(lines[1])) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED", "LC_CTYPE",
                                               "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    limits = dict(ln.split() for ln in lines[2:])
    assert limits == {"AS": str(1024 << 20), "CPU": "3", "FSIZE": str(1 << 20), "NOFILE": "64", "CORE": "0"}


def test_infinite_loop_times_out():
    t0 = time.monotonic()
    r = run_python("while True:\n    pass", timeout=1.0)
    assert r["timed_out"] and time.monotonic() - t0 < 3.0


def test_memory_limit():
    r = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')")
    assert r["rc"] != 0 and "MemoryError" in r["stderr"] and "allocated" not in r["stdout"]


def _procs_with(marker):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd and "pytest" not in cmd:
                found.append((pid, cmd))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc scan")
def test_grandchildren_are_killed():
    marker = "37.%d" % os.getpid()
    code = ("import subprocess, time, os\n"
            f"subprocess.Popen(['sleep', '{marker}'])\n"
            f"subprocess.Popen(['setsid', 'sleep', '{marker}'])\n"     # even one that left the group
            "time.sleep(60)\n")
    r = run_python(code, timeout=1.0)
    assert r["timed_out"]
    time.sleep(0.3)
    left = _procs_with(marker)
    for pid, _ in left:                      # clean up before asserting
        os.kill(int(pid), 9)
    if PROT["pid_namespace"]:
        assert left == []
    else:                                    # without a PID namespace only the process group is killed
        assert len(left) <= 1


@pytest.mark.skipif(not PROT["network_namespace"], reason="no network namespace on this machine")
def test_no_network():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        r = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                       "print('connected')")
        assert r["rc"] != 0 and "connected" not in r["stdout"]
    finally:
        srv.close()


def test_output_is_capped():
    t0 = time.monotonic()
    r = run_python("while True:\n    print('x' * 1000)", timeout=5.0)
    assert len(r["stdout"]) <= 1 << 20 and r["rc"] != 0 and time.monotonic() - t0 < 4.0


def test_fork_swarm_is_contained():
    code = ("import os, time\nfor _ in range(30):\n    if os.fork() == 0:\n"
            "        time.sleep(60)\n        os._exit(0)\ntime.sleep(60)\n")
    t0 = time.monotonic()
    r = run_python(code, timeout=1.0)
    assert r["timed_out"] and time.monotonic() - t0 < 3.0


def test_stdio_cases_through_code_reward():
    t = STDIO_TEST
    assert code_reward(py("print(int(input()) * 2, end='   \\n\\n')"), t) == 1.0                   # trailing spaces
    assert code_reward(py("print(int(input()) * 2)\nprint()\nprint()"), t) == 1.0                # trailing blanks
    assert code_reward(py("import sys\nsys.exit(0)\nprint(int(input()) * 2)"), t) == 0.0        # exit(0) first
    assert code_reward(py("print(int(input()) * 2"), t) == 0.0                                  # syntax error
    assert code_reward(py("import sys\nsys.stderr.write('noise\\n')\nprint(int(input()) * 2)"), t) == 1.0   # stderr ok
    assert code_reward(py("print(int(input()) * 2)\nraise SystemExit(1)"), t) == 0.0             # rc must be 0
    assert code_reward(py("print(int(input()) * 2)"), {"stdio": []}) == 0.0                     # no tests, no reward
    assert code_reward(py("x = 1"), {"something": "else"}) == 0.0


# ---------------------------------------------------------------- reward hacks on the function harness
GOOD = "def double(x):\n    return 2 * x"


@pytest.mark.parametrize("name,code", [
    ("os._exit(0) at import", "import os\nos._exit(0)\n" + GOOD),
    ("sys.exit(0) at import", "import sys\nsys.exit(0)\n" + GOOD),
    ("exit inside the call", "import os\ndef double(x):\n    os._exit(0)"),
    ("print PASSED then fail", "print('PASSED')\nprint('All tests passed')\ndef double(x):\n    return x"),
    ("fake nonce-looking line", "print('0123456789abcdef0123456789abcdef')\ndef double(x):\n    return x"),
    ("__eq__ always true", "class A:\n    def __eq__(self, o):\n        return True\ndef double(x):\n    return A()"),
    ("int subclass with __eq__", "class I(int):\n    def __eq__(self, o):\n        return True\n"
                                 "    __hash__ = int.__hash__\n"
                                 "def double(x):\n    return I(0)"),
    ("list holding a liar", "class A:\n    def __eq__(self, o):\n        return True\n"
                            "def double(x):\n    return [A()]"),
    ("timeout", "def double(x):\n    while True:\n        pass"),
    ("missing entry point", "def triple(x):\n    return 3 * x"),
    ("raises", "def double(x):\n    raise ValueError"),
])
def test_function_harness_rejects_hacks(name, code):
    assert code_reward(py(code), FUNC_TEST, timeout=1.0) == 0.0, name


def test_function_harness_accepts_honest_code_with_prints_and_main_guard():
    code = GOOD + "\nprint('debug output')\nif __name__ == '__main__':\n    print(double(int(input())))"
    assert code_reward(py(code), FUNC_TEST) == 1.0


def test_solution_cannot_read_tests_or_nonce():
    code = ("import os, sys\n"
            "SEEN = (os.path.exists('test_code.py'), os.read(0, 100))\n"
            "def probe():\n    return SEEN\n")
    tests = {"entry_point": "probe", "test": "def check(candidate):\n    assert candidate() == (False, b'')\n"}
    assert code_reward(py(code), tests) == 1.0           # the test file is gone and stdin is empty


def test_sandbox_protections_report():
    p = sandbox_protections()
    for k in ("isolated_interpreter", "minimal_env", "fresh_temp_dir", "process_group_kill", "rlimits",
              "network_namespace", "pid_namespace", "running_as_root", "read_only_filesystem",
              "read_only_filesystem_how", "capabilities_dropped"):
        assert k in p
    assert set(p["rlimits"]) == {"AS", "CPU", "FSIZE", "NOFILE", "CORE"}
    assert not any(k.startswith("_") for k in p)


def test_batch_length_mismatch():
    with pytest.raises(ValueError):
        code_reward_batch(["a"], [])


def test_fallback_without_prlimit_or_namespaces(monkeypatch):
    """Machines without util-linux tools (macOS, minimal containers): rlimits via the Python launcher."""
    bare = {**verifier.sandbox._sandbox_setup(), "_prlimit": None, "_unshare": [], "network_namespace": False,
            "pid_namespace": False, "rlimits_via": "python-launcher", "_unshare_fs": [],
            "read_only_filesystem": False, "capabilities_dropped": False}
    monkeypatch.setattr(verifier.sandbox, "_sandbox_setup", lambda: bare)
    r = run_python("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0], input())", stdin="ok")
    assert r["rc"] == 0 and r["stdout"].split() == [str(1024 << 20), "ok"]
    assert run_python("while True:\n    pass", timeout=1.0)["timed_out"]
    assert code_reward(py("def double(x):\n    return 2 * x"), FUNC_TEST) == 1.0
