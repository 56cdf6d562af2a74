"""C++ programs: compile with g++ inside the sandbox, then run the binary under the same containment as Python.

The paper's code data, open-r1/codeforces-cots, is half C++ (7.5K C++ and 7.5K Python problems), so a C++
answer must be graded like a Python one: same stdio tests, same comparison (harness._stdio_match), same
limits (time, memory, processes, output size, no network, no writes outside its own folder). Three steps:

  cpp_compiler()        g++'s path, looked up once; where there is none, one warning line and C++ scores 0
  compile_cpp(source)   g++ -std=c++17 -O2 -DONLINE_JUDGE inside the sandbox -> the executable's bytes
  run_binary(binary)    one run of that executable in a fresh folder, exactly as run_python runs a script

Why the compiler runs inside the sandbox too (not only under rlimits): it reads untrusted source, and the
source decides what it does. `#include "/dev/zero"` makes it read forever, a template or constexpr bomb
makes it compute for minutes and eat gigabytes, and g++ itself is a large program with known crash bugs on
odd input. In the sandbox it gets its own folder as the only writable place (its temporary files go there
too, TMPDIR is that folder), no network, its own PID namespace, a wall-clock timeout with a process-group
kill, and rlimits sized for a compiler rather than for a solution: 2 GiB of address space (g++ -O2 on
<bits/stdc++.h> peaks near 200 MB resident) and 20 s (that header alone takes 2.7 s on an idle 2-core box and
5 s on a busy one; a right answer killed by a tight limit would be graded wrong). The sandbox adds about
40 ms to a compile, little next to the compile itself.

Why the binary travels as bytes: compile in one throw-away folder, then every test case writes the bytes
into its own fresh folder, as run_python writes the script. No folder outlives a call, and a program cannot
leave files behind for the next test case.
"""
from __future__ import annotations

import math
import os
import shutil
import stat
import sys
import tempfile
import threading

from verifier import sandbox

# -std=c++17: what codeforces-cots asks for ("C++17"). -DONLINE_JUDGE: Codeforces defines it, and contest
# code often reads "input.txt" unless it is set (#ifndef ONLINE_JUDGE freopen(...)), which would read
# nothing here and fail a right answer.
CXX_FLAGS = ["-std=c++17", "-O2", "-DONLINE_JUDGE"]
COMPILE_TIMEOUT = 20.0        # seconds, wall clock; the CPU rlimit is one second more
COMPILE_MEMORY_MB = 2048      # address space of each compiler process (cc1plus, as, ld)
MAX_BINARY = 64 << 20         # largest executable (and any file the compiler writes): RLIMIT_FSIZE

_CXX: tuple | None = None     # (path or None, why not), found once per process
_CXX_LOCK = threading.Lock()


def cpp_compiler() -> tuple[str | None, str]:
    """(path of g++, "") or (None, why C++ cannot be graded here). Looked up once; a miss warns once.

    Why a warning and reward 0 rather than an error: this verifier's rule is that what it cannot check is
    wrong (no false positives), and it runs in the middle of training, where a model may answer a Python
    task in C++ now and then; one such answer must not stop a run on a machine without a compiler. The
    warning names the fix, and a run on C++ data can call reward.cpp_compiler() before it starts.
    """
    global _CXX
    with _CXX_LOCK:
        if _CXX is None:
            path = shutil.which("g++")
            if path is None:
                why = "no C++ compiler: `g++` is not on PATH (install it: apt install g++)"
            elif os.statvfs(tempfile.gettempdir()).f_flag & getattr(os, "ST_NOEXEC", 8):
                path, why = None, f"the temp folder {tempfile.gettempdir()} is mounted noexec (set TMPDIR)"
            else:
                why = ""
            _CXX = (path, why)
            if path is None:
                print(f"reward.py WARNING: C++ programs score 0 on this machine: {why}.", file=sys.stderr,
                      flush=True)
        return _CXX


def compile_cpp(source: str, timeout: float = COMPILE_TIMEOUT, memory_mb: int = COMPILE_MEMORY_MB) -> dict:
    """Compile `source` inside the sandbox. Returns rc, timed_out, stdout, stderr (g++'s messages), wall_s and
    binary: the executable's bytes, or None when compilation failed, timed out or no compiler is installed."""
    cxx, why = cpp_compiler()
    if cxx is None:
        return {"rc": None, "timed_out": False, "stdout": "", "stderr": why, "wall_s": 0.0, "binary": None}
    prot = sandbox._sandbox_setup()
    work = tempfile.mkdtemp(prefix="sdz_build_")
    try:
        with open(os.path.join(work, "main.cpp"), "w", encoding="utf-8") as f:
            f.write(source)
        limits = [memory_mb << 20, math.ceil(timeout) + 1, MAX_BINARY, 64, 0]
        cmd = sandbox._contained(prot, work, limits, [cxx, *CXX_FLAGS, "-o", "main", "main.cpp"])
        r = sandbox._spawn(cmd, work, "", timeout, 1 << 16)
        exe, binary = os.path.join(work, "main"), None
        if r["rc"] == 0 and not r["timed_out"] and os.path.lexists(exe) and stat.S_ISREG(os.lstat(exe).st_mode):
            with open(exe, "rb") as f:
                binary = f.read(MAX_BINARY + 1)
            binary = binary if len(binary) <= MAX_BINARY else None
        return {**r, "binary": binary}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_binary(binary: bytes, stdin: str = "", timeout: float = 2.0, memory_mb: int = 1024,
               output_limit: int = 1 << 20) -> dict:
    """Run a compiled program once, contained exactly as run_python runs a script (same rlimits, namespaces,
    fresh folder, minimal env, unlinked stdin/stdout files). Returns rc, timed_out, stdout, stderr, wall_s."""
    prot = sandbox._sandbox_setup()
    work = tempfile.mkdtemp(prefix="sdz_run_")
    try:
        exe = os.path.join(work, "main")
        with open(exe, "wb") as f:
            f.write(binary)
        os.chmod(exe, 0o755)
        limits = [memory_mb << 20, math.ceil(timeout) + 1, output_limit, 64, 0]
        # Through a shell that waits for it, so that the program is not process 1 of its PID namespace: the
        # kernel drops every signal with the default action that is sent to a namespace's init, SIGXFSZ
        # included, so a program flooding stdout would spin at the output cap until the timeout instead of
        # dying there. (A Python program ignores SIGXFSZ anyway and exits on the write error.) The shell
        # reports a death by signal N as exit status 128 + N.
        prog = ["/bin/sh", "-c", './main; exit $?']
        return sandbox._spawn(sandbox._contained(prot, work, limits, prog), work, stdin, timeout, output_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
