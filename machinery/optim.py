"""machinery/optim.py — the optimizer step for train.py's loops: bf16-safe AdamW, schedules, clipping.

Not the paper, which says only "AdamW, cosine schedule, lr 5e-6" for SRT and gives Phase 2's lr:

* ``AdamW``                 — AdamW that also trains bf16 weights (fp32 moments, stochastic rounding).
* ``cosine_schedule``       — SRT's warm-up then cosine; ``warmup_constant_schedule`` — the official
                              code's Phase-2 warm-up then constant.
* ``step_optimizer``        — clip, skip a non-finite step, step; ``BadSteps`` stops a run that keeps
                              producing NaN/inf.
"""
from __future__ import annotations

import math
import warnings

import torch

from machinery import distributed


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
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, dtype=torch.float32)
                    state["v"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                # distributed: under FSDP2 p, its grad and m, v are DTensor shards; the update is
                # elementwise, so each rank updates its own shard (local() is the identity otherwise).
                p_, m, v = distributed.local(p), distributed.local(state["m"]), distributed.local(state["v"])
                g = distributed.local(p.grad).float()
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = m / (1 - b1 ** state["step"])
                v_hat = v / (1 - b2 ** state["step"])
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
