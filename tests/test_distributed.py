"""machinery/distributed.py: train.py under torchrun, FSDP2 on CPU with the gloo backend, 2 processes.

1. One Phase-2 step (LM head tied to the embedding, as in Qwen3-4B, and untied, as in Qwen3-8B)
   and one SRT step on 2 ranks give the loss and the updated weights of 1 process on the same
   global batch (tests/dist_worker.py runs them through distill.py, revise.py and machinery/optim.py).
2. A short run under torchrun --nproc_per_node=2 finishes, writes its table once, and after a
   kill -9 of every process, --resume continues it to the same per-step numbers as an uncut run.
3. The generation budget and the metrics of a 2-rank run add up to those of the single run.

No GPU here: FSDP2 runs on CPU tensors and gloo, the same code path NCCL takes on GPUs apart from
the backend (distributed.setup). The model is conftest's tiny XS Qwen3, trained for 2 s to answer
\\boxed{1} or \\boxed{2} (answer "1" is right): a random model never earns a reward, so Phase 1 would
keep nothing. The toy world's own model takes minutes to build on busy CPUs.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import build_two_answer_model

import config
import data
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
# --standalone: a free local port, so two test runs (or a real job) never share a rendezvous
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

# fp32 sums over ranks add in another order than one process's sums: the loss and the gradient
# norm agree to ~1e-7 relative. One AdamW step of lr 1e-3 moves a weight by ~lr·g/|g|; for a
# gradient entry near AdamW's eps (1e-8) that ratio feels the order, and the measured worst weight
# difference is ~2e-6 (0.2% of one step). 1e-5 is 1% of a step: a missing or doubled rank's
# gradient (a wrong divide factor, the LM head's hand-written gradient not reduced) moves weights
# by a whole step and fails it.
LOSS_REL, WEIGHT_ABS = 1e-6, 1e-5


def _worker():
    spec = importlib.util.spec_from_file_location("dist_worker", os.path.join(ROOT, "tests", "dist_worker.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def step_results(tiny_dir, tmp_path_factory):
    """(1 process, 2 ranks) results of dist_worker on the same model and global batch."""
    out = tmp_path_factory.mktemp("dist") / "two.pt"
    p = subprocess.run(TORCHRUN + [os.path.join(ROOT, "tests", "dist_worker.py"), tiny_dir, str(out)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return _worker().run(tiny_dir), torch.load(out, weights_only=False)


def test_two_ranks_make_the_one_process_update(step_results):
    one, two = step_results
    for phase in ("phase2", "phase2_untied", "srt"):
        a, b = one[phase], two[phase]
        loss_a, loss_b = a["loss"], b["loss"]
        assert loss_b == pytest.approx(loss_a, rel=LOSS_REL), phase
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=10 * LOSS_REL), phase
        assert a["ok"] and b["ok"]
        assert set(a["weights"]) == set(b["weights"])
        diff = max(float((a["weights"][k].float() - b["weights"][k].float()).abs().max()) for k in a["weights"])
        print(f"{phase}: loss 1 proc {loss_a:.10g} / 2 ranks {loss_b:.10g} (|diff| {abs(loss_a - loss_b):.2g}), "
              f"grad norm {a['grad_norm']:.8g} / {b['grad_norm']:.8g}, max |weight diff| {diff:.2g} "
              f"(largest weight change of the step {a['moved']:.2g})")
        assert diff <= WEIGHT_ABS, phase
        assert a["moved"] > 100 * WEIGHT_ABS      # the step did move the weights


# --------------------------------------------------------------------------------------------
# Whole runs under torchrun
# --------------------------------------------------------------------------------------------
def _boxing_model(path, questions):
    """conftest's tiny XS model, fine-tuned for ~60 steps to answer '\\boxed{1}' or '\\boxed{2}' (and
    the same after a control phrase): about half its answers are right, so every phase has work."""
    return build_two_answer_model(path, questions, "math", ["\\boxed{1}", "\\boxed{2}"], steps=60,
                                  extra_corpus=" \\boxed{1} \\boxed{2}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The model, the data and the arguments of a short SD-Zero run (Phase 1, SRT, Phase 2, table)."""
    d = tmp_path_factory.mktemp("runs")
    rows = [{"id": i, "question": f"What is {i}+{i + 1}?", "answer": "1"} for i in range(24)]
    data = d / "math.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = _boxing_model(d / "boxer", [r["question"] for r in rows])
    args = ["--model", model, "--data", str(data), "--test-data", str(data), "--runs-dir", str(d / "runs"),
            "--quiet", "--threads", "1", "--max-new-tokens", "12", "--temperature", "1.0",
            "--phase1-questions", "8", "--srt-steps", "3", "--srt-batch-size", "4", "--steps", "10",
            "--batch-questions", "4", "--micro-batch", "2", "--gen-batch", "8", "--lr", "1e-3",
            "--save-every", "1", "--teacher-sync", "2", "--eval-questions", "6"]
    return {"runs": d / "runs", "args": args}


def _torchrun(args, **kw):
    return subprocess.Popen(TORCHRUN + [os.path.join(ROOT, "train.py")] + args, cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def uncut(world):
    """The 2-rank run, never interrupted: its folder and its console output."""
    p = _torchrun(world["args"] + ["--run-name", "uncut"])
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
    return world["runs"] / "uncut", out


def _metrics(run):
    return [json.loads(line) for line in open(run / "metrics.jsonl")]


def _children(pid):
    """torchrun's workers: each starts a session of its own, so killing torchrun's group misses them."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def test_torchrun_run_survives_kill9_and_resumes(world, uncut):
    ref_dir, ref_out = uncut
    assert ref_out.count("Held-out results") == 1            # rank 0 alone prints and writes it
    for name in ("table.md", "final/config.json", "srt/model.safetensors", "report.html"):
        assert (ref_dir / name).exists(), name

    run = world["runs"] / "cut"
    victim = _torchrun(world["args"] + ["--run-name", "cut"], start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and sum(r["phase"] == "distill" for r in _metrics(run)) >= 3:
            break
        assert victim.poll() is None, "run finished before it could be killed"
        time.sleep(0.02)
    for pid in _children(victim.pid) + [victim.pid]:          # kill -9 every process of the run
        os.kill(pid, signal.SIGKILL)
    victim.wait()
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ck["phase"] == "distill" and 3 <= ck["step"] < 10 and ck["world"] == 2, "kill mid-Phase-2"
    assert not (run / "table.md").exists()

    res = _torchrun(world["args"] + ["--run-name", "cut", "--resume"])
    out, _ = res.communicate(timeout=300)
    assert res.returncode == 0, out[-3000:]
    assert f"resuming at step {ck['step']}/10" in out
    assert out.count("Held-out results") == 1 and (run / "table.md").exists()
    assert set(json.load(open(run / "eval.json"))) == {"base", "SRT", "SD-Zero"}
    a, b = _metrics(ref_dir), _metrics(run)
    assert [(r["phase"], r["step"]) for r in b] == [("srt", s) for s in (1, 2, 3)] + \
        [("distill", s) for s in range(1, 11)], "each step logged exactly once"
    for ra, rb in zip(a, b):
        for key in ("loss", "reward", "kl", "response_tokens", "generations", "generated_tokens",
                    "teacher_syncs"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-9), (ra["phase"], ra["step"], key)
    assert b[-1]["teacher_syncs"] == 5                       # the synced teacher came back from DCP


def test_two_rank_budget_and_metrics_add_up(world, uncut, step_results):
    # Per step, with fixed rollouts: the combined metrics are the single process's, exactly up to
    # float rounding (reward, truncation and length are means over all rollouts, KL over all tokens).
    one, two = step_results
    ma, mb = one["phase2"]["metrics"], two["phase2"]["metrics"]
    assert set(ma) == set(mb)
    for key in ma:
        assert mb[key] == pytest.approx(ma[key], rel=1e-6), key
    assert mb["new_generations"] == ma["new_generations"] and mb["new_tokens"] == ma["new_tokens"]

    # Whole runs: the same knobs spend the same generation budget in 1 process as in 2 ranks.
    ref_dir, _ = uncut
    assert train.main(world["args"] + ["--run-name", "one"]) == 0
    one_dir = world["runs"] / "one"
    s1, s2 = (json.load(open(d / "phase1_stats.json")) for d in (one_dir, ref_dir))
    for key in ("questions", "y_init", "revisions_sampled", "generations"):
        assert s2[key] == s1[key], key
    m1, m2 = _metrics(one_dir), _metrics(ref_dir)
    assert [(r["phase"], r["step"], r["generations"]) for r in m2] == \
        [(r["phase"], r["step"], r["generations"]) for r in m1]
    budget = data.planned_budget(config.parse(world["args"]), 24)
    assert m2[-1]["generations"] == m1[-1]["generations"] == budget == 8 * 4 + 10 * 4
    # the 2-rank means are means over the whole batch: tokens per step = mean length x rollouts
    prev = s2["generated_tokens"]
    for r in (r for r in m2 if r["phase"] == "distill"):
        assert r["generated_tokens"] - prev == pytest.approx(r["response_tokens"] * 4)
        prev = r["generated_tokens"]
    e1, e2 = (json.load(open(d / "eval.json")) for d in (one_dir, ref_dir))
    assert [e2[k]["generations_used"] for k in e2] == [e1[k]["generations_used"] for k in e1] == [0, 32, 72]
