"""C++ in the code reward (the paper's codeforces-cots data is half C++): which block is the program, and a C++
program is graded like a Python one. It compiles with g++ inside the sandbox, then its binary runs with the same
limits and the same stdio comparison; hostile programs (fork bomb, endless loop, flood of output, writes outside
their folder, looking for the expected output, network) and hostile source (a compiler bomb) are contained. The
Python equivalents are in test_reward_code.py and test_sandbox_fs.py. Without g++ every test that compiles skips,
and the test of the no-compiler path still runs."""
import errno
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from test_sandbox_fs import make_victim, snapshot  # the victim tree and its fingerprint

import reward
import verifier.cpp
import verifier.sandbox
from reward import code_reward, code_verdict, compile_cpp, run_binary

ROOT = Path(__file__).resolve().parents[1]     # on sys.path already: conftest.py puts it there
PROT = reward.sandbox_protections()
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None,
                               reason="g++ is not installed (apt install g++): C++ programs cannot be compiled here")
needs_containment = pytest.mark.skipif(
    not PROT["read_only_filesystem"],
    reason="file writes are not contained on this machine: " + PROT["read_only_filesystem_how"])
STDIO = {"stdio": [{"input": "21\n", "output": "42\n"}, {"input": "5\n", "output": "10"}]}
REFUSALS = {"EROFS", "EPERM", "EACCES"}


def cpp(code, intro="Solution:"):
    return f"{intro}\n```cpp\n{code}\n```\n"


def doubler(main_tail="", before=""):
    """A C++ program that prints twice its input (then runs main_tail); `before` goes ahead of main()."""
    return ("#include <cstdio>\n#include <cstdlib>\n" + before +
            "int main() {\n    long long n = 0;\n    if (scanf(\"%lld\", &n) != 1) return 3;\n"
            "    printf(\"%lld\\n\", 2 * n);\n    fflush(stdout);\n" + main_tail + "    return 0;\n}\n")


def build(source):
    b = compile_cpp(source)
    assert b["binary"], b["stderr"]
    return b["binary"]


# ---------------------------------------------------------------- which block is the program
@pytest.mark.parametrize("text,expected", [
    ("```cpp\nint main(){}\n```", ("cpp", "int main(){}")),
    ("```c++\na\n```", ("cpp", "a")), ("```cc\na\n```", ("cpp", "a")), ("```cxx\na\n```", ("cpp", "a")),
    ("```C++17\na\n```", ("cpp", "a")), ("```cpp20\na\n```", ("cpp", "a")),
    ("```cpp\na\n```\n```cpp\nb\n```", ("cpp", "b")),                            # the last C++ block
    ("```cpp\na\n```\nSample output:\n```\n42\n```", ("cpp", "a")),               # untagged after C++: output
    ("```python\np = 1\n```\n```cpp\nc\n```", ("python", "p = 1")),               # Python first, as before
    ("```\nuntagged = 1\n```", ("python", "untagged = 1")),
    ("```cpp\ndone\n```\n```cpp\ntruncated", ("cpp", "done")),                   # unterminated last fence
    ("```c\nint main(){}\n```", None), ("```java\nclass A {}\n```", None), ("no code", None),
])
def test_extract_program(text, expected):
    assert reward.extract_program(text) == expected


def test_extract_code_is_unchanged_for_cpp():
    """extract_code stays the Python extractor: it never returns a C++ block, and an untagged block after a C++
    one is still what it returns."""
    assert reward.extract_code("```cpp\nint main(){}\n```") is None
    assert reward.extract_code("```cpp\na\n```\n```\nb\n```") == "b"


# ---------------------------------------------------------------- pass and fail paths
@needs_gxx
def test_codeforces_style_solution_passes():
    """<bits/stdc++.h>, fast io, and the #ifndef ONLINE_JUDGE freopen that contest code carries (g++ gets
    -DONLINE_JUDGE, as on Codeforces, so it reads stdin)."""
    code = ("#include <bits/stdc++.h>\nusing namespace std;\nint main() {\n"
            "#ifndef ONLINE_JUDGE\n    freopen(\"input.txt\", \"r\", stdin);\n#endif\n"
            "    ios::sync_with_stdio(false);\n    cin.tie(nullptr);\n"
            "    long long n;\n    cin >> n;\n    cout << 2 * n << '\\n';\n}\n")
    assert code_verdict(cpp(code), STDIO) == (1.0, "")


@needs_gxx
def test_wrong_answer_and_compile_error_fail_with_reasons():
    assert code_verdict(cpp(doubler().replace("2 * n", "3 * n")), STDIO) == (0.0, "test 1: wrong output")
    assert code_verdict(cpp(doubler().replace("2 * n", "n == 21 ? 42 : 0")), STDIO) == (0.0, "test 2: wrong output")
    score, why = code_verdict(cpp(doubler().replace("return 0;", "return 0")), STDIO)
    assert score == 0.0 and why.startswith("did not compile: ") and "error" in why, why


@needs_gxx
def test_stdio_semantics_are_those_of_python():
    """The same cases as test_reward_code.py's test_stdio_cases_through_code_reward, written in C++."""
    t = STDIO
    assert code_reward(cpp(doubler().replace('\\n", 2 * n', '   \\n\\n", 2 * n')), t) == 1.0   # trailing spaces
    assert code_reward(cpp(doubler('    puts("");\n    puts("");\n')), t) == 1.0           # trailing blanks
    assert code_reward(cpp(doubler('    puts("x");\n')), t) == 0.0                         # an extra line
    assert code_reward(cpp(doubler(before="struct E { E() { exit(0); } } e;\n")), t) == 0.0  # exit(0) first
    assert code_reward(cpp(doubler('    fputs("noise\\n", stderr);\n')), t) == 1.0         # stderr ok
    assert code_verdict(cpp(doubler("    return 1;\n")), t) == (0.0, "test 1: exit status 1")   # rc must be 0
    assert code_verdict(cpp(doubler("    abort();\n")), t) == (0.0, f"test 1: exit status {128 + signal.SIGABRT}")
    assert code_reward(cpp(doubler()), {"stdio": []}) == 0.0                                 # no tests, no reward


@needs_gxx
def test_only_the_program_after_the_last_phrase_counts():
    good, bad = cpp(doubler()), cpp(doubler().replace("2 * n", "n"))
    assert code_reward(f"{good}\n\n{reward.CONTROL_PHRASES[1]}\n\n{bad}", STDIO) == 0.0
    assert code_reward(f"{bad}\n\n{reward.CONTROL_PHRASES[0]}\n\n{good}", STDIO) == 1.0


def test_function_tests_are_python_only():
    tests = {"entry_point": "double", "test": "def check(candidate):\n    assert candidate(2) == 4\n"}
    score, why = code_verdict(cpp("int double_(int x) { return 2 * x; }"), tests)
    assert score == 0.0 and "Python" in why and "C++" in why


@needs_gxx
def test_batch_mixes_python_and_cpp():
    py = "```python\nprint(int(input()) * 2)\n```"
    responses = [cpp(doubler()), py, cpp(doubler().replace("2 * n", "n")), cpp("int main( {")]
    assert reward.code_reward_batch(responses, [STDIO] * 4, workers=2) == [1.0, 1.0, 0.0, 0.0]


# ---------------------------------------------------------------- the binary runs under the same limits
@needs_gxx
def test_same_limits_folder_and_environment_as_python():
    code = ("#include <cstdio>\n#include <sys/resource.h>\n#include <unistd.h>\nextern char **environ;\n"
            "int main() {\n    char cwd[4096];\n    printf(\"%s\\n\", getcwd(cwd, sizeof cwd));\n"
            "    for (char **e = environ; *e; e++) printf(\"env %s\\n\", *e);\n"
            "    int r[] = {RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE};\n"
            "    const char *n[] = {\"AS\", \"CPU\", \"FSIZE\", \"NOFILE\", \"CORE\"};\n"
            "    for (int i = 0; i < 5; i++) { rlimit l; getrlimit(r[i], &l); printf(\"%s %llu\\n\", n[i],"
            " (unsigned long long)l.rlim_cur); }\n}\n")
    r = run_binary(build(code), timeout=2.0, memory_mb=1024)
    lines = r["stdout"].splitlines()
    assert "sdz_run_" in lines[0] and not os.path.exists(lines[0])          # fresh folder, removed after
    env = {ln.split()[1].split("=")[0] for ln in lines if ln.startswith("env ")}
    assert env <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS", "PWD"}                                # PWD: set by the shell that waits for it
    limits = dict(ln.split() for ln in lines if not ln.startswith(("env ", "/")))
    assert limits == {"AS": str(1024 << 20), "CPU": "3", "FSIZE": str(1 << 20), "NOFILE": "64", "CORE": "0"}


@needs_gxx
def test_infinite_loop_times_out():
    binary = build("int main() { volatile unsigned long i = 0; for (;;) i++; }")
    t0 = time.monotonic()
    assert run_binary(binary, timeout=1.0)["timed_out"] and time.monotonic() - t0 < 3.0
    assert code_verdict(cpp("int main() { volatile unsigned long i = 0; for (;;) i++; }"), STDIO,
                        timeout=1.0) == (0.0, "test 1: timed out")


@needs_gxx
def test_memory_limit():
    code = ("#include <cstdio>\n#include <cstdlib>\n#include <cstring>\nint main() {\n"
            "    char *p = (char *)malloc(2UL << 30);\n    if (!p) { puts(\"refused\"); return 1; }\n"
            "    memset(p, 1, 2UL << 30);\n    puts(\"allocated\");\n}\n")
    r = run_binary(build(code))
    assert r["rc"] != 0 and "allocated" not in r["stdout"], r


def _procs_with(marker):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(marker):
                found.append(pid)
    return found


@needs_gxx
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc scan")
def test_fork_bomb_is_contained():
    """2^7 = 128 processes that sleep, each renamed to a marker: the run ends at its timeout and none is left.
    (Bounded, so that a broken sandbox fails this test instead of the machine.)"""
    marker = f"sdzbomb{os.getpid()}"
    code = ("#include <cstring>\n#include <unistd.h>\nint main(int argc, char **argv) {\n"
            "    for (int i = 0; i < 7; i++) fork();\n"
            f"    if (strlen(argv[0]) >= {len(marker)}) strcpy(argv[0], \"{marker}\");\n"
            "    sleep(60);\n}\n")
    binary = build(code)
    t0 = time.monotonic()
    r = run_binary(binary, timeout=1.0)
    assert r["timed_out"] and time.monotonic() - t0 < 3.0
    time.sleep(0.3)
    left = _procs_with(marker)
    for pid in left:                          # clean up before asserting
        os.kill(int(pid), 9)
    assert left == [] if PROT["pid_namespace"] else len(left) <= 1


@needs_gxx
def test_output_is_capped():
    binary = build("#include <cstdio>\nint main() { for (;;) puts(\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"); }")
    t0 = time.monotonic()
    r = run_binary(binary, timeout=5.0)
    assert len(r["stdout"]) <= 1 << 20 and r["rc"] == 128 + signal.SIGXFSZ and time.monotonic() - t0 < 4.0, r["rc"]


@needs_gxx
@pytest.mark.skipif(not PROT["network_namespace"], reason="no network namespace on this machine")
def test_no_network():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    code = ("#include <arpa/inet.h>\n#include <cstdio>\n#include <sys/socket.h>\nint main() {\n"
            "    int s = socket(AF_INET, SOCK_STREAM, 0);\n    sockaddr_in a{};\n    a.sin_family = AF_INET;\n"
            f"    a.sin_port = htons({port});\n    a.sin_addr.s_addr = htonl(0x7f000001);\n"
            "    if (connect(s, (sockaddr *)&a, sizeof a) == 0) puts(\"connected\");\n    else return 1;\n}\n")
    try:
        r = run_binary(build(code))
        assert r["rc"] != 0 and "connected" not in r["stdout"]
    finally:
        srv.close()


# ---------------------------------------------------------------- the disk and the tests are out of reach
@needs_gxx
@needs_containment
def test_writes_outside_its_folder_are_refused(tmp_path):
    """One program tries every kind of write (as test_sandbox_fs.py's attacks do in Python), reports each errno
    on stderr and still prints the right answer: the verdict follows the output and the disk is unchanged."""
    victim = make_victim(tmp_path)
    nonce = secrets.token_hex(6)
    escapes = [str(ROOT / f"sdz_escape_{nonce}"), f"/tmp/sdz_escape_{nonce}", str(victim / "new.txt")]
    attacks = [f'fopen("{p}", "w") ? 0 : errno' for p in escapes] + [
        f'remove("{victim}/data.txt") ? errno : 0', f'rename("{victim}/data.txt", "{victim}/moved.txt") ? errno : 0',
        f'chmod("{victim}/data.txt", 0777) ? errno : 0', f'mkdir("{victim}/newdir", 0755) ? errno : 0',
        f'truncate("{victim}/sub/ckpt.bin", 0) ? errno : 0']
    body = "".join(f"    fprintf(stderr, \"%d\\n\", {a});\n" for a in attacks)
    code = doubler(before="#include <cerrno>\n#include <sys/stat.h>\n#include <unistd.h>\n").replace(
        "    printf(", body + "    printf(")
    before = snapshot(victim)
    r = run_binary(build(code), stdin="21\n")
    leaked = [p for p in escapes[:2] if os.path.lexists(p)]
    for p in leaked:
        os.remove(p)
    assert not leaked and r["rc"] == 0 and r["stdout"] == "42\n", (leaked, r)
    refusals = [errno.errorcode.get(int(x), x) for x in r["stderr"].split()]     # 0 would mean it got through
    assert len(refusals) == len(attacks) and set(refusals) <= REFUSALS, r["stderr"]
    assert code_reward(cpp(code), STDIO) == 1.0
    assert snapshot(victim) == before


@needs_gxx
def test_program_cannot_find_the_expected_output():
    """The expected output never touches the disk: the program's folder holds only its binary, and the output
    is in no file, command line or environment it can see. The answer is a random 32-digit hex nonce; the
    program prints the first such string it finds that begins like the answer, so finding it would score 1.0."""
    answer = secrets.token_hex(16)
    code = ("#include <cctype>\n#include <cstdio>\n#include <cstring>\n#include <dirent.h>\n#include <string>\n"
            "static std::string slurp(const std::string &p) {\n    std::string s; char b[4096]; size_t n;\n"
            "    FILE *f = fopen(p.c_str(), \"rb\"); if (!f) return s;\n"
            "    while ((n = fread(b, 1, sizeof b, f)) > 0 && s.size() < (1 << 22)) s.append(b, n);\n"
            "    fclose(f); return s;\n}\n"
            "int main() {\n    std::string seen;\n"
            "    for (const char *dir : {\".\", \"..\", \"/proc\"}) {\n"
            "        DIR *d = opendir(dir); if (!d) continue;\n"
            "        while (dirent *e = readdir(d)) {\n"
            "            std::string p = std::string(dir) + \"/\" + e->d_name;\n"
            "            if (!strcmp(dir, \".\")) printf(\"file %s\\n\", e->d_name);\n"
            "            if (!strcmp(dir, \"/proc\")) seen += slurp(p + \"/cmdline\") + slurp(p + \"/environ\");\n"
            "            else if (e->d_type == DT_REG) seen += slurp(p);\n"
            "        }\n        closedir(d);\n    }\n"
            "    for (size_t i = 0; i + 32 <= seen.size(); i++) {\n"
            f"        if (seen.compare(i, 4, \"{answer[:4]}\") != 0) continue;\n"
            "        size_t j = i;\n        while (j < i + 32 && isxdigit((unsigned char)seen[j])) j++;\n"
            "        if (j == i + 32) { printf(\"%s\\n\", seen.substr(i, 32).c_str()); return 0; }\n    }\n"
            "    puts(\"not found\");\n}\n")
    tests = {"stdio": [{"input": "", "output": answer + "\n"}]}
    assert code_verdict(cpp(code), tests) == (0.0, "test 1: wrong output")
    r = run_binary(build(code))
    files = sorted(ln.split()[1] for ln in r["stdout"].splitlines() if ln.startswith("file "))
    assert files == [".", "..", "main"] and r["stdout"].splitlines()[-1] == "not found", r["stdout"]


# ---------------------------------------------------------------- the compiler is contained too
@needs_gxx
def test_compiler_bombs_are_stopped():
    """Source is untrusted input to g++: reading /dev/zero hits the compiler's memory limit, a constexpr loop of
    4e10 steps hits its time limit; both fail quickly instead of holding a trainer's worker for minutes."""
    t0 = time.monotonic()
    r = compile_cpp('#include "/dev/zero"\nint main() {}\n', memory_mb=512)
    assert r["binary"] is None and r["rc"] != 0 and time.monotonic() - t0 < 10.0, r
    bomb = ("constexpr long f() { long s = 0; for (long i = 0; i < 200000; i++) for (long j = 0; j < 200000; j++)"
            " s += i ^ j; return s; }\nconstexpr long v = f();\nint main() { return v & 1; }\n")
    t0 = time.monotonic()
    r = compile_cpp(bomb, timeout=1.0)
    assert r["binary"] is None and r["timed_out"] and time.monotonic() - t0 < 3.0, r


# ---------------------------------------------------------------- a machine without a compiler
def test_without_compiler_one_warning_and_cpp_scores_zero(monkeypatch, capsys):
    """No g++: the first C++ program prints one warning that names the fix, every C++ program scores 0 with
    that reason, and Python programs are graded as before."""
    real_which = shutil.which
    monkeypatch.setattr(verifier.cpp, "_CXX", None)
    monkeypatch.setattr(verifier.cpp.shutil, "which", lambda name, *a, **k: None if name == "g++"
                        else real_which(name, *a, **k))
    capsys.readouterr()
    for _ in range(2):
        score, why = code_verdict(cpp(doubler()), STDIO)
        assert score == 0.0 and "apt install g++" in why, why
    assert code_reward("```python\nprint(int(input()) * 2)\n```", STDIO) == 1.0
    assert code_reward("```python\nprint(int(input()) * 3)\n```", STDIO) == 0.0
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "C++ programs score 0" in err and "apt install g++" in err, err
    assert len(err.strip().splitlines()) == 1, err


@needs_gxx
def test_fallback_without_prlimit_or_namespaces(monkeypatch):
    """Machines without util-linux tools (macOS, minimal containers): the compiler and the binary get their
    rlimits from the Python launcher, which also gives back the default SIGXFSZ (Python ignores it, and exec
    would pass that on), so a flood of output still ends the program at the cap."""
    bare = {**verifier.sandbox._sandbox_setup(), "_prlimit": None, "_unshare": [], "network_namespace": False,
            "pid_namespace": False, "rlimits_via": "python-launcher", "_unshare_fs": [],
            "read_only_filesystem": False, "capabilities_dropped": False}
    monkeypatch.setattr(verifier.sandbox, "_sandbox_setup", lambda: bare)
    assert code_verdict(cpp(doubler()), STDIO) == (1.0, "")
    r = run_binary(build("#include <cstdio>\nint main() { for (;;) puts(\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"); }"),
                   timeout=5.0)
    assert r["rc"] == 128 + signal.SIGXFSZ and len(r["stdout"]) <= 1 << 20
