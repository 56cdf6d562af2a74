"""machinery/run.py — the run folder for the six files: config, metrics, checkpoints, exact resume.

Not the paper. train.py's loops (SD-Zero's Algorithm 1) call ``Run.restore`` once before a loop and
``Run.save`` once per checkpointed step; this file is what makes a multi-day run safe to kill:

* ``Run``        — runs/<name>/: config.json, metrics.jsonl, checkpoint.pt and Hugging Face folders.
                   ``restore`` + ``save`` give exact resume after a kill -9 (same data order, same
                   samples, same optimizer state).
* RNG state      — ``seed_all``, ``rng_state``, ``set_rng_state``: every generator a run draws from.
* ``atomic_torch_save`` and ``progress`` (a tqdm bar that a --quiet run turns off).

``Run.metric`` also hands each record to the run's tracker, if --report-to chose one (tracking.py).

Under torchrun only rank 0 writes; sharded checkpoints go through distributed.py (DCP).
"""
from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import torch
from tqdm.auto import tqdm

from data import read_jsonl
from machinery import distributed


# --------------------------------------------------------------------------------------------
# RNG state and atomic writes
# --------------------------------------------------------------------------------------------
def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed + 1_000_003 * distributed.rank())   # distributed: each rank its own samples


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj, path: str) -> None:
    """Write then rename: a kill -9 mid-write leaves the previous checkpoint intact."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def progress(total: int, desc: str, initial: int = 0, quiet: bool = False):
    """A tqdm bar; with quiet, a disabled one (its update/close do nothing), so loops need no ifs."""
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, disable=quiet)


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------
PHASE_ORDER = {"srt": 0, "distill": 1}


class Run:
    """runs/<name>/ and what is in it; ``ckpt`` is the checkpoint a --resume continues from."""

    def __init__(self, run_dir: str, config: dict, resume: bool, tracker=None):
        self.dir = run_dir
        self.tracker = tracker                        # tracking.py: live curves (--report-to), or None
        self.metrics = os.path.join(run_dir, "metrics.jsonl")
        ckpt_path = self.path("checkpoint.pt")
        self.main = distributed.is_main()             # distributed: rank 0 alone writes the folder
        os.makedirs(run_dir, exist_ok=True)
        if self.main:
            json.dump(config, open(self.path("config.json"), "w"), indent=1, default=str)
        self.ckpt = None
        if resume and os.path.exists(ckpt_path):
            self.ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            self._truncate_metrics(self.ckpt["phase"], self.ckpt["step"])
            logged = read_jsonl(self.metrics) if self.main and os.path.exists(self.metrics) else []
            if not any(r.get("phase") == self.ckpt["phase"] and r.get("step") == self.ckpt["step"]
                       for r in logged):
                self.metric(self.ckpt["last"])       # killed between the checkpoint and its log line
        elif self.main and os.path.exists(self.metrics):
            os.remove(self.metrics)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @staticmethod
    def say(msg: str) -> None:
        if distributed.is_main():
            print(msg, flush=True)

    def metric(self, rec: dict) -> None:
        if not self.main:
            return
        with open(self.metrics, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tracker is not None:
            self.tracker.log(rec)                     # the same record, to trackio / wandb / tensorboard

    def close(self) -> None:
        """End the tracker's run (the folder itself needs no closing); train.finish_run calls it."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def last_metric(self) -> dict:
        return read_jsonl(self.metrics)[-1]

    def _truncate_metrics(self, phase: str, step: int) -> None:
        """On resume: drop records of steps the checkpoint does not contain (they will be redone)."""
        if not self.main or not os.path.exists(self.metrics):
            return
        keep = []
        for line in open(self.metrics):
            rec = json.loads(line)
            ph = PHASE_ORDER.get(rec.get("phase"), -1)
            if ph < PHASE_ORDER[phase] or (ph == PHASE_ORDER[phase] and rec.get("step", 0) <= step):
                keep.append(line)
        with open(self.metrics, "w") as f:
            f.writelines(keep)

    def resuming(self, phase: str) -> bool:
        return self.ckpt is not None and self.ckpt["phase"] == phase

    def restore(self, phase: str, model, opt, sched) -> dict:
        """Put a checkpoint of ``phase`` back into model, optimizer, schedule and RNG.

        Returns the checkpoint (its "step" is where the loop continues, plus whatever the loop
        saved with it), or {"step": 0} when this phase starts fresh.
        """
        if not self.resuming(phase):
            return {"step": 0}
        if distributed.active() or "dcp" in self.ckpt:   # distributed: sharded checkpoint (DCP)
            saved = distributed.restore(self, phase, model, opt, sched)
        else:
            saved = self.ckpt
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])                  # last: nothing above may draw after it
        return saved

    def save(self, phase: str, step: int, model, opt, sched, last: dict, **extra) -> None:
        """One atomic checkpoint: weights, optimizer, schedule, RNG and the step's metrics record."""
        if distributed.active():                          # distributed: sharded checkpoint (DCP)
            return distributed.save(self, phase, step, model, opt, sched, last, extra, rng_state())
        self.write_checkpoint({"phase": phase, "step": step, "model": model.state_dict(),
                               "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                               "rng": rng_state(), "last": last, **extra})

    def write_checkpoint(self, obj: dict) -> None:
        """checkpoint.pt, atomically (distributed.save calls it on rank 0 too)."""
        atomic_torch_save(obj, self.path("checkpoint.pt"))

    def save_hf(self, model, tok, name: str) -> str:
        """An ordinary Hugging Face folder, written beside and renamed into place."""
        if distributed.active():                          # distributed: gathered, rank 0 writes
            return distributed.save_hf(self, model, tok, name)
        path = self.path(name)
        tmp = path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return path
