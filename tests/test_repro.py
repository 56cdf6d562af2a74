"""machinery/repro.py's shared-cores policy: OpenMP gets it before torch starts, and a user's value is kept.

OpenMP reads its settings once, when `import torch` loads it, so the only place to check them is a
fresh child process. OMP_DISPLAY_ENV=verbose makes the OpenMP library itself print the settings it
started with, so the test sees what the library read, not only what os.environ says.
"""
import os
import re
import subprocess
import sys

import pytest

from machinery import repro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = ("import os, sys; from machinery import repro; repro.before_torch(sys.argv[1:]); import torch; "
         "print(os.environ.get('OMP_WAIT_POLICY', '-'), os.environ.get('GOMP_SPINCOUNT', '-'), "
         "os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
POLICY = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")


def child(argv: list[str], **env: str) -> tuple[list[str], str | None]:
    """(printed policy, spin count, OMP_NUM_THREADS, torch's threads right after import; the spin count
    GNU OpenMP displayed at its start, None if this torch's OpenMP displays nothing)."""
    e = {k: v for k, v in os.environ.items() if k not in POLICY}
    e.update(env, OMP_DISPLAY_ENV="verbose")
    r = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=ROOT, env=e, capture_output=True, text=True,
                       check=True, timeout=120)
    shown = re.search(r"GOMP_SPINCOUNT\s*=\s*'(\w+)'", r.stderr)
    if sys.platform == "linux":                     # pip's Linux torch ships GNU OpenMP, which displays them
        assert shown, r.stderr[-2000:]
    return r.stdout.split(), shown and shown.group(1)


@pytest.mark.parametrize("argv", [[], ["--model", "Qwen/Qwen3-4B-Instruct"]])
def test_every_run_spins_briefly_then_sleeps_from_torchs_start(argv):
    """The toy run and a --model run (GPU or not: before torch we cannot know, and need not) alike."""
    out, shown = child(argv)
    n = str(min(2, repro.usable_cores()))
    assert out == ["-", repro.SPIN_COUNT, n, n]
    assert shown in (repro.SPIN_COUNT, None)


def test_a_users_settings_are_kept():
    out, shown = child([], OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert out == ["ACTIVE", "-", "1", "1"]              # their wait policy decides alone
    out, shown = child([], GOMP_SPINCOUNT="50", OMP_NUM_THREADS="1")
    assert out == ["-", "50", "1", "1"] and shown in ("50", None)


def test_too_late_once_torch_is_imported():
    import torch  # noqa: F401  (conftest.py imported it already; this says why the call must fail)
    with pytest.raises(RuntimeError, match="before torch"):
        repro.share_cores()


def test_thread_count(monkeypatch):
    """--threads wins, then a user's OMP_NUM_THREADS, then min(2, the cores this process may use)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")                      # a nested-levels list: the outer count
    assert repro.cpu_threads(3) == 3 and repro.cpu_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert repro.cpu_threads() == min(2, repro.usable_cores())
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)   # `taskset -c 0`
    assert repro.usable_cores() == 1 and repro.cpu_threads() == 1


def test_a_containers_cpu_quota_caps_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)

    def cgroup(text):
        return lambda path: type("P", (), {"read_text": lambda self: text})()
    monkeypatch.setattr(repro, "Path", cgroup("150000 100000\n"))    # 1.5 CPUs -> 2 cores' worth
    assert repro.usable_cores() == 2
    monkeypatch.setattr(repro, "Path", cgroup("50000 100000\n"))     # half a CPU -> 1
    assert repro.usable_cores() == 1
    monkeypatch.setattr(repro, "Path", cgroup("max 100000\n"))       # no quota: the affinity
    assert repro.usable_cores() == 64
