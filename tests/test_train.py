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


def _metrics(path):
    return [json.loads(l) for l in open(path)]


def _run(args, **kw):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + args, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def test_kill9_mid_phase2_then_resume_continues_exactly(tmp_path, tiny_dir, math_data):
    """A run killed with SIGKILL in Phase 2 and resumed gives the same per-step metrics (same data
    order, same samples, same losses) as a run that was never interrupted."""
    runs = tmp_path / "runs"
    args = common(tiny_dir, math_data, runs) + ["--phase", "distill", "--steps", "8",
                                                "--temperature", "1.0"]
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
        for key in ("reward", "loss", "kl", "response_tokens", "generations", "generated_tokens"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["step"], key)
    assert os.path.exists(runs / "cut" / "final" / "config.json")
