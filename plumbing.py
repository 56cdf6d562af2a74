"""plumbing.py — everything a training loop needs that is not the paper.

train.py reads as SD-Zero's two loops (arXiv 2604.12002, Alg. 1); what keeps those loops safe to run
for days lives here, so that it does not stand between the reader and the method:

* ``Run``        — the run folder runs/<name>/: config.json, metrics.jsonl, checkpoint.pt and Hugging
                   Face folders. One ``restore`` and one ``save`` call per loop give exact resume
                   after a kill -9 (same data order, same samples).
* ``AdamW``      — AdamW that trains bf16 weights correctly: fp32 moments, fp32 update, stochastic
                   rounding back to bf16 (why: see the class).
* schedules      — the SRT cosine, the official Phase-2 warm-up-then-constant, and
                   ``plateau_reached``: when to re-sync the teacher (Fig. 5's "at saturation").
* ``step_optimizer`` + ``BadSteps`` — clip, skip a non-finite step, stop if it keeps happening.
* RNG state, atomic writes, a progress bar.

Under torchrun (distributed.py) the same objects serve every rank: only rank 0 writes files, and
checkpoints go through torch.distributed.checkpoint; the lines that differ are marked
``# distributed:``. The held-out table, which is evaluation, is in heldout.py.

Floor: this file imports only the ground floor (distributed.py, data.py), none of the loops, so
every loop and every benchmark can use it.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

import distributed
from data import read_jsonl


# --------------------------------------------------------------------------------------------
# RNG state and atomic writes
# --------------------------------------------------------------------------------------------
def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed + 1_000_003 * distributed.rank())   # distributed: each rank its own samples


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


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

    def __init__(self, run_dir: str, config: dict, resume: bool):
        self.dir = run_dir
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
            ck = distributed.restore(self, phase, model, opt, sched)
        else:
            ck = self.ckpt
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])                     # last: nothing above may draw after it
        return ck

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



# --------------------------------------------------------------------------------------------
# The optimizer: AdamW on bf16 weights
# --------------------------------------------------------------------------------------------
def stochastic_round_bf16(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> bf16, rounding up with probability equal to the dropped fraction (unbiased).

    bf16 keeps 16 of fp32's 32 bits. Adding a random 16-bit integer to the bit pattern and then
    cutting the low 16 bits rounds up exactly as often as the cut-off part is large.
    """
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, device=x.device, dtype=torch.int32)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


class AdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) that also trains **bf16 weights** correctly.

    Why not torch.optim.AdamW on bf16 weights: an update of lr·(m/√v) ≈ 5e-6 (the paper's lr) is far
    below half a bf16 step of a weight of size 1e-2 (≈ 4e-5), so round-to-nearest throws almost
    every update away and the model silently does not train. fp32 master weights would fix it but
    cost 16 GB more for a 4B model (no longer fits one 80 GB GPU beside the teacher). Here the
    moments are fp32, the update is computed in fp32, and the result is *stochastically* rounded
    back to bf16, so each weight moves by the right amount on average. fp32 weights take the exact
    textbook path (tests compare it with torch.optim.AdamW).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore, keeping the moments in fp32.

        torch's Optimizer.load_state_dict casts every floating-point state tensor to its parameter's
        dtype. For bf16 weights that would turn m and v into bf16 on --resume: the run would not
        continue exactly, and v (≈ g², updated by 0.001·g² per step) would stop decaying in bf16.
        So the saved fp32 moments are put back after torch's load, matched by position.
        """
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            for key in ("m", "v"):
                if key in saved.get(i, {}):
                    self.state[p][key] = saved[i][key].to(device=p.device, dtype=torch.float32,
                                                          copy=True)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p, dtype=torch.float32)
                    st["v"] = torch.zeros_like(p, dtype=torch.float32)
                st["step"] += 1
                # distributed: under FSDP2 p, its grad and m, v are DTensor shards; the update is
                # elementwise, so each rank updates its own shard (local() is the identity otherwise).
                p_, m, v = distributed.local(p), distributed.local(st["m"]), distributed.local(st["v"])
                g = distributed.local(p.grad).float()
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = m / (1 - b1 ** st["step"])
                v_hat = v / (1 - b2 ** st["step"])
                w = p_.float()
                w.mul_(1 - group["lr"] * group["weight_decay"])
                w.addcdiv_(m_hat, v_hat.sqrt_().add_(group["eps"]), value=-group["lr"])
                p_.copy_(stochastic_round_bf16(w) if p_.dtype == torch.bfloat16 else w.to(p_.dtype))


def make_optimizer(model, lr, wd, betas):
    return AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=wd,
                 betas=betas)


def cosine_schedule(opt, total: int, warmup: int):
    """Linear warm-up then cosine to 0 (paper: AdamW, cosine schedule for SRT)."""
    def f(step):
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def warmup_constant_schedule(opt, warmup: int):
    """Official Phase-2 schedule: linear warm-up from 0.1x over ``warmup`` steps, then constant."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * min(1.0, s / max(warmup, 1)) if warmup else 1.0)


# Teacher sync on a plateau (paper Fig. 5). The paper syncs the teacher once, by hand, when round-1
# distillation "saturates" (~step 400 of Qwen3-4B); syncing on a fixed period instead hurts the toy
# badly (docs/differences.md, "Teacher sync"). This is that judgement written down as a rule, so it
# can be measured:
#   the mean reward of the last P steps (one value per step, so a window of P batches) has not
#   risen by more than PLATEAU_DELTA above its best for P steps  ->  sync, then start over.
# A fresh window after a sync means a second sync needs a second plateau (at least 2P more steps).
# The state is a plain dict that the checkpoint carries, so a resumed run syncs at the same step.
PLATEAU_DELTA = 0.01


def plateau_reached(state: dict, reward: float, step: int, patience: int) -> bool:
    """Feed one Phase-2 step's mean reward; True when the rule above says: sync now (state resets)."""
    window = state.setdefault("window", [])
    window.append(reward)
    del window[:-patience]
    if len(window) < patience:
        return False
    mean = sum(window) / patience
    if "best" not in state or mean > state["best"] + PLATEAU_DELTA:
        state["best"], state["best_step"] = mean, step
        return False
    if step - state["best_step"] < patience:
        return False
    state.clear()
    return True


def step_optimizer(model, opt, sched, clip: float) -> tuple[float, bool]:
    """Clip, check for NaN/inf, then step. A non-finite gradient skips the update (and is counted)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip) if params else torch.tensor(0.0)
    ok = bool(torch.isfinite(norm))
    if ok:
        opt.step()
    opt.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # The schedule follows the step counter, skipped steps included (their data is consumed
        # too), so a skip before any update is intended; torch would warn about it.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        sched.step()
    return float(norm), ok


class BadSteps:
    """Skip a NaN/inf step, count it, stop with a clear message if it keeps happening."""

    def __init__(self, limit: int):
        self.limit, self.run, self.total = limit, 0, 0

    def update(self, ok: bool, where: str) -> None:
        if ok:
            self.run = 0
            return
        self.run += 1
        self.total += 1
        print(f"warning: non-finite loss or gradient at {where}; step skipped", flush=True)
        if self.run >= self.limit:
            raise SystemExit(f"error: {self.run} consecutive non-finite steps (last at {where}). "
                             "Lower the learning rate, check the data, or try fp32.")
