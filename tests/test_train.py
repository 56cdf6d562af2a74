"""train.py: errors users see, kill -9 + --resume continuing exactly, and small end-to-end runs."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


@pytest.fixture()
def math_data(tmp_path):
    rows = [{"id": i, "question": f"What is {i}+{i + 1}?", "answer": str(2 * i + 1)} for i in range(24)]
    return write_jsonl(tmp_path / "math.jsonl", rows)


def common(tiny_dir, data, runs):
    return ["--model", tiny_dir, "--data", data, "--runs-dir", str(runs), "--quiet", "--threads", "1",
            "--max-new-tokens", "8", "--batch-questions", "4", "--micro-batch", "2", "--lr", "1e-3",
            "--save-every", "1", "--no-eval", "--gen-batch", "8"]


def test_bad_rows_name_file_and_line(tmp_path, tiny_dir):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "What is 1+1?", "answer": "2"},
                                               {"question": "What is 2+2?"}])
    with pytest.raises(SystemExit) as e:
        train.main(common(tiny_dir, bad, tmp_path / "runs"))
    assert "bad.jsonl:2" in str(e.value) and "answer" in str(e.value)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "a", "answer": "1"}\n{not json}\n')
    with pytest.raises(SystemExit) as e:
        train.main(common(tiny_dir, str(broken), tmp_path / "runs2"))
    assert "broken.jsonl:2" in str(e.value) and "JSON" in str(e.value)
    code_bad = write_jsonl(tmp_path / "code.jsonl", [{"question": "Echo.", "tests": {"stdio": []}}])
    with pytest.raises(SystemExit) as e:
        train.main(common(tiny_dir, code_bad, tmp_path / "runs3") + ["--task", "code"])
    assert "code.jsonl:1" in str(e.value)
    with pytest.raises(SystemExit) as e:
        train.main(common(tiny_dir, str(tmp_path / "missing.jsonl"), tmp_path / "runs4"))
    assert "not found" in str(e.value)


def test_unknown_model_is_a_clear_error(tmp_path, math_data):
    with pytest.raises(SystemExit) as e:
        train.main(common(str(tmp_path / "no-such-model"), math_data, tmp_path / "runs"))
    msg = str(e.value)
    assert msg.startswith("error:") and "\n" not in msg and "no-such-model" in msg


def test_refuses_to_overwrite_a_run(tmp_path, tiny_dir, math_data):
    args = common(tiny_dir, math_data, tmp_path / "runs") + ["--phase", "distill", "--steps", "1",
                                                              "--run-name", "r"]
    assert train.main(args) == 0
    with pytest.raises(SystemExit) as e:
        train.main(args)
    assert "--resume" in str(e.value)


def test_resume_refuses_changed_settings_then_evaluate_reads_the_runs_own(tmp_path, tiny_dir, math_data,
                                                                          capsys):
    """No silent drift: --resume with another P_r stops in one line before anything loads; evaluate.py
    on the run's final/ uses the run's own phrases (and its held-out data) without being told."""
    import evaluate
    args = common(tiny_dir, math_data, tmp_path / "runs") + ["--phase", "distill", "--steps", "1",
                                                              "--run-name", "r", "--p-wrong", "No. Redo it."]
    assert train.main(args) == 0
    with pytest.raises(SystemExit) as e:
        train.main(args[:-1] + ["Wrong, again.", "--resume"])
    msg = str(e.value)
    assert "\n" not in msg and "--p-wrong 'No. Redo it.' -> 'Wrong, again.'" in msg
    with pytest.raises(SystemExit, match="--kl 'reverse' -> 'forward'"):
        train.main(args + ["--resume", "--kl", "forward"])
    out = tmp_path / "ev.json"
    assert evaluate.main([str(tmp_path / "runs" / "r" / "final"), "--data", math_data, "--k", "1", "--limit", "2",
                          "--max-new-tokens", "4", "--out", str(out), "--quiet", "--no-revision"]) == 0
    assert "p_wrong" in capsys.readouterr().out
    assert json.load(open(out))["args"]["p_wrong"] == "No. Redo it."


def _metrics(path):
    return [json.loads(line) for line in open(path)]


def _run(args, **kw):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + args, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def test_kill9_mid_phase2_then_resume_continues_exactly(tmp_path, tiny_dir, math_data):
    """A run killed with SIGKILL in Phase 2 and resumed gives the same per-step metrics (same data
    order, same samples, same losses) as a run that was never interrupted."""
    runs = tmp_path / "runs"
    # Plateau syncs on (patience 2: the tiny model's flat reward plateaus at steps 4 and 8), so the
    # resumed run must also restore the synced teacher and the rule's state from the checkpoint.
    args = common(tiny_dir, math_data, runs) + ["--phase", "distill", "--steps", "8",
                                                "--temperature", "1.0", "--sync-on-plateau", "2",
                                                "--max-syncs", "2"]
    ref = _run(args + ["--run-name", "ref"])
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()[-2000:]

    victim = _run(args + ["--run-name", "cut"])
    mpath = runs / "cut" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if mpath.exists() and sum(1 for _ in open(mpath)) >= 3:
            break
        if victim.poll() is not None:
            pytest.fail("run finished before it could be killed")
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = len(_metrics(mpath))
    assert 3 <= done < 8, "the kill must land mid-Phase-2"

    res = _run(args + ["--run-name", "cut", "--resume"])
    assert res.wait(timeout=300) == 0, res.stderr.read().decode()[-2000:]
    a, b = _metrics(runs / "ref" / "metrics.jsonl"), _metrics(mpath)
    assert [r["step"] for r in b] == list(range(1, 9)), "each step logged exactly once"
    for ra, rb in zip(a, b):
        for key in ("reward", "loss", "kl", "response_tokens", "generations", "generated_tokens",
                    "teacher_syncs"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    assert os.path.exists(runs / "cut" / "final" / "config.json")


# --------------------------------------------------------------------------------------------
# Code task end to end: a tiny model that has memorised a right and a wrong program per question
# --------------------------------------------------------------------------------------------
def _memorising_code_model(path, items, steps=200):
    """Quick SFT of a tiny Qwen3 so that, per question, half its samples are the fixture's reference
    program and half the known-wrong one: the verifier then has something to tell apart."""
    import random

    import torch

    import toy
    from generate import prompt_ids, prompt_text
    from machinery.optim import make_optimizer
    from revise import srt_backward

    tok = toy.make_tokenizer([prompt_text_stub(it) for it in items] +
                             [it["solution"] + it["wrong_solution"] for it in items], vocab_size=600)
    model = toy.make_model(tok, "XS", seed=0)
    from revise import Phrases, phrase_ids, srt_example
    exs = []
    for it in items:
        x = prompt_ids(tok, it["question"], "code")
        ys = {1.0: tok(it["solution"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
              0.0: tok(it["wrong_solution"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]}
        for r0, y0 in ys.items():
            mask = [0] * len(x) + [1] * len(y0)
            exs.append({"input_ids": x + y0, "rev_mask": mask, "gen_mask": mask})
            for y1 in ys.values():     # the revision layout with an independent re-attempt
                s = phrase_ids(tok, Phrases().pick(r0))
                exs.append(srt_example(x, y0, s, y1, [tok.eos_token_id]))
    torch.manual_seed(0)
    rng = random.Random(0)
    opt = make_optimizer(model, 3e-3, 0.0, (0.9, 0.98))
    model.train()
    for _ in range(steps):
        srt_backward(model, rng.sample(exs, 6), "rev", tok.pad_token_id, 6)
        opt.step()
        opt.zero_grad()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    assert prompt_text(tok, items[0]["question"], "code").endswith("assistant\n")
    return str(path)


def prompt_text_stub(it):
    from reward import TASKS
    return "user assistant " + it["question"] + " " + TASKS["code"].instruction


def test_code_task_end_to_end(tmp_path):
    rows = [json.loads(line) for line in open(os.path.join(ROOT, "verifier", "cases", "code_fixtures.jsonl"))]
    items = [r for r in rows if r["id"] in ("s01", "s03", "s11")]
    data = write_jsonl(tmp_path / "code.jsonl", items)
    model_dir = _memorising_code_model(tmp_path / "coder", items)
    runs = tmp_path / "runs"
    args = ["--model", model_dir, "--task", "code", "--data", data, "--test-data", data,
            "--runs-dir", str(runs), "--run-name", "code", "--quiet", "--threads", "1",
            "--phase1-questions", "2", "--n-rev", "4", "--srt-steps", "3", "--srt-batch-size", "2",
            "--steps", "2", "--batch-questions", "1", "--max-new-tokens", "80", "--temperature", "1.0",
            "--micro-batch", "2", "--eval-questions", "3", "--lr", "1e-4", "--srt-lr", "1e-4"]
    assert train.main(args) == 0
    run = runs / "code"
    stats = json.load(open(run / "phase1_stats.json"))
    assert stats["kept"] >= 1 and stats["revisions_correct"] >= 1       # the sandbox passed programs
    ev = json.load(open(run / "eval.json"))
    assert set(ev) == {"base", "SRT", "SD-Zero"}
    assert 0 < ev["base"]["avg@1"] < 1               # the runner both passes and fails programs
    recs = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["phase"] for r in recs] == ["srt"] * 3 + ["distill"] * 2
    assert (run / "srt" / "config.json").exists() and (run / "final" / "config.json").exists()


def test_toy_world_end_to_end_tiny_budget(tmp_path):
    """`python train.py` on the toy world (no --model), from the shipped base, with tiny phases:
    every stage runs, every promised output exists, and the metrics carry the promised fields."""
    runs = tmp_path / "runs"
    args = ["--runs-dir", str(runs), "--quiet", "--phase1-questions", "128", "--srt-steps", "8",
            "--srt-batch-size", "16", "--steps", "4", "--batch-questions", "8", "--eval-questions", "48",
            "--teacher-sync", "2"]
    assert train.main(args) == 0
    run = runs / "toy"
    for name in ("config.json", "metrics.jsonl", "revisions.jsonl", "phase1_stats.json", "eval.json",
                 "table.md", "srt/config.json", "srt/model.safetensors", "final/config.json",
                 "final/tokenizer_config.json", "checkpoint.pt"):
        assert (run / name).exists(), name
    stats = json.load(open(run / "phase1_stats.json"))
    assert stats["questions"] == 128 and stats["generations"] == 128 * 4 and stats["kept"] >= 1
    recs = [json.loads(line) for line in open(run / "metrics.jsonl")]
    p2 = [r for r in recs if r["phase"] == "distill"]
    assert len(p2) == 4 and p2[-1]["teacher_syncs"] == 2
    for key in ("reward", "loss", "kl", "grad_norm", "lr", "response_tokens", "truncated",
                "generations", "generated_tokens", "teacher_syncs", "seconds"):
        assert key in p2[-1]
    assert p2[-1]["generations"] == stats["generations"] + 4 * 8
    table = (run / "table.md").read_text()
    assert "| base |" in table and "| SRT |" in table and "| SD-Zero |" in table
    row = json.loads(open(run / "revisions.jsonl").readline())
    assert set(row) >= {"prompt_ids", "y_init_ids", "phrase", "y_rev_ids"}
