"""machinery/tracking.py — live curves for train.py: each metrics.jsonl record also to trackio, wandb or tensorboard.

Not the paper. A multi-hour GPU run writes one record per optimizer step to runs/<name>/metrics.jsonl
(machinery/run.py), and report.py draws it once the run is over. Researchers watch a run while it
goes in the dashboard they already use: the transformers ``Trainer`` and TRL take ``report_to`` =
trackio / wandb / tensorboard, and ``--report-to`` (config.py) is the same switch here.

    python train.py --report-to trackio      # then: trackio show        (pip install trackio)
    python train.py --report-to wandb        # the run's page on wandb.ai (pip install wandb; wandb login)
    python train.py --report-to tensorboard  # tensorboard --logdir runs   (pip install tensorboard)

What goes there, and what does not change:

* the SAME numbers as metrics.jsonl: ``Run.metric`` hands each record to ``Tracker.log``. Keys get
  the record's phase as a prefix (``srt/loss``, ``distill/reward``), the way Trainer logs
  ``train/loss`` and ``eval/loss``; ``step`` is the record's step. Strings (method, stage) are
  dropped, and True/False become 1/0. metrics.jsonl stays the record every tool here reads.
* the run's config (config.json) is the tracker's run config; the run folder's name is the run's
  name and the project is ``sd-zero`` (TRACKIO_PROJECT / WANDB_PROJECT override it, as in Trainer).
* under torchrun only rank 0 logs (``distributed.is_main``), as only rank 0 writes the run folder.

Each backend is imported only when chosen, so none of them is a requirement (requirements.txt
names their install lines). ``require`` is called while the arguments are read (config.resolve):
a missing package stops the run with one line before any model is loaded. ``start`` (train.open_run)
opens the tracker's run once, ``Run.close`` (train.finish_run) ends it.
"""
from __future__ import annotations

import json
import os

from machinery import distributed

BACKENDS = ("none", "trackio", "wandb", "tensorboard")
INSTALL = {"trackio": "pip install trackio", "wandb": "pip install wandb", "tensorboard": "pip install tensorboard"}
PROJECT = "sd-zero"


def _import(backend: str):
    """The backend's module (for tensorboard: torch's writer class, which needs the package)."""
    if backend == "trackio":
        import trackio  # optional: only with --report-to trackio
        return trackio
    if backend == "wandb":
        import wandb  # optional: only with --report-to wandb
        return wandb
    from torch.utils.tensorboard import SummaryWriter  # optional: needs `tensorboard`, only with --report-to it
    return SummaryWriter


def require(backend: str) -> None:
    """Stop with one line, before anything is loaded, when the chosen backend is not installed."""
    if backend in (None, "none"):
        return
    try:
        _import(backend)
    except ImportError:
        raise SystemExit(f"error: --report-to {backend} needs `{INSTALL[backend]}`") from None


def scalars(rec: dict) -> dict:
    """One metrics.jsonl record -> {"<phase>/<field>": number}: the numbers only, without the step."""
    phase = rec.get("phase", "train")
    return {f"{phase}/{k}": (int(v) if isinstance(v, bool) else v) for k, v in rec.items()
            if k != "step" and isinstance(v, (int, float))}


class Tracker:
    """One open run of one backend: ``log`` each record, ``close`` once at the end."""

    def __init__(self, backend: str, run_dir: str, config: dict, resume: bool):
        self.backend = backend
        self.seen = set()                     # phases whose step axis wandb has been told about
        name = os.path.basename(os.path.normpath(run_dir))
        config = json.loads(json.dumps(config, default=str))    # what config.json holds: plain values
        module = _import(backend)
        if backend == "trackio":
            # Local by default: a SQLite file under ~/.cache/huggingface/trackio (TRACKIO_DIR moves it;
            # TRACKIO_SPACE_ID sends it to a Hugging Face Space instead). A --resume continues the same
            # trackio run; steps redone after the checkpoint are logged again at the same step.
            self.trackio = module
            module.init(project=os.environ.get("TRACKIO_PROJECT", PROJECT), name=name, config=config,
                        resume="allow" if resume else "never")
        elif backend == "wandb":
            self.wandb = module.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=name, config=config,
                                     dir=run_dir)
        else:
            # Beside the run's other files; `tensorboard --logdir runs` finds every run's folder.
            self.writer = module(log_dir=os.path.join(run_dir, "tensorboard"))
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```")

    def log(self, rec: dict) -> None:
        values, step = scalars(rec), rec.get("step", 0)
        if self.backend == "trackio":
            self.trackio.log(values, step=step)
        elif self.backend == "wandb":
            # wandb drops a step lower than the last one, and Phase 2 counts from 1 again after SRT:
            # each phase gets its own step axis (``<phase>/step``), wandb's way for several counters.
            phase = rec.get("phase", "train")
            if phase not in self.seen:
                self.seen.add(phase)
                self.wandb.define_metric(f"{phase}/step")
                self.wandb.define_metric(f"{phase}/*", step_metric=f"{phase}/step")
            self.wandb.log({**values, f"{phase}/step": step})
        else:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()                   # live: on disk at every step, not every two minutes

    def close(self) -> None:
        if self.backend == "trackio":
            self.trackio.finish()               # waits until every queued value is in the database
        elif self.backend == "wandb":
            self.wandb.finish()
        else:
            self.writer.close()


def start(backend: str, run_dir: str, config: dict, resume: bool = False) -> Tracker | None:
    """The run's tracker, or None: with --report-to none, and on every rank but 0."""
    if backend in (None, "none") or not distributed.is_main():
        return None
    require(backend)
    return Tracker(backend, run_dir, config, resume)
