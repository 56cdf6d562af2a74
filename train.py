"""train.py — SD-Zero end to end: Phase 1 (SRT) then Phase 2 (on-policy self-distillation).

    python train.py                                    # embedded toy world on a laptop CPU (~8 min)
    python train.py --model Qwen/Qwen3-4B-Instruct-2507 --data openr1.jsonl --question-field problem

Paper: Self-Distillation Zero, arXiv 2604.12002 (digest: shared/paper.md).

Phase 1 — Self-Revision Training (§2.1, eq. 1–3). On questions N1: sample y_init, grade it, append
P_r ("rephrase" if right, "start over" if wrong), sample n revisions, keep the verified-correct ones,
then fine-tune on  L_SRT = L_rev + L_gen  over  X + Y_init' + S(P_r) + Y_rev.

Phase 2 — self-distillation (§2.2, eq. 4). On disjoint questions N2, each step: the student (generator)
samples y ~ π_θ(·|x); the verifier gives r; the frozen teacher (the SRT weights, acting as reviser)
reads X + Y' + S(P_r) + Y under no_grad and keeps its top-k logits at the positions of the second Y;
the student minimises Σ_t KL(π_θ(·|x, y<t) ‖ π_T(·|x, y, P_r, y<t)). Every N steps the teacher can be
re-synchronised to the student (teacher := student; Fig. 5). 0 = frozen teacher (paper default).

Binary reward → which phrase the teacher reads → a dense, per-token target. That is the whole trick.

Defaults (``KNOBS``) come from the paper; where the paper is silent, from the official code (each
``--help`` line says which). With no ``--model`` the toy column of ``KNOBS`` replaces the values that
only make sense for a 4B model (a 0.8M-parameter model trained from scratch needs a far larger
learning rate). The baselines of paper Table 1 (``--method rft|grpo|sdft``, baselines.py) run
through the same loops, checkpoints and generation accounting.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
import warnings

import numpy as np
import torch

import data as data_mod
import distill
from evaluate import evaluate_model, fmt_pct, json_safe
from generate import ModelLoadError, eos_ids, load_model, prompt_ids, rollout, rollout_metrics
from revise import (P_CORRECT, P_WRONG, Phrases, collect_revisions, distill_on_policy,
                    fit_teacher_budget, grade, phrase_ids, reviser_prompt, srt_backward, srt_example)

# (flag, paper default, toy default, help incl. source)
KNOBS = [
    ("phase1_questions", 6000, 700, "questions in N1 for Phase 1; the rest are N2 (paper Table 13's best "
     "split of 15K: 6K/9K; App. C.1 collects on 10K, see README); <1 = fraction"),
    ("max_traces", 6000, 0, "keep at most this many verified revisions for SRT, a seeded random subset "
     "(paper App. C.1: 6K); 0 = all"),
    ("n_init", 1, 1, "initial responses per Phase-1 question (paper App. C.1; code script: 3)"),
    ("n_rev", 3, 3, "revisions per initial response (paper App. C.1; code: 3)"),
    ("srt_epochs", 3, 1, "SRT epochs (paper silent; official code: 3 per stage)"),
    ("srt_steps", 0, 260, "SRT optimizer steps; 0 = --srt-epochs decide (toy: a fixed number)"),
    ("srt_lr", 5e-6, 1e-3, "SRT learning rate, AdamW cosine (paper: 5e-6)"),
    ("srt_batch_size", 8, 32, "SRT examples per optimizer step (paper silent)"),
    ("srt_warmup", 0.05, 0.07, "SRT warm-up fraction (official code: 0.05)"),
    ("srt_weight_decay", 1e-4, 0.01, "SRT AdamW weight decay (official code: 1e-4)"),
    ("steps", 0, 200, "Phase-2 optimizer steps; 0 = --phase2-epochs passes over N2 (official code: "
     "max_num_steps=1000, max_num_epochs=5)"),
    ("phase2_epochs", 1.0, 1.0, "with --steps 0: passes over N2, rounded up to whole steps (paper "
     "App. C.2 counts 9K Phase-2 generations: one pass, 1 rollout per question)"),
    ("batch_questions", 128, 32, "Phase-2 and SDFT questions per step (official code: 128); "
     "GRPO: --grpo-batch-questions"),
    ("rollouts_per_question", 1, 1, "Phase-2 rollouts per question (paper Table 6: 1)"),
    ("lr", 5e-6, 3e-4, "Phase-2 and SDFT learning rate (paper: 5e-6); GRPO uses --grpo-lr"),
    ("warmup_steps", 20, 10, "Phase-2 linear warm-up from 0.1x then constant (official code: 20)"),
    ("weight_decay", 0.01, 0.0, "Phase-2 AdamW weight decay (official code: 0.01)"),
    ("temperature", 0.7, 0.7, "training-time sampling temperature (paper: 0.7; code: 1.0)"),
    ("top_p", 1.0, 1.0, "training-time top-p (official code: 1.0)"),
    ("max_new_tokens", 16384, 96, "max generated tokens per response (paper: 16K)"),
    ("max_teacher_tokens", 32768, 4096, "cap on |X|+2|Y|+|S| for the teacher; Y truncated beyond (code: 32768)"),
    ("kl", "reverse", "reverse", "divergence: reverse = KL(student||teacher), eq. 4; forward; mixed (official code)"),
    ("mix", 0.5, 0.5, "forward weight of --kl mixed (official code: 0.5)"),
    ("support", "topk", "topk", "KL support: topk (teacher top-k, renormalised; paper/code), full, sampled"),
    ("topk", 64, 64, "teacher top-k (paper Table 6: 64)"),
    ("norm", "token_mean", "token_mean", "token_mean over the batch (official code) or seq_sum (eq. 4 literally)"),
    ("teacher_sync", 0, 0, "teacher := student every N Phase-2 steps; 0 = frozen SRT teacher (paper §2.2, Fig. 5)"),
    ("grad_clip", 1.0, 1.0, "gradient-norm clip (official code: 1.0)"),
    ("micro_batch", 1, 64, "sequences per forward/backward in Phase 2 and SRT (memory knob; README)"),
    ("gen_batch", 4, 128, "sequences per generate() call (KV-cache memory knob; README)"),
    ("eval_questions", 500, 300, "held-out questions for the final table (paper: 500 held-out)"),
    ("eval_k", 1, 1, "samples per held-out question (paper: avg@8)"),
    ("grpo_lr", 1e-6, 5e-5, "GRPO learning rate (paper silent; 1e-6 is DAPO's; toy: sweep in README)"),
    ("grpo_batch_questions", 32, 8, "GRPO questions per update, x --grpo-n rollouts each (paper silent)"),
    ("sdft_context", "user", "assistant", "SDFT teacher: demonstration in the user turn (SDFT paper) or as an "
     "earlier correct answer + 'rephrase' in the assistant turn (the toy cannot read instructions)"),
    ("save_every", 25, 1, "checkpoint every N steps (atomic; toy: every step)"),
]


def _count_or_fraction(s: str):
    return float(s) if "." in s else int(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="HF id or local folder (paper: Qwen/Qwen3-4B-Instruct-2507). Omit for the toy world.")
    p.add_argument("--data", default=None, help="training questions: JSONL file or HF dataset id")
    p.add_argument("--test-data", default=None, help="held-out questions for the final table")
    p.add_argument("--task", choices=["math", "code"], default="math")
    p.add_argument("--question-field", default="question", help="e.g. 'problem' for OpenR1-Math-220k")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--tests-field", default="tests")
    p.add_argument("--split", default="train", help="split for an HF dataset id")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--method", choices=["sdzero", "rft", "grpo", "sdft"], default="sdzero",
                   help="sdzero (this paper) or a baseline of paper Table 1 at the same generation budget")
    p.add_argument("--budget", type=int, default=0,
                   help="baselines: generations to spend (default: what SD-Zero's settings would use)")
    p.add_argument("--grpo-n", type=int, default=4,
                   help="GRPO rollouts per question (paper budget table: 4; Table 5: 8)")
    p.add_argument("--solution-field", default="solution",
                   help="SDFT demonstration field on real data (OpenR1-Math: 'solution'); the toy writes its own")
    p.add_argument("--phase", choices=["all", "srt", "distill"], default="all",
                   help="srt = Phase 1 only; distill = Phase 2 only, from --model (no SRT: Table 12 control "
                        "when --model is a base model)")
    p.add_argument("--srt-loss", choices=["joint", "sequential"], default="joint",
                   help="joint L_rev + L_gen (paper eq. 3) or the official code's two stages "
                        "(stage 1: L_gen on wrong-init tuples, stage 2: L_rev)")
    p.add_argument("--revise-correct", type=int, choices=[0, 1], default=1,
                   help="also revise correct y_init with the 'rephrase' phrase (paper: 1; official code: 0)")
    p.add_argument("--revisions", default=None,
                   help="SRT on this Phase-1 revisions JSONL (revisions.jsonl of an earlier run) instead "
                        "of collecting; counts as 0 generations")
    p.add_argument("--p-correct", default=P_CORRECT, help="P_r for r=1 (paper and code)")
    p.add_argument("--p-wrong", default=P_WRONG,
                   help="P_r for r=0 (paper; official Qwen code: 'Wait, this response is wrong. Let me correct it.')")
    for name, paper, toy, help_ in KNOBS:
        kind = _count_or_fraction if name == "phase1_questions" else type(paper)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"{help_} [default: {paper}; toy: {toy}]")
    p.add_argument("--run-name", default=None, help="runs/<name>/ (default: toy or model basename)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoint.pt")
    p.add_argument("--seed", type=int, default=42, help="official code: 42")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: min(2, cores))")
    p.add_argument("--no-grad-ckpt", action="store_true", help="disable gradient checkpointing (on for CUDA)")
    p.add_argument("--no-eval", action="store_true", help="skip the final held-out table")
    p.add_argument("--max-bad-steps", type=int, default=3,
                   help="stop after this many consecutive NaN/inf steps (each is skipped)")
    p.add_argument("--toy-root", default="runs/toy", help="where the toy world is cached")
    p.add_argument("--toy-steps", type=int, default=None,
                   help="pre-training steps of the toy base (default: toy.py's; fewer = a quick, weak base)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def resolve(args) -> argparse.Namespace:
    """Fill every knob left unset with the paper's value, or the toy's when --model is omitted."""
    toy = args.model is None
    for name, paper, toy_value, _ in KNOBS:
        if getattr(args, name) is None:
            setattr(args, name, toy_value if toy else paper)
    if args.kl not in distill.KINDS:
        raise SystemExit(f"error: --kl must be one of {distill.KINDS}")
    if args.support not in distill.SUPPORTS:
        raise SystemExit(f"error: --support must be one of {distill.SUPPORTS}")
    if args.sdft_context not in ("user", "assistant"):
        raise SystemExit("error: --sdft-context must be user or assistant")
    if args.norm not in ("token_mean", "seq_sum"):
        raise SystemExit("error: --norm must be token_mean or seq_sum")
    if args.support == "sampled" and args.kl != "reverse":
        raise SystemExit("error: --support sampled estimates the reverse KL only; use --kl reverse")
    args.toy = toy
    args.run_name = args.run_name or ("toy" if toy else os.path.basename(args.model.rstrip("/")))
    return args


# --------------------------------------------------------------------------------------------
# Small utilities: logging, atomic saves, RNG state
# --------------------------------------------------------------------------------------------
class Log:
    """metrics.jsonl (one object per step) + short human lines on stdout."""

    def __init__(self, run_dir: str, quiet: bool):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.quiet = quiet

    def metric(self, rec: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def truncate_after(self, phase: str, step: int) -> None:
        """On resume: drop records of steps the checkpoint does not contain (they will be redone)."""
        if not os.path.exists(self.path):
            return
        order = {"srt": 0, "distill": 1}
        keep = []
        for line in open(self.path):
            rec = json.loads(line)
            ph = order.get(rec.get("phase"), -1)
            if ph < order[phase] or (ph == order[phase] and rec.get("step", 0) <= step):
                keep.append(line)
        with open(self.path, "w") as f:
            f.writelines(keep)

    def say(self, msg: str) -> None:
        print(msg, flush=True)


def atomic_torch_save(obj, path: str) -> None:
    """Write then rename: a kill -9 mid-write leaves the previous checkpoint intact."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_hf(model, tok, path: str) -> None:
    """An ordinary Hugging Face folder, written beside and renamed into place."""
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


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


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def gen_kwargs(args, batch_size=None) -> dict:
    return {"temperature": args.temperature, "top_p": args.top_p, "top_k": 0,
            "max_new_tokens": args.max_new_tokens, "batch_size": batch_size or args.gen_batch}


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
                g = p.grad.float()
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = st["m"] / (1 - b1 ** st["step"])
                v_hat = st["v"] / (1 - b2 ** st["step"])
                w = p.float()
                w.mul_(1 - group["lr"] * group["weight_decay"])
                w.addcdiv_(m_hat, v_hat.sqrt_().add_(group["eps"]), value=-group["lr"])
                p.copy_(stochastic_round_bf16(w) if p.dtype == torch.bfloat16 else w.to(p.dtype))


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


# --------------------------------------------------------------------------------------------
# Phase 1 — collect verified self-revisions, then SRT
# --------------------------------------------------------------------------------------------
def phase1(args, model, tok, n1, run_dir, log, ckpt) -> None:
    """Collect D_revision on N1 (or reuse it on resume), then SRT; writes revisions.jsonl and srt/."""
    phrases = Phrases(args.p_correct, args.p_wrong)
    rev_path = os.path.join(run_dir, "revisions.jsonl")
    stats_path = os.path.join(run_dir, "phase1_stats.json")
    if args.revisions and (ckpt is None or not os.path.exists(rev_path)):
        try:
            given = [json.loads(l) for l in open(args.revisions) if l.strip()]
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"error: --revisions {args.revisions}: {e}") from None
        write_jsonl_atomic(rev_path, given)
        json.dump({"source": args.revisions, "kept": len(given), "generations": 0, "generated_tokens": 0},
                  open(stats_path, "w"), indent=1)
        log.say(f"[phase 1] {len(given)} revisions from {args.revisions} (no collection)")
    elif ckpt is None or not os.path.exists(rev_path):
        t0 = time.time()
        log.say(f"[phase 1] collecting self-revisions on {len(n1)} questions "
                f"({args.n_init} y_init + {args.n_rev} revisions each)")
        rows, stats = collect_revisions(model, tok, n1, task=args.task, phrases=phrases,
                                        n_init=args.n_init, n_rev=args.n_rev,
                                        revise_correct=bool(args.revise_correct),
                                        gen=gen_kwargs(args), max_traces=args.max_traces, seed=args.seed,
                                        progress=not args.quiet)
        stats["seconds"] = round(time.time() - t0, 1)
        write_jsonl_atomic(rev_path, rows)
        json.dump(stats, open(stats_path, "w"), indent=1)
        log.say(f"[phase 1] y_init correct {stats['y_init_correct']}/{stats['y_init']}, "
                f"revisions correct {stats['revisions_correct']}/{stats['revisions_sampled']}, kept "
                f"{stats['kept']} ({stats['kept_from_wrong_init']} fix wrong, "
                f"{stats['kept_from_correct_init']} rephrase right); {stats['generations']} generations, "
                f"{stats['seconds']:.0f}s")
    rows = [json.loads(l) for l in open(rev_path)]
    stats = json.load(open(stats_path))
    if not rows:
        raise SystemExit("error: Phase 1 kept no verified revision, so SRT has nothing to learn. "
                         "Use more Phase-1 questions, more revisions (--n-rev), or a stronger model.")
    eos = eos_ids(model, tok)
    if any(r["phrase"] not in (phrases.correct, phrases.wrong) for r in rows):
        raise SystemExit("error: the Phase-1 revisions use other control phrases than --p-correct/--p-wrong; "
                         "Phase 2's teacher must read the phrases SRT was trained on")
    examples = [srt_example(r["prompt_ids"], r["y_init_ids"], phrase_ids(tok, r["phrase"]),
                            r["y_rev_ids"], eos) | {"wrong_init": r["reward_init"] < 0.5} for r in rows]
    stages = [("joint", examples)] if args.srt_loss == "joint" else \
        [("gen", [e for e in examples if e["wrong_init"]] or examples), ("rev", examples)]
    sft_loop(args, model, tok, stages, run_dir, log, ckpt, (stats["generations"], stats["generated_tokens"]),
             out_dir=os.path.join(run_dir, "srt"), label="SRT")


def write_jsonl_atomic(path: str, rows: list[dict]) -> None:
    with open(path + ".tmp", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(path + ".tmp", path)


def sft_loop(args, model, tok, stages, run_dir, log, ckpt, budget, out_dir, label="SRT") -> None:
    """Supervised fine-tuning on fixed examples: SRT (eq. 3, or the code's two stages) and RFT.

    ``stages`` is a list of (loss mode, examples); the whole schedule of (mode, batch) steps is
    drawn from the seed up front, so the step number alone tells a resumed run where it was.
    """
    rng = random.Random(args.seed)
    plan = []
    for mode, pool in stages:
        n = args.srt_steps or max(1, math.ceil(len(pool) / args.srt_batch_size)) * args.srt_epochs
        order = []
        while len(order) < n * args.srt_batch_size:
            idx = list(range(len(pool)))
            rng.shuffle(idx)
            order += idx
        plan += [(mode, [pool[i] for i in order[k * args.srt_batch_size:(k + 1) * args.srt_batch_size]])
                 for k in range(n)]

    model.train()
    opt = make_optimizer(model, args.srt_lr, args.srt_weight_decay, (0.9, 0.95))
    sched = cosine_schedule(opt, len(plan), int(args.srt_warmup * len(plan)))
    start = 0
    if ckpt is not None and ckpt["phase"] == "srt":
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        start = ckpt["step"]
        log.say(f"[{label}] resuming at step {start}/{len(plan)}")
    bad = BadSteps(args.max_bad_steps)
    gens, gen_tokens = budget
    t0 = time.time()
    bar = None if args.quiet else _bar(len(plan), label, start)
    for step in range(start, len(plan)):
        mode, batch = plan[step]
        loss = srt_backward(model, batch, mode, tok.pad_token_id, args.micro_batch)
        lr = sched.get_last_lr()[0]
        norm, ok = step_optimizer(model, opt, sched, args.grad_clip)
        ok = ok and math.isfinite(loss)
        bad.update(ok, f"{label} step {step + 1}")
        rec = {"phase": "srt", "method": args.method, "step": step + 1, "stage": mode, "loss": loss,
               "grad_norm": norm, "lr": lr, "skipped": not ok, "generations": gens,
               "generated_tokens": gen_tokens, "seconds": round(time.time() - t0, 2)}
        if (step + 1) % args.save_every == 0 or step + 1 == len(plan):
            atomic_torch_save({"phase": "srt", "step": step + 1, "model": model.state_dict(),
                               "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                               "rng": rng_state(), "last": rec}, os.path.join(run_dir, "checkpoint.pt"))
        log.metric(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    if bar is not None:
        bar.close()
    save_hf(model, tok, out_dir)
    log.say(f"[{label}] done: {len(plan)} steps on {sum(len(p) for _, p in stages)} examples, "
            f"{time.time() - t0:.0f}s -> {out_dir}")


# --------------------------------------------------------------------------------------------
# Phase 2 — on-policy self-distillation from the reviser
# --------------------------------------------------------------------------------------------
def phase2_order(n: int, seed: int, upto: int) -> list[int]:
    """Question order for Phase 2: reshuffled every pass over N2, determined by the seed alone, so
    the step number is the whole "data position" a resume needs."""
    order, epoch = [], 0
    while len(order) < upto:
        idx = list(range(n))
        random.Random(seed * 1000 + epoch).shuffle(idx)
        order += idx
        epoch += 1
    return order


def distill_step(args, student, teacher, tok, items, phrases, eos) -> dict:
    """One Phase-2 step on a batch of fresh questions; returns metrics (gradients accumulated)."""
    xs = [prompt_ids(tok, it["question"], args.task) for it in items]
    rolls = rollout(student, tok, xs, n=args.rollouts_per_question, **gen_kwargs(args))
    rewards = grade(args.task, [r.text for r in rolls], [items[r.index] for r in rolls], phrases)
    s_ids = {p: phrase_ids(tok, p) for p in (phrases.correct, phrases.wrong)}
    X = [r.prompt_ids for r in rolls]
    S = [s_ids[phrases.pick(rw)] for rw in rewards]
    Y = [fit_teacher_budget(len(x), r.completion_ids, len(s), args.max_teacher_tokens)
         for x, r, s in zip(X, rolls, S)]
    # The teacher reads X + Y' + S(P_r) and scores the same Y tokens the student sampled (eq. 4).
    T = [reviser_prompt(x, y, s, eos) for x, y, s in zip(X, Y, S)]
    out = distill_on_policy(student, teacher, X, T, Y, tok.pad_token_id, micro_batch=args.micro_batch,
                            norm=args.norm, k=args.topk, kind=args.kl, mix=args.mix, support=args.support,
                            temperature=args.temperature)
    return {**out, **rollout_metrics(rolls, rewards), "scored_tokens": sum(len(y) for y in Y)}


def phase2(args, student, teacher, tok, n2, run_dir, log, ckpt, base_budget, step_fn=None,
           label="SD-Zero") -> None:
    """The on-policy loop: fresh questions each step -> step_fn (rollouts, reward, loss, backward)
    -> clip + optimizer step -> optional teacher sync -> metrics + atomic checkpoint.

    step_fn(items) defaults to SD-Zero's distill_step; GRPO (teacher=None) and SDFT (baselines.py)
    plug in here, so every on-policy method shares the loop, teacher sync, accounting and resume.
    """
    phrases = Phrases(args.p_correct, args.p_wrong)
    eos = eos_ids(student, tok)
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if step_fn is None:
        def step_fn(items):
            return distill_step(args, student, teacher, tok, items, phrases, eos)
    student.train()
    opt = make_optimizer(student, args.lr, args.weight_decay, (0.9, 0.999))
    sched = warmup_constant_schedule(opt, args.warmup_steps)
    start, syncs = 0, 0
    gens, gen_tokens = base_budget
    if ckpt is not None and ckpt["phase"] == "distill":
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, syncs = ckpt["step"], ckpt["syncs"]
        gens, gen_tokens = ckpt["generations"], ckpt["generated_tokens"]
        if "teacher" in ckpt:
            teacher.load_state_dict(ckpt["teacher"])
        set_rng_state(ckpt["rng"])
        log.say(f"[{label}] resuming at step {start}/{args.steps}")
    order = phase2_order(len(n2), args.seed, args.steps * args.batch_questions)
    bad = BadSteps(args.max_bad_steps)
    t0 = time.time() - (ckpt["last"]["seconds"] if ckpt is not None and ckpt["phase"] == "distill" else 0)
    bar = None if args.quiet else _bar(args.steps, label, start)
    for step in range(start, args.steps):
        pos = step * args.batch_questions
        items = [n2[i] for i in order[pos:pos + args.batch_questions]]
        m = step_fn(items)
        lr = sched.get_last_lr()[0]
        norm, ok = step_optimizer(student, opt, sched, args.grad_clip)
        ok = ok and math.isfinite(m["loss"])
        bad.update(ok, f"Phase-2 step {step + 1}")
        gens += m["new_generations"]
        gen_tokens += m["new_tokens"]
        if teacher is not None and args.teacher_sync and (step + 1) % args.teacher_sync == 0:
            teacher.load_state_dict(student.state_dict())     # teacher := student (Fig. 5)
            syncs += 1
        rec = {"phase": "distill", "method": args.method, "step": step + 1, "reward": m["reward"],
               "loss": m["loss"],
               "kl": m["kl_per_token"], "grad_norm": norm, "lr": lr,
               "response_tokens": m["response_tokens"], "truncated": m["truncated"],
               "generations": gens, "generated_tokens": gen_tokens, "teacher_syncs": syncs,
               "skipped": not ok, "skipped_total": bad.total, "seconds": round(time.time() - t0, 2)}
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            state = {"phase": "distill", "step": step + 1, "model": student.state_dict(),
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
                     "syncs": syncs, "generations": gens, "generated_tokens": gen_tokens, "last": rec}
            if syncs:
                state["teacher"] = teacher.state_dict()
            atomic_torch_save(state, os.path.join(run_dir, "checkpoint.pt"))
        log.metric(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{m['reward']:.2f}", loss=f"{m['loss']:.3f}",
                            len=f"{m['response_tokens']:.0f}")
    if bar is not None:
        bar.close()
    save_hf(student, tok, os.path.join(run_dir, "final"))
    log.say(f"[{label}] done: {args.steps} steps, {time.time() - t0:.0f}s, teacher syncs {syncs} "
            f"-> {os.path.join(run_dir, 'final')}")


# --------------------------------------------------------------------------------------------
# Baselines (paper Table 1) — same loops, same accounting
# --------------------------------------------------------------------------------------------
def phase2_steps(args, n2: int) -> int:
    """Phase-2 optimizer steps: --steps, or --phase2-epochs passes over N2 rounded up to whole steps.

    Paper scale: 9,000 questions x 1 pass / 128 per step = 70.3 -> 71 steps = 9,088 generations
    (App. C.2 counts 9K; the last step's 88 questions start the next reshuffled pass).
    """
    return args.steps or max(1, math.ceil(args.phase2_epochs * n2 / args.batch_questions))


def planned_budget(args, n_train: int) -> int:
    """Generations SD-Zero would use with these settings (paper App. C.2: a response = one).

    Phase 1: |N1| x n_init initial answers, each revised n_rev times; Phase 2: steps x questions x
    rollouts. With --revise-correct 0 only the wrong initial answers are revised, a number no one
    knows before sampling, so the baselines then need --budget (read it off the SD-Zero run).
    """
    if not args.revise_correct:
        raise SystemExit("error: with --revise-correct 0 SD-Zero's Phase-1 generations depend on how many "
                         "initial answers are wrong; pass the baseline --budget N (the last 'generations' "
                         "in the SD-Zero run's metrics.jsonl)")
    n1, n2 = (len(p) for p in data_mod.split_phases(list(range(n_train)), args.phase1_questions, args.seed))
    return (n1 * args.n_init * (1 + args.n_rev)
            + phase2_steps(args, n2) * args.batch_questions * args.rollouts_per_question)


def run_baseline(args, model, tok, rows, run_dir, log, ckpt, budgets) -> str:
    """RFT, GRPO or SDFT on all training questions with a generation budget; writes final/."""
    import baselines
    phrases = Phrases(args.p_correct, args.p_wrong)
    budget = args.budget or planned_budget(args, len(rows))
    label = args.method.upper()
    final_dir = os.path.join(run_dir, "final")
    if args.method == "rft":
        n = max(1, budget // len(rows))
        ex_path, st_path = os.path.join(run_dir, "rft_examples.jsonl"), os.path.join(run_dir, "rft_stats.json")
        if ckpt is None or not os.path.exists(ex_path):
            log.say(f"[RFT] sampling {n} responses for each of {len(rows)} questions (budget {budget})")
            examples, stats = baselines.rft_collect(model, tok, rows, task=args.task, n=n,
                                                    gen=gen_kwargs(args), phrases=phrases,
                                                    progress=not args.quiet)
            write_jsonl_atomic(ex_path, examples)
            json.dump(stats, open(st_path, "w"), indent=1)
            log.say(f"[RFT] kept {stats['kept']} correct of {stats['samples']}")
        examples = [json.loads(l) for l in open(ex_path)]
        stats = json.load(open(st_path))
        if not examples:
            raise SystemExit("error: RFT kept no correct response; nothing to fine-tune on")
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
        sft_loop(args, model, tok, [("gen", examples)], run_dir, log, ckpt,
                 (stats["generations"], stats["generated_tokens"]), out_dir=final_dir, label=label)
        budgets[label] = str(stats["generations"])
        return label
    device = next(model.parameters()).device
    teacher = None
    if args.method == "grpo":
        # GRPO has its own step size and batch: the Phase-2 ones (3e-4, 32 questions x 4) left the
        # toy flat and higher rates collapsed it (README "Baselines"); the budget is unchanged.
        args.lr, args.batch_questions = args.grpo_lr, args.grpo_batch_questions
        per_step = args.batch_questions * args.grpo_n

        def step_fn(items):
            return baselines.grpo_step(args, model, tok, items, phrases, device)
    else:
        per_step = args.batch_questions * args.rollouts_per_question
        demo = demo_function(args)
        teacher, _ = load_model(args.model, quiet=True)     # frozen copy, as SD-Zero's teacher

        def step_fn(items):
            return baselines.sdft_step(args, model, teacher, tok, items, phrases, demo)
    args.steps = max(1, budget // per_step)
    log.say(f"[{label}] {args.steps} steps x {per_step} rollouts (budget {budget} generations)")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    else:
        seed_all(args.seed + 1)
    phase2(args, model, teacher, tok, rows, run_dir, log, ckpt, (0, 0), step_fn, label)
    last = json.loads(open(log.path).read().splitlines()[-1])
    budgets[label] = str(last["generations"])
    return label


def demo_function(args):
    """SDFT's demonstration for a question: the toy writes a correct worked solution; real data
    must carry a reference solution (--solution-field)."""
    if args.toy:
        import toy
        return lambda item: toy.solve(item["question"])

    def from_data(item):
        if not item.get("solution"):
            raise SystemExit(f"error: SDFT needs a reference solution per question; field "
                             f"{args.solution_field!r} is missing for question id {item.get('id')!r}")
        return item["solution"]
    return from_data


def _bar(total, desc, initial=0):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def load_data(args):
    fields = {"question": args.question_field, "answer": args.answer_field, "tests": args.tests_field,
              "solution": args.solution_field}
    if args.toy:
        import toy
        built = toy.build_toy(args.toy_root, seed=0, quiet=args.quiet, steps=args.toy_steps)
        args.model = built["model"]
        args.data = args.data or built["train"]
        args.test_data = args.test_data or built["test"]
    test_rows = []
    if args.data is None:                  # the paper's setting: its data, its 15K / 500 split
        if args.task == "code":
            raise data_mod.DataError(data_mod.paper_code_hint())
        train_rows, test_rows = data_mod.paper_math(args.seed, limit=args.limit)
    else:
        train_rows = data_mod.load(args.data, args.task, fields, split=args.split, limit=args.limit)
    if args.test_data:
        test_rows = data_mod.load(args.test_data, args.task, fields, split="test")
    return train_rows, test_rows


def table(rows: list[tuple[str, dict]], budgets: dict) -> str:
    k = rows[0][1]["k"]
    head = (f"| model | avg@{k} | pass@{k} | correction rate | revised acc | mean tokens | "
            f"truncated | generations used |")
    lines = [head, "|" + "---|" * 8]
    for name, ev in rows:
        rv = ev.get("revision", {})
        lines.append(f"| {name} | {fmt_pct(ev[f'avg@{k}'])} | {fmt_pct(ev[f'pass@{k}'])} | "
                     f"{fmt_pct(rv.get('correction_rate'))} | {fmt_pct(rv.get('revised_acc'))} | "
                     f"{ev['mean_tokens']:.1f} | {fmt_pct(ev['truncated_share'])} | "
                     f"{budgets.get(name, '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = resolve(build_parser().parse_args(argv))
    threads = args.threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.time()
    seed_all(args.seed)
    run_dir = os.path.join(args.runs_dir, args.run_name)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    if os.path.exists(os.path.join(run_dir, "config.json")) and not args.resume:
        if os.path.exists(ckpt_path) or os.path.exists(os.path.join(run_dir, "final")):
            raise SystemExit(f"error: {run_dir} already holds a run; add --resume to continue it, "
                             "or pick another --run-name")
    # Data and model first: a run that cannot start stops with one line and writes nothing.
    try:
        train_rows, test_rows = load_data(args)
    except data_mod.DataError as e:
        raise SystemExit(f"error: {e}") from None
    cuda = torch.cuda.is_available()
    grad_ckpt = cuda and not args.no_grad_ckpt
    try:
        model, tok = load_model(args.model, gradient_checkpointing=grad_ckpt, quiet=args.quiet)
    except ModelLoadError as e:
        raise SystemExit(f"error: {e}") from None
    os.makedirs(run_dir, exist_ok=True)
    json.dump(vars(args), open(os.path.join(run_dir, "config.json"), "w"), indent=1, default=str)
    log = Log(run_dir, args.quiet)
    ckpt = None
    if args.resume and os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        log.truncate_after(ckpt["phase"], ckpt["step"])
        logged = [json.loads(l) for l in open(log.path)] if os.path.exists(log.path) else []
        if not any(r.get("phase") == ckpt["phase"] and r.get("step") == ckpt["step"] for r in logged):
            log.metric(ckpt["last"])       # killed between the checkpoint and its log line
    elif os.path.exists(log.path):
        os.remove(log.path)

    n1, n2 = data_mod.split_phases(train_rows, args.phase1_questions if args.phase != "distill" else 0,
                                   seed=args.seed)
    if args.phase == "srt":
        n2 = []
    if args.method == "sdzero" and args.phase in ("all", "distill") and not n2:
        raise SystemExit("error: no questions left for Phase 2; lower --phase1-questions")
    if args.method == "sdzero":
        args.steps = phase2_steps(args, len(n2))
    where = (f"N1 {len(n1)} (Phase 1), N2 {len(n2)} (Phase 2)" if args.method == "sdzero" else
             f"all for {args.method.upper()}")
    log.say(f"run {run_dir}: model {args.model}, {len(train_rows)} training questions -> {where}; "
            f"device {'cuda' if cuda else 'cpu'}")

    phrases = Phrases(args.p_correct, args.p_wrong)
    eval_items = test_rows[:args.eval_questions]
    evals, budgets = [], {}
    evals_path = os.path.join(run_dir, "eval.json")
    cached = json.load(open(evals_path)) if args.resume and os.path.exists(evals_path) else {}

    def run_eval(name, m):
        """Held-out table row; cached in eval.json so a resumed run does not redo it."""
        if args.no_eval or not eval_items:
            return
        if name not in cached:
            seed_all(args.seed + 7)           # every model sees the same sampling seed
            cached[name] = evaluate_model(m, tok, eval_items, task=args.task, k=args.eval_k,
                                          phrases=phrases, gen=gen_kwargs(args), progress=not args.quiet)
            json.dump(json_safe(cached), open(evals_path, "w"), indent=1, allow_nan=False)
        evals.append((name, cached[name]))
        ev = cached[name]
        log.say(f"[eval] {name}: avg@{args.eval_k} {fmt_pct(ev[f'avg@{args.eval_k}'])}%  "
                f"correction {fmt_pct(ev['revision']['correction_rate'])}%  "
                f"mean tokens {ev['mean_tokens']:.1f}")

    base_label = "base" if args.phase != "distill" or args.toy else "start"
    if ckpt is None or base_label in cached:
        run_eval(base_label, model)
    budgets[base_label] = "0"

    srt_dir = os.path.join(run_dir, "srt")
    resume_p2 = ckpt is not None and ckpt["phase"] == "distill"
    budget = (0, 0)
    if args.method != "sdzero":
        label = run_baseline(args, model, tok, train_rows, run_dir, log, ckpt, budgets)
        final, _ = load_model(os.path.join(run_dir, "final"), quiet=True)
        run_eval(label, final)
    elif args.phase in ("all", "srt"):
        if not resume_p2:
            if ckpt is not None:                   # mid-SRT: weights from the checkpoint
                model.load_state_dict(ckpt["model"])
            seed_all(args.seed)
            phase1(args, model, tok, n1, run_dir, log, ckpt)
        st = json.load(open(os.path.join(run_dir, "phase1_stats.json")))
        budget = (st["generations"], st["generated_tokens"])
        budgets["SRT"] = f"{st['generations']} (Phase 1)"
        model_srt, _ = load_model(srt_dir, quiet=True)
        run_eval("SRT", model_srt)
        del model_srt

    if args.method == "sdzero" and args.phase in ("all", "distill"):
        start_dir = srt_dir if args.phase == "all" else args.model
        if args.phase == "all":
            model, tok = load_model(srt_dir, gradient_checkpointing=grad_ckpt, quiet=True)
        # The teacher: a frozen copy of the weights Phase 2 starts from (the SRT model).
        teacher, _ = load_model(start_dir, quiet=True)
        if resume_p2:
            model.load_state_dict(ckpt["model"])
        else:
            seed_all(args.seed + 1)
        phase2(args, model, teacher, tok, n2, run_dir, log, ckpt if resume_p2 else None, budget)
        del teacher
        last = json.loads(open(log.path).read().splitlines()[-1])
        budgets["SD-Zero" if args.phase == "all" else "Phase 2 only"] = (
            f"{last['generations']} ({last['generations'] - budget[0]} in Phase 2)")
        final, _ = load_model(os.path.join(run_dir, "final"), quiet=True)
        run_eval("SD-Zero" if args.phase == "all" else "Phase 2 only", final)

    if evals:
        md = table(evals, budgets)
        note = (f"{len(eval_items)} held-out questions, avg@{args.eval_k} at T={args.temperature}, "
                f"at most {args.max_new_tokens} new tokens (the paper: avg@8, 32K tokens; "
                "`python evaluate.py --paper-protocol` measures that)")
        with open(os.path.join(run_dir, "table.md"), "w") as f:
            f.write(note + "\n\n" + md + "\n")
        log.say("\nHeld-out results (" + note + "):\n" + md)
    log.say(f"\ntotal wall time {time.time() - t_start:.0f}s; outputs in {run_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
