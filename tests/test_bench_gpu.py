"""bench/gpu.py --small: every part of the prepared device check runs on CPU through the project's
code, and gpu_memory's predicted Phase-2 peak matches the peak measured on CPU (within 25 %)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_small_runs_every_part_and_the_memory_model_holds(tmp_path):
    # MALLOC_MMAP_THRESHOLD_: every tensor gets its own mapping, returned to the OS when freed, so
    # the process's resident memory follows the live tensors (bench/gpu.py cpu_peak).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", SDZERO_BENCH_OUT=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "bench", "gpu", "--small"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.load(open(tmp_path / "gpu-small.json"))
    assert res["device"] == "cpu" and res["dtype"] == "bfloat16"
    rates = res["rollouts"]
    assert {"rollout_b4", "rollout_b16", "continuous"} <= set(rates)
    assert "error" not in rates["continuous"], rates["continuous"]
    assert all(r["tokens_per_s"] > 0 for r in rates.values())
    # mixed lengths: the EOS hazard ends answers at different times (mean 8, cap 16)
    assert 2 < rates["rollout_b16"]["mean_len"] < 16
    steps = res["phase2_steps"]
    assert len(steps) == 2 and all(s["loss"] >= 0 for s in steps)
    assert steps[0]["scored_tokens"] == 1536 and steps[0]["teacher_tokens"] == 256 + 2 * 1536 + 9 - 1
    assert res["srt_step"]["tokens"] == steps[0]["teacher_tokens"]     # X + Y_init' + S + Y_rev
    peak = res["phase2_peak"]
    assert 0.75 < peak["measured_bytes"] / peak["predicted_bytes"] < 1.25, peak
    for engine in ("rollout_b4", "rollout_b16", "continuous"):
        h = res["hours"][engine]
        assert h["phase1_h"] > 0 and h["phase2_h"] > 0 and h["eval_h"] > 0
        assert abs(h["total_h"] - (h["phase1_h"] + h["phase2_h"] + h["eval_h"])) <= 0.15
