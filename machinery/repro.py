"""machinery/repro.py — for every entry point: one table on every machine, and fast side-by-side runs.

Not the paper: this is why `python train.py` prints the README's table digit for digit on any
x86-64 CPU. The toy run is deterministic on one machine (same seed, same samples), but not across
machines: torch picks its CPU kernels by instruction set when it is imported, and an AVX-512 kernel
adds floating-point numbers in another order than an AVX2 one. The rounding differs in the last bit,
a sampled token flips a few hundred steps later, and the table moves by points. Three libraries
choose on their own, so three switches pin them all to AVX2, which every x86-64 CPU since 2013 has:

    ATEN_CPU_CAPABILITY=avx2   torch's own vectorised kernels (ATen); read once, at import
    MKL_CBWR=AVX2              MKL's matrix products ("conditional bit-wise reproducibility")
    ONEDNN_MAX_CPU_ISA=AVX2    oneDNN's kernels

On an AVX2 machine they change nothing; on an AVX-512 one they cost a little speed and give the
AVX2 bits. Measured: a 30-step training probe printed the same weights hash on an AVX2-only
machine and, pinned, on an AVX-512 one (unpinned, the AVX-512 hash differed); the number of torch
threads (1 to 4) did not change it. Other sources of machine-dependence are removed elsewhere:
the toy base and its tokenizer are shipped (toy_base/, so no BPE training or pre-training runs on
the user's machine) and `constraints.txt` pins the library versions the README's table was made
with. Arm CPUs (Apple, Graviton) have other kernels altogether: there the run says so in one line.

Only the toy run is pinned: a `--model` run keeps the kernels torch picks (and CUDA kernels are
not affected by these switches at all).

Shared cores. Ablations run side by side, and tests run while a run trains. torch's OpenMP threads
spin on a core while they wait for the next parallel region (GNU OpenMP: 300,000 spins, then sleep);
with more threads than free cores, a spinning thread burns the time slice the thread it waits for
needs. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) fixes that but costs every tiny matmul a wake-up:
the toy's ops are tiny. Measured side by side on 2 idle cores, 2026-12-07, the fingerprint test's
short toy run (docs/measuring.md): OpenMP's default 23-24 s alone, 256 s for three at once; PASSIVE
36 s alone, 55 s for three; a short spin (GOMP_SPINCOUNT=2000, then sleep) 28 s alone, 71 s for
three. The short spin is the compromise: a run alone loses little, three side by side finish in less
than three times one. So every run, before torch is imported (OpenMP reads its settings once, when
torch loads it), gets

    GOMP_SPINCOUNT=2000        GNU OpenMP (the torch wheels'): spin briefly, then sleep
    KMP_BLOCKTIME=1            the same for Intel's and LLVM's OpenMP: 1 ms of spinning, then sleep
    OMP_NUM_THREADS=n          n = cpu_threads(): min(2, the cores this process may use)

unless the user set them (or set OMP_WAIT_POLICY, which then decides alone). None changes a bit of
the results (the thread count did not, above).
Ground floor: imports nothing but the standard library, because it must run before anything
imports torch.
"""
from __future__ import annotations

import itertools
import math
import os
import platform
import sys
from pathlib import Path

PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
X86 = ("x86_64", "amd64", "i686", "i386")
# How much the default table moves with the training seed (python -m bench table, seeds 0-2); the
# figure a reader needs when their machine cannot reproduce the README's bits.
SEED_SPREAD = "up to ±2.7 points of avg@1 per row over training seeds 0-2"


def pin_cpu_kernels() -> None:
    """Set the three switches (unless the user set them) — before the first `import torch`."""
    if "torch" in sys.modules:
        raise RuntimeError("repro.pin_cpu_kernels() must run before torch is imported")
    for key, value in PIN.items():
        os.environ.setdefault(key, value)


def pin_if_toy(argv: list[str]) -> None:
    """pin_cpu_kernels() for a command line that runs the toy world: train.py without --model, or
    evaluate.py --data toy. A --model run of train.py keeps the kernels torch picks."""
    toy = not any(a == "--model" or a.startswith("--model=") for a in argv)
    if toy or "--data=toy" in argv or any(a == "--data" and b == "toy" for a, b in itertools.pairwise(argv)):
        pin_cpu_kernels()


def before_torch(argv: list[str]) -> None:
    """What every entry point runs before `import torch`: pin_if_toy(argv), then share_cores()."""
    pin_if_toy(argv)
    share_cores()


# How long a waiting OpenMP thread spins before it sleeps (GNU OpenMP counts spins; see above).
SPIN_COUNT = "2000"


def share_cores() -> None:
    """A short spin, then sleep (GOMP_SPINCOUNT, KMP_BLOCKTIME) and OMP_NUM_THREADS=cpu_threads(),
    unless the user set them — before the first `import torch`, for every run, toy or --model, CPU or
    GPU. Before torch is imported we cannot ask whether CUDA is there, and we need not: on a GPU run
    the OpenMP threads only do the small CPU work around the kernels, and a waiter that soon sleeps
    leaves the core to the Python thread that launches them and to the verifier's workers, while a
    spinning one takes it. So one rule for all. A user's OMP_WAIT_POLICY decides alone."""
    if "torch" in sys.modules:
        raise RuntimeError("repro.share_cores() must run before torch is imported")
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
        os.environ.setdefault("KMP_BLOCKTIME", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads()))


def cpu_threads(requested: int | None = None) -> int:
    """torch's thread count: `--threads` if given, else a user's OMP_NUM_THREADS, else min(2, usable
    cores). Two because the toy's matmuls are tiny (more threads only add synchronisation); "usable"
    because os.cpu_count() counts the machine, not what this process gets: a `taskset` or a container's
    CPU quota of one core would otherwise get two threads taking turns on it. The count is not lowered
    by the current load: that is stale a minute later, and a thread whose core is busy soon sleeps
    instead of spinning, so two threads on shared cores cost little (docs/measuring.md)."""
    if requested:
        return requested
    user = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()   # "4,2" is a nested-levels list
    if user.isdigit() and int(user) > 0:
        return int(user)
    return min(2, usable_cores())


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):                  # not Linux
        cores = os.cpu_count() or 1
    quota, period = "max", "1"
    try:                     # cgroup v2: "QUOTA PERIOD" or "max PERIOD" in one file
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        try:                 # cgroup v1: two files, -1 for no quota
            quota, period = (Path(f"/sys/fs/cgroup/cpu/cpu.cfs_{x}_us").read_text().strip()
                             for x in ("quota", "period"))
        except OSError:
            pass
    if quota.isdigit() and period.isdigit() and int(period) > 0:
        cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cores)


def check_pinned(torch) -> str | None:
    """After torch is imported: None if this process computes the README's bits, else one line why not."""
    machine = platform.machine().lower()
    if machine not in X86:
        return (f"note: this is a {platform.machine()} CPU, not x86-64: its kernels round differently, so the "
                f"table will differ from the README's ({SEED_SPREAD} is how much seeds alone move it)")
    cap = torch.backends.cpu.get_cpu_capability()
    if cap != "AVX2":
        return (f"note: torch's CPU kernels are {cap}, not AVX2 (no AVX2 on this CPU, or ATEN_CPU_CAPABILITY "
                f"set by hand): the table will differ from the README's ({SEED_SPREAD} across seeds)")
    if torch.cuda.is_available():
        return ("note: the toy world runs on this machine's GPU, whose kernels are not pinned: the table will "
                f"differ from the README's CPU table ({SEED_SPREAD} across seeds)")
    return None
