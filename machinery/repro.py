"""repro.py — one table on every machine: pin torch's CPU kernels before torch is imported.

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
not affected by these switches at all). Ground floor: imports nothing but the standard library,
because it must run before anything imports torch.
"""
from __future__ import annotations

import os
import platform
import sys

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
    if toy or "--data=toy" in argv or any(a == "--data" and b == "toy" for a, b in zip(argv, argv[1:])):
        pin_cpu_kernels()


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
