"""train.py — SD-Zero end to end: Phase 1 (SRT), then Phase 2 (on-policy self-distillation).

    python train.py                                   # the embedded toy world on a laptop CPU (~2 min)
    python train.py --model Qwen/Qwen3-4B-Instruct    # the paper's math setting on one GPU
    torchrun --nproc_per_node=4 train.py --model ...  # several GPUs: FSDP2, see distributed.py

Paper: Self-Distillation Zero, arXiv 2604.12002. This file is its Algorithm 1, top to bottom: the
knob table, Phase 1, Phase 2, main. Run folders, checkpoints and the optimizer are in plumbing.py,
the held-out table in heldout.py. Under torchrun (distributed.py) each loop shows one line per
concept, marked ``# distributed:`` (shard the weights, split the batch, combine the metrics); the
rest hides in the functions it belongs to.

Phase 1 — Self-Revision Training (§2.1, eq. 1–3). On questions N1: sample y_init, grade it, append
P_r ("rephrase" if right, "start over" if wrong), sample n revisions, keep the verified-correct ones,
then fine-tune on  L_SRT = L_rev + L_gen  over  X + Y_init' + S(P_r) + Y_rev.

Phase 2 — self-distillation (§2.2, eq. 4). On disjoint questions N2, each step: the student (generator)
samples y ~ π_θ(·|x); the verifier gives r; the frozen teacher (the SRT weights, acting as reviser)
reads X + Y' + S(P_r) + Y under no_grad and keeps its top-k logits at the positions of the second Y;
the student minimises Σ_t KL(π_θ(·|x, y<t) ‖ π_T(·|x, y, P_r, y<t)). The teacher can be re-synchronised
to the student (teacher := student; Fig. 5) every N steps or once the reward plateaus; default frozen.

Defaults (``KNOBS``) come from the paper; where the paper is silent, from the official code (each
``--help`` line says which). With no ``--model`` the toy column of ``KNOBS`` replaces the values that
only make sense for a 4B model (a 0.8M-parameter model trained from scratch needs a far larger
learning rate). The baselines of paper Table 1 (``--method rft|grpo|sdft``) are dispatched to
baselines.py, which runs them through this file's two loops with step functions of its own.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time

import repro

if __name__ == "__main__":
    repro.pin_if_toy(sys.argv[1:])   # before torch: the toy run gets the same table on every x86-64 CPU
import torch

import baselines
import data as data_mod
import distributed
import distill
import gpu_memory
import report
import toy
from data import phase2_steps, planned_budget, read_jsonl, write_jsonl_atomic  # noqa: F401  (tests: train.*)
from generate import (ModelLoadError, eos_ids, fit_check, load_model, rollout_metrics, train_precision,
                      training_sampling, add_arguments as add_generate_arguments)
from heldout import Table
from plumbing import (BadSteps, Run, cosine_schedule, make_optimizer, plateau_reached, progress, seed_all,
                      step_optimizer, warmup_constant_schedule)
from revise import (P_CORRECT, P_WRONG, Phrases, collect_revisions, distill_on_policy, fit_teacher_budget,
                    phrase_ids, reviser_prompt, sample_and_grade, srt_backward, srt_example)

# (flag, paper default, toy default, help incl. source)
KNOBS = [
    ("phase1_questions", 6000, 700, "questions in N1 for Phase 1; the rest are N2 (paper Table 13's best "
     "split of 15K: 6K/9K; App. C.1 collects on 10K, see docs/real-run.md); <1 = fraction"),
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
    ("sync_on_plateau", 0, 0, "teacher := student once the reward plateaus: the mean of the last P steps has not "
     "risen by 0.01 for P steps (plumbing.plateau_reached); P here, 0 = off (Fig. 5 syncs once, at saturation)"),
    ("max_syncs", 1, 1, "at most this many plateau syncs (Fig. 5: one)"),
    ("grad_clip", 1.0, 1.0, "gradient-norm clip (official code: 1.0)"),
    ("micro_batch", 1, 64, "sequences per forward/backward in Phase 2 and SRT (memory knob; docs/scaling.md)"),
    ("gen_batch", 4, 128, "sequences per generate() call (KV-cache memory knob; docs/scaling.md)"),
    ("eval_questions", 500, 300, "held-out questions for the final table (paper: 500 held-out)"),
    ("eval_k", 1, 1, "samples per held-out question (paper: avg@8)"),
    ("grpo_lr", 1e-6, 5e-5, "GRPO learning rate (paper silent; 1e-6 is DAPO's; toy: sweep in docs/findings.md)"),
    ("grpo_batch_questions", 32, 8, "GRPO questions per update, x --grpo-n rollouts each (paper silent)"),
    ("sdft_context", "user", "assistant", "SDFT teacher: demonstration in the user turn (SDFT paper) or as an "
     "earlier correct answer + 'rephrase' in the assistant turn (the toy cannot read instructions)"),
    ("save_every", 25, 1, "checkpoint every N steps (atomic; toy: every step)"),
]


CHOICES = {"kl": distill.KINDS, "support": distill.SUPPORTS, "norm": ("token_mean", "seq_sum"),
           "sdft_context": ("user", "assistant")}


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
    for name, paper, toy_value, help_ in KNOBS:
        kind = _count_or_fraction if name == "phase1_questions" else type(paper)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, choices=CHOICES.get(name),
                       help=f"{help_} [default: {paper}; toy: {toy_value}]")
    p.add_argument("--run-name", default=None, help="runs/<name>/ (default: toy or model basename)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoint.pt")
    p.add_argument("--seed", type=int, default=42, help="official code: 42")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: min(2, cores))")
    add_generate_arguments(p)       # --no-grad-ckpt, --gpu-path, --rollout-engine (generate.py)
    p.add_argument("--no-eval", action="store_true", help="skip the final held-out table")
    p.add_argument("--max-bad-steps", type=int, default=3,
                   help="stop after this many consecutive NaN/inf steps (each is skipped)")
    p.add_argument("--toy-root", default="runs/toy", help="where the toy world is cached")
    p.add_argument("--toy-steps", type=int, default=None,
                   help="pre-training steps of the toy base (default: toy.py's; fewer = a quick, weak base)")
    p.add_argument("--toy-world", choices=list(toy.WORLDS), default="standard",
                   help="banded = two more shapes the base rarely solves; the table reports each band")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def resolve(args) -> argparse.Namespace:
    """Fill every knob left unset with the paper's value, or the toy's when --model is omitted."""
    args.toy = args.model is None
    for name, paper, toy_value, _ in KNOBS:
        if getattr(args, name) is None:
            setattr(args, name, toy_value if args.toy else paper)
    if args.support == "sampled" and args.kl != "reverse":
        raise SystemExit("error: --support sampled estimates the reverse KL only; use --kl reverse")
    args.run_name = args.run_name or ("toy" if args.toy else os.path.basename(args.model.rstrip("/")))
    return args


# --------------------------------------------------------------------------------------------
# Phase 1 — collect verified self-revisions, then SRT
# --------------------------------------------------------------------------------------------
def phase1(args, model, tok, n1, run: Run) -> None:
    """Collect D_revision on N1 (or reuse it on resume, or take --revisions), then SRT -> srt/."""
    phrases = Phrases(args.p_correct, args.p_wrong)
    rev_path, stats_path = run.path("revisions.jsonl"), run.path("phase1_stats.json")
    if run.ckpt is None or not os.path.exists(rev_path):
        t0 = time.time()
        if args.revisions:
            try:
                rows = read_jsonl(args.revisions)
            except (OSError, ValueError) as e:
                raise SystemExit(f"error: --revisions {args.revisions}: {e}") from None
            stats = {"source": args.revisions, "kept": len(rows), "generations": 0, "generated_tokens": 0}
        else:
            run.say(f"[phase 1] collecting self-revisions on {len(n1)} questions "
                    f"({args.n_init} y_init + {args.n_rev} revisions each)")
            rows, stats = collect_revisions(model, tok, n1, task=args.task, phrases=phrases,
                                            n_init=args.n_init, n_rev=args.n_rev,
                                            revise_correct=bool(args.revise_correct),
                                            gen=training_sampling(args), seed=args.seed,
                                            max_traces=args.max_traces, progress=not args.quiet)
        stats["seconds"] = round(time.time() - t0, 1)

        def write():
            write_jsonl_atomic(rev_path, rows)
            json.dump(stats, open(stats_path, "w"), indent=1)
        distributed.on_main(write)                       # distributed: rank 0 writes, all read below
        run.say(f"[phase 1] kept {stats['kept']} verified revisions; {stats['generations']} generations, "
                f"{stats['seconds']:.0f}s; counts in {stats_path}")
    rows, stats = read_jsonl(rev_path), json.load(open(stats_path))
    if not rows:
        raise SystemExit("error: Phase 1 kept no verified revision, so SRT has nothing to learn. "
                         "Use more Phase-1 questions, more revisions (--n-rev), or a stronger model.")
    if any(r["phrase"] not in (phrases.correct, phrases.wrong) for r in rows):
        raise SystemExit("error: the Phase-1 revisions use other control phrases than --p-correct/--p-wrong; "
                         "Phase 2's teacher must read the phrases SRT was trained on")
    eos = eos_ids(model, tok)
    examples = [srt_example(r["prompt_ids"], r["y_init_ids"], phrase_ids(tok, r["phrase"]),
                            r["y_rev_ids"], eos) | {"wrong_init": r["reward_init"] < 0.5} for r in rows]
    stages = [("joint", examples)] if args.srt_loss == "joint" else \
        [("gen", [e for e in examples if e["wrong_init"]] or examples), ("rev", examples)]
    srt_loop(args, model, tok, stages, run, (stats["generations"], stats["generated_tokens"]), "srt")


def srt_loop(args, model, tok, stages, run: Run, spent, out_name: str, label: str = "SRT") -> None:
    """Supervised fine-tuning on fixed examples: SRT (eq. 3, or the code's two stages) and RFT.

    ``stages`` is a list of (loss mode, examples); the whole schedule of (mode, batch) steps is
    drawn from the seed up front, so the step number alone tells a resumed run where it was.
    """
    plan = data_mod.srt_plan(stages, args.seed, args.srt_batch_size, args.srt_steps, args.srt_epochs)

    model.train()
    distributed.shard(model)          # distributed: FSDP2 shards, before the optimizer sees the weights
    opt = make_optimizer(model, args.srt_lr, args.srt_weight_decay, (0.9, 0.95))
    sched = cosine_schedule(opt, len(plan), int(args.srt_warmup * len(plan)))
    start = run.restore("srt", model, opt, sched)["step"]
    if start:
        run.say(f"[{label}] resuming at step {start}/{len(plan)}")
    bad, t0 = BadSteps(args.max_bad_steps), time.time()
    bar = progress(len(plan), label, start, args.quiet)
    for step in range(start, len(plan)):
        mode, batch = plan[step]
        loss = srt_backward(model, batch, mode, tok.pad_token_id, args.micro_batch)
        lr = sched.get_last_lr()[0]
        norm, ok = step_optimizer(model, opt, sched, args.grad_clip)
        ok = ok and math.isfinite(loss)
        bad.update(ok, f"{label} step {step + 1}")
        rec = {"phase": "srt", "method": args.method, "step": step + 1, "stage": mode, "loss": loss,
               "grad_norm": norm, "lr": lr, "skipped": not ok, "generations": spent[0],
               "generated_tokens": spent[1], "seconds": round(time.time() - t0, 2)}
        if (step + 1) % args.save_every == 0 or step + 1 == len(plan):
            run.save("srt", step + 1, model, opt, sched, rec)
        run.metric(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    out = run.save_hf(model, tok, out_name)
    run.say(f"[{label}] done: {len(plan)} steps on {sum(len(p) for _, p in stages)} examples, "
            f"{time.time() - t0:.0f}s -> {out}")


# --------------------------------------------------------------------------------------------
# Phase 2 — on-policy self-distillation from the reviser
# --------------------------------------------------------------------------------------------
def distill_step(args, student, teacher, tok, items, phrases, eos) -> dict:
    """One Phase-2 step on a batch of fresh questions; returns metrics (gradients accumulated)."""
    rolls, rewards = sample_and_grade(student, tok, items, task=args.task, n=args.rollouts_per_question,
                                      phrases=phrases, gen=training_sampling(args, on_policy=True))
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


def phase2(args, student, teacher, tok, n2, run: Run, spent, step_fn, *, steps: int, lr: float,
           batch_questions: int, label: str = "SD-Zero") -> None:
    """The on-policy loop: fresh questions each step -> step_fn (rollouts, reward, loss, backward)
    -> clip + optimizer step -> optional teacher sync -> metrics + atomic checkpoint -> final/.

    step_fn(items) is SD-Zero's distill_step here; GRPO (teacher=None) and SDFT pass their own from
    baselines.py, so every on-policy method shares the loop, teacher sync, accounting and resume.
    """
    if teacher is not None:
        teacher.eval().requires_grad_(False)
        distributed.shard(teacher)    # distributed: sharded too, no optimizer state
    student.train()
    distributed.shard(student)        # distributed: FSDP2 shards, before the optimizer sees the weights
    opt = make_optimizer(student, lr, args.weight_decay, (0.9, 0.999))
    sched = warmup_constant_schedule(opt, args.warmup_steps)
    ck = run.restore("distill", student, opt, sched)
    start, syncs, plateau = ck["step"], ck.get("syncs", 0), ck.get("plateau", {})
    gens, gen_tokens = (ck["generations"], ck["generated_tokens"]) if start else spent
    if "teacher" in ck:
        teacher.load_state_dict(ck["teacher"])
    if start:
        run.say(f"[{label}] resuming at step {start}/{steps}")
    order = data_mod.phase2_order(len(n2), args.seed, steps * batch_questions)
    bad = BadSteps(args.max_bad_steps)
    t0 = time.time() - (ck["last"]["seconds"] if start else 0)
    bar = progress(steps, label, start, args.quiet)
    for step in range(start, steps):
        items = [n2[i] for i in order[step * batch_questions:(step + 1) * batch_questions]]
        # distributed: each rank takes its share of the questions; the metrics are combined
        m = distributed.reduce_metrics(step_fn(distributed.split(items, "batch of questions")))
        lr_now = sched.get_last_lr()[0]
        norm, ok = step_optimizer(student, opt, sched, args.grad_clip)
        ok = ok and math.isfinite(m["loss"])
        bad.update(ok, f"Phase-2 step {step + 1}")
        gens += m["new_generations"]
        gen_tokens += m["new_tokens"]
        at_plateau = (teacher is not None and args.sync_on_plateau and syncs < args.max_syncs
                      and plateau_reached(plateau, m["reward"], step + 1, args.sync_on_plateau))
        if at_plateau or teacher is not None and args.teacher_sync and (step + 1) % args.teacher_sync == 0:
            teacher.load_state_dict(student.state_dict())     # teacher := student (Fig. 5)
            syncs += 1
        rec = {"phase": "distill", "method": args.method, "step": step + 1, "reward": m["reward"],
               "loss": m["loss"], "kl": m["kl_per_token"], "grad_norm": norm, "lr": lr_now,
               "response_tokens": m["response_tokens"], "truncated": m["truncated"],
               "generations": gens, "generated_tokens": gen_tokens, "teacher_syncs": syncs,
               "skipped": not ok, "skipped_total": bad.total, "seconds": round(time.time() - t0, 2)}
        if (step + 1) % args.save_every == 0 or step + 1 == steps:
            run.save("distill", step + 1, student, opt, sched, rec, syncs=syncs, plateau=plateau, generations=gens,
                     generated_tokens=gen_tokens, **({"teacher": teacher.state_dict()} if syncs else {}))
        run.metric(rec)
        bar.update(1)
        bar.set_postfix(reward=f"{m['reward']:.2f}", loss=f"{m['loss']:.3f}", len=f"{m['response_tokens']:.0f}")
    bar.close()
    out = run.save_hf(student, tok, "final")
    run.say(f"[{label}] done: {steps} steps, {time.time() - t0:.0f}s, teacher syncs {syncs} -> {out}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def load_data(args) -> tuple[str, list[dict], list[dict]]:
    """(model, training rows, held-out rows): the toy world, the paper's data, or --data."""
    fields = {"question": args.question_field, "answer": args.answer_field, "tests": args.tests_field,
              "solution": args.solution_field}
    model, data, test_data, test_rows = args.model, args.data, args.test_data, []
    if args.toy:                                      # distributed: rank 0 builds it, then the rest
        built = distributed.main_first(lambda: toy.build_toy(args.toy_root, seed=0, quiet=args.quiet,
                                                             steps=args.toy_steps, world=args.toy_world))
        model, data, test_data = built["model"], data or built["train"], test_data or built["test"]
    try:
        if data is None and args.task == "code":
            raise data_mod.DataError(data_mod.paper_code_hint())
        if data is None:                          # the paper's setting: its data, its 15K / 500 split
            train_rows, test_rows = data_mod.paper_math(args.seed, limit=args.limit)
        else:
            train_rows = data_mod.load(data, args.task, fields, split=args.split, limit=args.limit)
        if test_data:
            test_rows = data_mod.load(test_data, args.task, fields, split="test")
    except data_mod.DataError as e:
        raise SystemExit(f"error: {e}") from None
    return model, train_rows, test_rows


def load(path, quiet=True, grad_ckpt=False, dtype=None):
    try:
        return load_model(path, gradient_checkpointing=grad_ckpt, quiet=quiet, dtype=dtype)
    except ModelLoadError as e:
        raise SystemExit(f"error: {e}") from None


def main(argv=None) -> int:
    args = resolve(build_parser().parse_args(argv))
    distributed.setup()                             # under torchrun: join the process group
    torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.time()
    seed_all(args.seed)
    run_dir = os.path.join(args.runs_dir, args.run_name)
    if not args.resume and any(os.path.exists(os.path.join(run_dir, f)) for f in ("checkpoint.pt", "final")):
        raise SystemExit(f"error: {run_dir} already holds a run; add --resume to continue it, "
                         "or pick another --run-name")
    model_name, train_rows, test_rows = load_data(args)      # a run that cannot start writes nothing
    dtype, grad_ckpt = train_precision(args.gpu_path, args.no_grad_ckpt)
    fit_check(args, model_name)                     # CUDA: stop here if the run cannot fit the card
    load_ = functools.partial(load, dtype=dtype)    # every copy in the same dtype (bf16 on CUDA)
    model, tok = load_(model_name, args.quiet, grad_ckpt)
    run = Run(run_dir, vars(args), args.resume)
    n1, n2 = data_mod.split_phases(train_rows, args.phase1_questions if args.phase != "distill" else 0,
                                   seed=args.seed)
    n2 = [] if args.phase == "srt" else n2
    if args.method == "sdzero" and args.phase != "srt" and not n2:
        raise SystemExit("error: no questions left for Phase 2; lower --phase1-questions")
    if args.toy and (note := repro.check_pinned(torch)):
        run.say(note)
    run.say(f"run {run_dir}: model {model_name}, {len(train_rows)} training questions -> " + (
        f"N1 {len(n1)} (Phase 1), N2 {len(n2)} (Phase 2)" if args.method == "sdzero" else
        f"all for {args.method.upper()}") + f"; device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    table = Table(args, run, tok, test_rows[:args.eval_questions], training_sampling(args))
    base = "base" if args.phase != "distill" or args.toy else "start"
    if run.ckpt is None or base in table.evals:
        table.add(base, model, "0")
    if args.method != "sdzero":                  # paper Table 1's baselines, at SD-Zero's budget
        budget = args.budget or planned_budget(args, len(train_rows))
        label, spent = baselines.run(args, model_name, model, tok, train_rows, run, budget, srt_loop, phase2)
        table.add(label, load_(run.path("final"))[0], spent)
    spent = (0, 0)
    if args.method == "sdzero" and args.phase in ("all", "srt"):
        if not run.resuming("distill"):
            seed_all(args.seed)
            phase1(args, model, tok, n1, run)
        st = json.load(open(run.path("phase1_stats.json")))
        spent = (st["generations"], st["generated_tokens"])
        if args.phase == "all":
            model = None                # Phase 2 loads student and teacher from srt/: drop this copy
        table.add("SRT", load_(run.path("srt"))[0], f"{st['generations']} (Phase 1)")
        gpu_memory.free_device_memory()
    if args.method == "sdzero" and args.phase in ("all", "distill"):
        start = run.path("srt") if args.phase == "all" else model_name
        student, model = (load_(start, True, grad_ckpt)[0] if args.phase == "all" else model), None  # 2 copies
        teacher = load_(start)[0]         # the teacher: a frozen copy of where Phase 2 starts (SRT)
        if not run.resuming("distill"):
            seed_all(args.seed + 1)
        step_fn = functools.partial(distill_step, args, student, teacher, tok,
                                    phrases=Phrases(args.p_correct, args.p_wrong), eos=eos_ids(student, tok))
        phase2(args, student, teacher, tok, n2, run, spent, step_fn, steps=phase2_steps(args, len(n2)),
               lr=args.lr, batch_questions=args.batch_questions)
        del teacher, student, step_fn     # (step_fn holds both) before final/ is loaded to evaluate
        gpu_memory.free_device_memory()
        gens = run.last_metric()["generations"]
        table.add("SD-Zero" if args.phase == "all" else "Phase 2 only", load_(run.path("final"))[0],
                  f"{gens} ({gens - spent[0]} in Phase 2)")
    table.write()
    charts = report.write_report([run_dir]) if distributed.is_main() else None   # report.html (SVG)
    run.say(f"\ntotal wall time {time.time() - t_start:.0f}s; outputs in {run_dir}/ (charts: {charts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
