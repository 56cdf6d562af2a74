"""The default toy run's fingerprint: a ~15-second end-to-end run whose exact figures are written here.

`python train.py` promises the README's table digit for digit on every x86-64 CPU (repro.py pins
torch's CPU kernels to AVX2; toy_base/ ships the pre-trained base; constraints.txt the versions).
This test is that promise in miniature: the same code path from the shipped base (Phase 1 on 160
questions, 20 SRT steps, 8 Phase-2 steps, a 64-question table), run as its own process exactly as a
user runs it, must reproduce every loss, reward and table cell below, bit for bit. Measured on an
AVX-512 CPU (pinned) and expected on AVX2 ones alike: without the pin this AVX-512 machine gave the
same table but SRT/Phase-2 losses that differ in the 6th digit (e.g. 0.0349780135 vs 0.0349772274),
and a different pool-correction cell. The run is too short to learn anything useful (20 SRT steps
at the toy's lr leave the generator worse than the base); it is a fingerprint, not a result.

If this fails after an intended change of behaviour, re-record the figures (and the README's table).
If it fails on an untouched checkout, this machine computes other bits: say so in an issue, with the
output of `python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"`.
"""
import json
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import repro  # noqa: E402

ARGS = ["--quiet", "--phase1-questions", "160", "--srt-steps", "20", "--srt-batch-size", "16", "--steps", "8",
        "--batch-questions", "16", "--eval-questions", "64"]
KEPT = 119
SRT_LOSS = [3.026634693145752, 2.0084729194641113, 1.7596683502197266, 1.8053481578826904, 1.5166118144989014,
            1.5105305910110474, 1.459825873374939, 1.2178517580032349, 1.1638773679733276, 1.095902442932129,
            1.0392297506332397, 1.0235494375228882, 0.9269247055053711, 0.8692956566810608, 0.9585959911346436,
            0.8224232196807861, 0.8472907543182373, 0.7568838000297546, 0.9054479002952576, 0.8210762739181519]
P2_LOSS = [0.5154571533203125, 0.38943275809288025, 0.32699689269065857, 0.3517090082168579, 0.15819531679153442,
           0.034977227449417114, 0.10838420689105988, 0.04417229816317558]
P2_REWARD = [0.125, 0.0625, 0.125, 0.1875, 0.5, 0.0625, 0.25, 0.375]
TABLE = """\
| base |  43.8 |  43.8 |  36.1 |  40.6 |  27.8 |  39.3 | 21.8 |   0.0 | 0 |
| SRT |  14.1 |  14.1 |   9.1 |   9.4 |  25.0 |  75.0 | 41.0 |   0.0 | 640 (Phase 1) |
| SD-Zero |  25.0 |  25.0 |  14.6 |  21.9 |  11.1 |  82.1 | 22.8 |   0.0 | 768 (128 in Phase 2) |"""


@pytest.mark.skipif(platform.machine().lower() not in repro.X86,
                    reason="x86-64 only: an Arm CPU's kernels round differently (the run says so in one line)")
@pytest.mark.parametrize("threads", [1, 2])
def test_short_toy_run_reproduces_its_recorded_figures_bit_for_bit(tmp_path, threads):
    """Also on 1 torch thread (a 1-core machine runs min(2, cores) = 1): the same bits. Each run is a
    new process with its own random PYTHONHASHSEED, so no string-hash order can leak in either."""
    # train.py must pin the kernels itself: the pin that conftest.py set for this process is removed.
    env = {k: v for k, v in os.environ.items() if k not in repro.PIN}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *ARGS, "--threads", str(threads),
                        "--runs-dir", str(tmp_path), "--run-name", "fp"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "note:" not in r.stdout, r.stdout          # no "your table will differ" line on x86-64
    run = tmp_path / "fp"
    recs = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert json.load(open(run / "phase1_stats.json"))["kept"] == KEPT
    assert [x["loss"] for x in recs if x["phase"] == "srt"] == SRT_LOSS
    assert [x["loss"] for x in recs if x["phase"] == "distill"] == P2_LOSS
    assert [x["reward"] for x in recs if x["phase"] == "distill"] == P2_REWARD
    rows = [line for line in (run / "table.md").read_text().splitlines() if line.startswith("| ") and
            not line.startswith("| model")]
    assert "\n".join(rows) == TABLE


@pytest.mark.parametrize("argv,pinned", [
    ([], True), (["--phase", "srt"], True),                                   # train.py on the toy
    (["--model", "Qwen/Qwen3-4B-Instruct"], False), (["--model=runs/x/final"], False),   # a user's model
    (["--model", "runs/toy/final", "--data", "toy"], True), (["--model", "m", "--data=toy"], True),  # evaluate.py
    (["--model", "m", "--data", "my.jsonl"], False)])
def test_only_toy_command_lines_pin_the_kernels(argv, pinned):
    """A --model run keeps the kernels torch picks (a CUDA run is not touched: these switches only
    steer CPU kernels); the toy run, and evaluate.py --data toy, get AVX2 on every x86-64 CPU."""
    env = {k: v for k, v in os.environ.items() if k not in repro.PIN}
    code = (f"import os, repro; repro.pin_if_toy({argv!r}); import torch; "
            "print(os.environ.get('ATEN_CPU_CAPABILITY'), torch.backends.cpu.get_cpu_capability())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert (out[0] == "avx2") == pinned and (out[0] == "None") == (not pinned)
    if pinned and platform.machine().lower() in repro.X86:
        assert out[1] == "AVX2"


def test_a_machine_that_cannot_match_says_so_in_one_line(monkeypatch):
    import torch
    fake = type("T", (), {"backends": torch.backends, "cuda": type("C", (), {"is_available": staticmethod(lambda: False)})})
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    note = repro.check_pinned(fake)
    assert note and "\n" not in note and "arm64" in note and repro.SEED_SPREAD in note
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    note = repro.check_pinned(fake)
    assert note and "\n" not in note and "DEFAULT" in note
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert repro.check_pinned(fake) is None
