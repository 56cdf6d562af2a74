"""machinery/tracking.py: --report-to sends metrics.jsonl's numbers to trackio / tensorboard, read back here,
and a missing package is one line before anything loads.

trackio and tensorboard are test requirements (requirements-test.txt), never the project's; each test
that needs one skips only where it is not installed. trackio runs locally: a SQLite file under
TRACKIO_DIR, which trackio reads once, when it is imported, so the run and the read-back happen in
child processes that get it in their environment (nothing here touches ~/.cache).
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import config
import train
from machinery import tracking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TRACKIO = importlib.util.find_spec("trackio") is not None
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def tiny_args(tiny_dir, tmp_path, name="r"):
    """Phase 2 only, from the tiny random model, 2 steps: two records in metrics.jsonl."""
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": f"What is {i}+{i + 1}?", "answer": str(2 * i + 1)})
                            + "\n" for i in range(8)))
    return ["--model", tiny_dir, "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--run-name", name,
            "--quiet", "--threads", "1", "--max-new-tokens", "8", "--batch-questions", "4", "--micro-batch", "2",
            "--lr", "1e-3", "--save-every", "1", "--no-eval", "--gen-batch", "8", "--phase", "distill",
            "--steps", "2"]


def records(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def test_keys_carry_the_phase_and_only_numbers_go():
    rec = {"phase": "srt", "method": "sdzero", "step": 3, "stage": "joint", "loss": 1.5, "skipped": True,
           "generations": 7}
    assert tracking.scalars(rec) == {"srt/loss": 1.5, "srt/skipped": 1, "srt/generations": 7}


@pytest.mark.parametrize("backend,module", [("trackio", "trackio"), ("wandb", "wandb"),
                                            ("tensorboard", "torch.utils.tensorboard")])
def test_missing_backend_is_one_line_before_anything_loads(monkeypatch, tmp_path, backend, module):
    monkeypatch.setitem(sys.modules, module, None)          # `import <module>` now raises ImportError
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        train.main(["--model", str(tmp_path / "no-such-model"), "--runs-dir", str(runs), "--report-to", backend])
    assert str(e.value) == f"error: --report-to {backend} needs `pip install {backend}`"
    assert not runs.exists()                               # stopped before the model, the data, the folder


def test_none_opens_nothing(tmp_path):
    assert config.build_parser().parse_args([]).report_to == "none"
    assert tracking.start("none", str(tmp_path), {}) is None


@pytest.mark.skipif(not HAS_TRACKIO, reason="trackio not installed (requirements-test.txt)")
def test_trackio_gets_every_number_of_metrics_jsonl(tmp_path, tiny_dir):
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "TRACKIO_PROJECT": "sdzero-test"}
    args = tiny_args(tiny_dir, tmp_path, name="live") + ["--report-to", "trackio"]
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = records(tmp_path / "runs" / "live")
    assert [r["step"] for r in logged] == [1, 2]

    def cli(*what):                                   # trackio's own read-back, as a researcher would
        out = subprocess.run([sys.executable, "-m", "trackio.cli", "get", *what, "--project", "sdzero-test",
                              "--run", "live", "--json"], env=env, capture_output=True, text=True, timeout=120,
                             check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    run = cli("run")
    assert set(run["metrics"]) >= set(tracking.scalars(logged[0]))     # every field, with its phase prefix
    assert {k.split("/")[0] for k in run["metrics"] if "/" in k and not k.startswith("system")} == {"distill"}
    assert run["config"]["report_to"] == "trackio" and run["config"]["steps"] == 2     # the run's config.json
    for key in ("distill/reward", "distill/loss", "distill/skipped"):
        got = {v["step"]: v["value"] for v in cli("metric", "--metric", key)["values"]}
        assert got == {r["step"]: tracking.scalars(r)[key] for r in logged}, key


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard not installed (requirements-test.txt)")
def test_tensorboard_gets_both_phases_each_on_its_own_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    recs = [{"phase": "srt", "step": 1, "loss": 2.0, "stage": "joint"},
            {"phase": "srt", "step": 2, "loss": 1.5, "stage": "joint"},
            {"phase": "distill", "step": 1, "reward": 0.25, "skipped": False}]
    tracker = tracking.start("tensorboard", str(tmp_path), {"lr": 1e-3})
    for r in recs:
        tracker.log(r)
    tracker.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    got = {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert got == {"srt/loss": [(1, 2.0), (2, 1.5)], "distill/reward": [(1, 0.25)], "distill/skipped": [(1, 0.0)]}


def test_wandb_gives_each_phase_its_own_step_axis(monkeypatch, tmp_path):
    """wandb is not installed here: a stand-in records the calls. wandb drops a step lower than the last
    one, so Phase 2 (from step 1 again after SRT) logs against ``distill/step``, declared once."""
    calls = []

    class FakeRun:
        def define_metric(self, name, step_metric=None):
            calls.append(("define", name, step_metric))

        def log(self, values):
            calls.append(("log", values))

        def finish(self):
            calls.append(("finish",))

    fake = type(sys)("wandb")
    fake.init = lambda **kw: calls.append(("init", kw["project"], kw["name"], kw["config"])) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    tracker = tracking.start("wandb", str(tmp_path / "myrun"), {"lr": 1e-3})
    for rec in [{"phase": "srt", "step": 2, "loss": 1.0}, {"phase": "distill", "step": 1, "reward": 0.5},
                {"phase": "distill", "step": 2, "reward": 0.75}]:
        tracker.log(rec)
    tracker.close()
    assert calls == [("init", "sd-zero", "myrun", {"lr": 1e-3}),
                     ("define", "srt/step", None), ("define", "srt/*", "srt/step"),
                     ("log", {"srt/loss": 1.0, "srt/step": 2}),
                     ("define", "distill/step", None), ("define", "distill/*", "distill/step"),
                     ("log", {"distill/reward": 0.5, "distill/step": 1}),
                     ("log", {"distill/reward": 0.75, "distill/step": 2}), ("finish",)]
