"""train.py — SD-Zero (arXiv 2604.12002), Algorithm 1, top to bottom.

    python train.py                                   # the embedded toy world on a laptop CPU (~2 min)
    python train.py --model Qwen/Qwen3-4B-Instruct    # the paper's math setting on one GPU
    torchrun --nproc_per_node=4 train.py --model ...  # several GPUs (machinery/distributed.py)

Algorithm 1, as this file runs it (``main``):

    evaluate the base model π_θ on the held-out questions                        (the table's first row)
    split the training questions into disjoint N1 (Phase 1) and N2 (Phase 2)
    Phase 1 — Self-Revision Training (§2.1)                                       phase1, srt_loop
        for x in N1:  y_init ~ π_θ(·|x);  r = r(y_init, a);  P_r by r
                      n revisions y_rev ~ π_θ(·|x, y_init, P_r);  keep the verified-correct ones
        θ_SRT = SFT on D_revision with L_SRT = L_rev + L_gen (eq. 1–3)            (revise.py)
    Phase 2 — on-policy self-distillation (§2.2)                                  phase2
        student := θ_SRT;  teacher := θ_SRT, frozen
        for each step, a batch of fresh x in N2:
            y ~ π_θ(·|x);  r;  P_r;  the teacher reads X + Y' + S(P_r) and scores Y
            θ ← θ − η ∇ Σ_t KL(π_θ(·|x, y<t) ‖ π_T(·|x, y, P_r, y<t))  (eq. 4)     (distill.py)
            optionally teacher := student (Fig. 5)
    evaluate θ_SRT and θ_SD-Zero the same way; write the table

Every knob (config.py) defaults to the paper's value, or to the official code's where the paper is
silent; without ``--model`` the toy column applies. The baselines of Table 1 (RFT, GRPO, SDFT) run
through these same loops from baselines.py. What keeps a long run safe — run folder, checkpoints,
exact resume, the bf16 optimizer, several GPUs — is in machinery/; the few lines that only matter
under torchrun are marked ``# distributed:``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

from machinery import repro

if __name__ == "__main__":
    repro.before_torch(sys.argv[1:])   # the toy run: the same table on every x86-64 CPU; all: shared cores
import torch

import config
import data
import distill
import toy
from evaluate import Table
from generate import MODEL_ALIASES, ModelLoadError, eos_ids, load_model, training_sampling
from machinery import distributed, gpu_memory, report, tracking
from machinery.optim import BadSteps, cosine_schedule, make_optimizer, step_optimizer, warmup_constant_schedule
from machinery.run import Run, progress, seed_all
from revise import Phrases, cap_traces, collect_revisions, phrase_ids, srt_backward, srt_example, srt_token_counts


# --------------------------------------------------------------------------------------------
# Phase 1 — collect verified self-revisions, then SRT
# --------------------------------------------------------------------------------------------
def phase1(args, model, tok, n1: list[dict], run: Run) -> None:
    """Collect D_revision on N1 (or reuse it on resume, or take --revisions), then SRT -> srt/."""
    phrases = Phrases(args.p_correct, args.p_wrong)
    revisions_path, stats_path = run.path("revisions.jsonl"), run.path("phase1_stats.json")
    if run.ckpt is None or not os.path.exists(revisions_path):
        t0 = time.time()
        if args.revisions:
            try:
                rows = data.read_jsonl(args.revisions)
            except (OSError, ValueError) as e:
                raise SystemExit(f"error: --revisions {args.revisions}: {e}") from None
            stats = {"source": args.revisions, "kept": len(rows), "generations": 0, "generated_tokens": 0}
        else:
            run.say(f"[phase 1] collecting self-revisions on {len(n1)} questions "
                    f"({args.n_init} y_init + {args.n_rev} revisions each)")
            def graded(right: int, n: int, to_revise: int) -> None:     # before the revisions are paid for
                run.say(f"[phase 1] y_init accuracy {right}/{n} = {100 * right / max(n, 1):.1f}%; "
                        f"sampling {to_revise} x {args.n_rev} revisions")

            share = distributed.split(n1, None)          # distributed: each rank collects on its share
            rows, stats = collect_revisions(model, tok, share, task=args.task, phrases=phrases,
                                            n_init=args.n_init, n_rev=args.n_rev,
                                            revise_correct=bool(args.revise_correct),
                                            gen=training_sampling(args), progress=not args.quiet, on_graded=graded)
            rows, stats = distributed.gather_examples(rows, stats)   # distributed: all ranks' rows
            rows, stats = cap_traces(rows, stats, args.max_traces, args.seed)
        stats["seconds"] = round(time.time() - t0, 1)

        def write():
            data.write_jsonl_atomic(revisions_path, rows)
            json.dump(stats, open(stats_path, "w"), indent=1)
        distributed.on_main(write)                       # distributed: rank 0 writes, all read below
        run.say(f"[phase 1] kept {stats['kept']} verified revisions; {stats['generations']} generations, "
                f"{stats['seconds']:.0f}s; counts in {stats_path}")
    rows = data.read_jsonl(revisions_path)
    if not rows:
        raise SystemExit("error: Phase 1 kept no verified revision, so SRT has nothing to learn. Ways forward: "
                         "more Phase-1 questions or revisions (--phase1-questions, --n-rev), a stronger model, "
                         "--revisions FILE (an earlier run's revisions.jsonl), or --phase distill (Phase 2 alone, "
                         "from --model)")
    if any(r["phrase"] not in phrases for r in rows):
        raise SystemExit("error: the Phase-1 revisions use other control phrases than --p-correct/--p-wrong; "
                         "Phase 2's teacher must read the phrases SRT was trained on")
    eos = eos_ids(model, tok)
    examples = [srt_example(r["prompt_ids"], r["y_init_ids"], phrase_ids(tok, r["phrase"]), r["y_rev_ids"], eos)
                | {"wrong_init": r["reward_init"] < 0.5} for r in rows]
    if args.srt_loss == "sequential":                    # the official code: L_gen on wrong-init tuples, then L_rev
        stages = [("gen", [e for e in examples if e["wrong_init"]] or examples), ("rev", examples)]
    else:                                                # eq. 3: L_rev + L_gen in one pass (or one term: Table 11)
        stages = [(args.srt_loss, examples)]
    srt_loop(args, model, tok, stages, run, phase1_spent(run), "srt")


def phase1_spent(run: Run) -> tuple[int, int]:
    """(generations, generated tokens) Phase 1 used, from phase1_stats.json (App. C.2's budget)."""
    stats = json.load(open(run.path("phase1_stats.json")))
    return stats["generations"], stats["generated_tokens"]


def srt_loop(args, model, tok, stages, run: Run, spent, out_name: str, label: str = "SRT") -> None:
    """Supervised fine-tuning on fixed examples: SRT (eq. 3, or the code's two stages), RFT and SFT.

    ``stages`` is a list of (loss mode, examples); the whole schedule of (mode, batch) steps is
    drawn from the seed up front, so the step number alone tells a resumed run where it was.
    """
    plan = data.srt_plan(stages, args.seed, args.srt_batch_size, args.srt_steps, args.srt_epochs)
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
        share = distributed.split(batch, "SRT batch")    # distributed: this rank's share, weighted
        counts = distributed.all_sum(srt_token_counts(share, args.srt_norm))   # by the whole batch's counts
        loss = distributed.all_sum(srt_backward(model, share, mode, tok.pad_token_id, args.micro_batch, counts,
                                                args.srt_norm))
        lr = sched.get_last_lr()[0]
        norm, ok = step_optimizer(model, opt, sched, args.grad_clip)
        ok = ok and math.isfinite(loss)
        bad.update(ok, f"{label} step {step + 1}")
        record = {"phase": "srt", "method": args.method, "step": step + 1, "stage": mode, "loss": loss,
                  "grad_norm": norm, "lr": lr, "skipped": not ok, "generations": spent[0],
                  "generated_tokens": spent[1], "seconds": round(time.time() - t0, 2)}
        if (step + 1) % args.save_every == 0 or step + 1 == len(plan):
            run.save("srt", step + 1, model, opt, sched, record)
        run.metric(record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    out = run.save_hf(model, tok, out_name)
    run.say(f"[{label}] done: {len(plan)} steps on {sum(len(p) for _, p in stages)} examples, "
            f"{time.time() - t0:.0f}s -> {out}")


# --------------------------------------------------------------------------------------------
# Phase 2 — on-policy self-distillation from the reviser
# --------------------------------------------------------------------------------------------
def phase2(args, student, teacher, tok, n2: list[dict], run: Run, spent, *, steps: int, lr: float,
           batch_questions: int, step=None, label: str = "SD-Zero") -> None:
    """The on-policy loop: fresh questions each step -> ``step`` (rollouts, reward, loss, backward)
    -> clip + optimizer step -> optional teacher sync -> metrics + atomic checkpoint -> final/.

    ``step`` is SD-Zero's (distill.phase2_step) unless given; baselines.py passes GRPO's and SDFT's,
    which take the same arguments, so every on-policy method shares this loop, its accounting and
    its resume.
    """
    step = step or distill.phase2_step
    if teacher is not None:
        teacher.eval().requires_grad_(False)
        distributed.shard(teacher)    # distributed: sharded too, no optimizer state
    student.train()
    distributed.shard(student)        # distributed: FSDP2 shards, before the optimizer sees the weights
    opt = make_optimizer(student, lr, args.weight_decay, (0.9, 0.999))
    sched = warmup_constant_schedule(opt, args.warmup_steps)
    saved = run.restore("distill", student, opt, sched)
    start, syncs, plateau = saved["step"], saved.get("syncs", 0), saved.get("plateau", {})
    gens, gen_tokens = (saved["generations"], saved["generated_tokens"]) if start else spent
    if "teacher" in saved:
        teacher.load_state_dict(saved["teacher"])
    if start:
        run.say(f"[{label}] resuming at step {start}/{steps}")
    phrases = Phrases(args.p_correct, args.p_wrong)
    eos = eos_ids(student, tok)
    gen = training_sampling(args, on_policy=True, synced_gpus=distributed.sharded(student))
    order = data.phase2_order(len(n2), args.seed, steps * batch_questions)
    divergence = config.divergence_name(args) if teacher is not None else None    # what the "kl" column holds
    bad = BadSteps(args.max_bad_steps)
    t0 = time.time() - (saved["last"]["seconds"] if start else 0)
    bar = progress(steps, label, start, args.quiet)
    for step_no in range(start, steps):
        items = [n2[i] for i in order[step_no * batch_questions:(step_no + 1) * batch_questions]]
        share = distributed.split(items, "batch of questions")    # distributed: this rank's questions,
        m = step(args, student, teacher, tok, share, phrases=phrases, eos=eos, gen=gen,
                 count_all=distributed.all_sum)                      # token means over all ranks' tokens,
        updates = m.pop("updates", None)
        m = distributed.reduce_metrics(m)                           # and the metrics of the whole batch
        lr_now = sched.get_last_lr()[0]
        if updates:     # GRPO as DAPO runs it: one optimizer step per mini-batch of the rollout batch
            losses, oks = zip(*[(distributed.all_sum(backward()),
                                 step_optimizer(student, opt, sched, args.grad_clip)) for backward in updates])
            m["loss"], norm, ok = sum(losses) / len(losses), oks[-1][0], all(o for _, o in oks)
        else:           # SD-Zero, SDFT: the step function has accumulated the gradient; one step
            norm, ok = step_optimizer(student, opt, sched, args.grad_clip)
        ok = ok and math.isfinite(m["loss"])
        bad.update(ok, f"Phase-2 step {step_no + 1}")
        gens += m["new_generations"]
        gen_tokens += m["new_tokens"]
        at_plateau = (teacher is not None and args.sync_on_plateau and syncs < args.max_syncs
                      and plateau_reached(plateau, m["reward"], step_no + 1, args.sync_on_plateau))
        periodic = teacher is not None and args.teacher_sync and (step_no + 1) % args.teacher_sync == 0
        if at_plateau or periodic:
            teacher.load_state_dict(student.state_dict())     # teacher := student (Fig. 5)
            syncs += 1
        record = {"phase": "distill", "method": args.method, "step": step_no + 1, "reward": m["reward"],
                  "loss": m["loss"], "kl": m["kl_per_token"], "divergence": divergence, "grad_norm": norm,
                  "lr": lr_now, "response_tokens": m["response_tokens"], "keyword_rate": m["keyword_rate"],
                  "truncated": m["truncated"],
                  "generations": gens, "generated_tokens": gen_tokens, "teacher_syncs": syncs,
                  "skipped": not ok, "skipped_total": bad.total, "seconds": round(time.time() - t0, 2)}
        if (step_no + 1) % args.save_every == 0 or step_no + 1 == steps:
            run.save("distill", step_no + 1, student, opt, sched, record, syncs=syncs, plateau=plateau,
                     generations=gens, generated_tokens=gen_tokens,
                     **({"teacher": teacher.state_dict()} if syncs else {}))
        run.metric(record)
        bar.update(1)
        bar.set_postfix(reward=f"{m['reward']:.2f}", loss=f"{m['loss']:.3f}", len=f"{m['response_tokens']:.0f}")
    bar.close()
    out = run.save_hf(student, tok, "final")
    run.say(f"[{label}] done: {steps} steps, {time.time() - t0:.0f}s, teacher syncs {syncs} -> {out}")


# Teacher sync on a plateau (Fig. 5). The paper syncs the teacher once, by hand, when round-1
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


# --------------------------------------------------------------------------------------------
# main: base evaluation -> Phase 1 -> Phase 2 -> table
# --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = config.parse(argv)
    if args.dry_run:                    # the plan from the knobs alone: no model, no data
        return dry_run(args, ("sdzero", "rft", "grpo", "sdft", "sft"))
    t_start = time.time()
    setting = open_run(args)
    run, tok, table = setting["run"], setting["tok"], setting["table"]
    model = setting.pop("model")        # popped: main holds the only reference, so it can drop it
    n1, rest = data.split_phases(
        setting["train_rows"], args.phase1_questions if args.phase != "distill" else 0, seed=args.seed)
    n2_size = 0 if args.phase == "srt" else data.phase2_size(args, len(n1), len(rest))
    if args.phase != "srt" and not n2_size:
        raise SystemExit("error: no questions left for Phase 2; lower --phase1-questions")
    run.say(f"run {run.dir}: model {setting['model_name']}, {len(setting['train_rows'])} training questions -> "
            f"N1 {len(n1)} (Phase 1), N2 {n2_size} (Phase 2); device {setting['device']}")
    if args.phase == "all" and args.revise_correct:
        run.say("\n".join(data.plan_lines(args, len(setting["train_rows"]))[1:]))
    start_label = "base" if args.phase != "distill" or args.toy else "start"
    if run.ckpt is None or start_label in table.evals:
        table.add(start_label, model, 0)

    spent = (0, 0)
    if args.phase in ("all", "srt"):                              # Phase 1
        if not run.resuming("distill"):
            seed_all(args.seed)
            phase1(args, model, tok, n1, run)
        spent = phase1_spent(run)
        if args.phase == "all":
            model = None                # Phase 2 loads student and teacher from srt/: drop this copy
        table.add("SRT", load(run.path("srt"), args), spent[0], "(Phase 1)")
        gpu_memory.free_device_memory()

    if args.phase in ("all", "distill"):                          # Phase 2
        kept = [r.get("id") for r in data.read_jsonl(run.path("revisions.jsonl"))] if args.phase == "all" else []
        n2 = data.phase2_questions(args, n1, rest, kept)           # none with a trace SRT trained on
        start = run.path("srt") if args.phase == "all" else setting["model_name"]
        student = load(start, args, train=True) if args.phase == "all" else model
        model = None                                      # two copies in memory: student and teacher
        teacher = load(start, args)       # the teacher: a frozen copy of where Phase 2 starts (SRT)
        if not run.resuming("distill"):
            seed_all(args.seed + 1)
        phase2(args, student, teacher, tok, n2, run, spent, steps=data.phase2_steps(args, len(n2)),
               lr=args.lr, batch_questions=args.batch_questions)
        del teacher, student              # before final/ is loaded to evaluate
        gpu_memory.free_device_memory()
        gens = run.last_metric()["generations"]
        table.add("SD-Zero" if args.phase == "all" else "Phase 2 only", load(run.path("final"), args), gens,
                  f"({gens - spent[0]} in Phase 2)")
    finish_run(args, run, table, t_start)
    return 0


# --------------------------------------------------------------------------------------------
# Setting up and closing a run (shared with baselines.py)
# --------------------------------------------------------------------------------------------
def load_data(args) -> tuple[str, list[dict], list[dict]]:
    """(model, training rows, held-out rows): the toy world, the paper's data, or --data."""
    fields = {"question": args.question_field, "answer": args.answer_field, "tests": args.tests_field,
              "solution": args.solution_field}
    model, train_data, test_data, test_rows = args.model, args.data, args.test_data, []
    if args.toy and args.data and not args.test_data and not args.no_eval:
        raise SystemExit("error: --data on the toy world needs --test-data for the held-out table (the toy's "
                         "own test set is arithmetic, not your task), or --no-eval")
    if args.toy:                                      # distributed: rank 0 builds it, then the rest
        built = distributed.main_first(lambda: toy.build_toy(args.toy_root, seed=0, quiet=args.quiet,
                                                             steps=args.toy_steps, world=args.toy_world))
        model, train_data, test_data = built["model"], train_data or built["train"], test_data or built["test"]
    try:
        if train_data is None and args.task == "code":
            raise data.DataError(data.paper_code_hint())
        if train_data is None:                    # the paper's setting: its data, its 15K / 500 split
            train_rows, test_rows = data.paper_math(args.seed, limit=args.limit)
        else:
            train_rows = data.load(train_data, args.task, fields, split=args.split, limit=args.limit)
        if test_data:
            test_rows = data.load(test_data, args.task, fields, split="test")
    except data.DataError as e:
        raise SystemExit(f"error: {e}") from None
    return model, train_rows, test_rows


def dry_run(args, methods, budget_mode=None) -> int:
    """--dry-run: print the plan (data.plan_lines) for --limit questions, or the paper's 15K, and exit."""
    n_train = args.limit or (data.PAPER_TRAIN if not args.toy and not args.data else None)
    if n_train is None:
        raise SystemExit("error: --dry-run counts from the knobs, not from the data: pass --limit N, the number "
                         "of training questions to plan for")
    print("\n".join(data.plan_lines(args, n_train, methods, budget_mode or ("equal" if args.toy else "paper"))))
    return 0


def load(path: str, args, train: bool = False, quiet: bool = True, with_tokenizer: bool = False):
    """A model in the run's precision (bf16 on CUDA); ``train``: with gradient checkpointing if the
    run uses it; (model, tokenizer) with ``with_tokenizer``. One line instead of a stack trace when it
    cannot be loaded."""
    dtype, grad_ckpt = gpu_memory.train_precision(args.gpu_path, args.no_grad_ckpt)
    try:
        model, tok = load_model(path, gradient_checkpointing=train and grad_ckpt, quiet=quiet, dtype=dtype)
    except ModelLoadError as e:
        raise SystemExit(f"error: {e}") from None
    return (model, tok) if with_tokenizer else model


def open_run(args) -> dict:
    """Everything before the algorithm: processes, threads, the data, the fit check, the starting
    model and its tokenizer, the run folder, the held-out table. A run that cannot start writes nothing."""
    distributed.setup()                             # distributed: under torchrun, join the process group
    torch.set_num_threads(repro.cpu_threads(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seed_all(args.seed)
    run_dir = os.path.join(args.runs_dir, args.run_name)
    config.check_resume(args, run_dir)
    if not args.resume and any(os.path.exists(os.path.join(run_dir, f)) for f in ("checkpoint.pt", "final")):
        raise SystemExit(f"error: {run_dir} already holds a run; add --resume to continue it, "
                         "or pick another --run-name")
    model_name, train_rows, test_rows = load_data(args)
    gpu_memory.fit_check(args, MODEL_ALIASES.get(model_name, model_name))   # CUDA: stop if it cannot fit
    gpu_memory.use_expandable_segments()            # CUDA: before the first allocation
    model, tok = load(model_name, args, train=True, quiet=args.quiet, with_tokenizer=True)
    run = Run(run_dir, vars(args), args.resume, tracking.start(args.report_to, run_dir, vars(args), args.resume))
    if args.toy and (note := repro.check_pinned(torch)):
        run.say(note)
    if args.toy and (args.p_correct, args.p_wrong) != (toy.CONTROL_PHRASES[1], toy.CONTROL_PHRASES[0]):
        run.say(f"note: the toy base was pre-trained to continue after P_r = {toy.CONTROL_PHRASES[1]!r} / "
                f"{toy.CONTROL_PHRASES[0]!r} only; it has never read these phrases, so expect its revisions "
                "to ignore them (pool correction near 0) until SRT teaches them")
    table = Table(args, run, tok, test_rows[:args.eval_questions], training_sampling(args))
    return {"run": run, "model_name": model_name, "model": model, "tok": tok, "train_rows": train_rows,
            "table": table, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def finish_run(args, run: Run, table: Table, t_start: float) -> None:
    """The held-out table (table.md) and the charts (report.html)."""
    table.write()
    charts = report.write_report([run.dir]) if distributed.is_main() else None
    run.say(f"\ntotal wall time {time.time() - t_start:.0f}s; outputs in {run.dir}/ (charts: {charts})")
    if not args.toy:                   # the table above is the in-distribution one; Table 1 has more columns
        run.say(f"Table 1's math columns (AIME24, AIME25, HMMT25, AMOBench, OpenR1, MATH-500; avg@8 at 32K "
                f"tokens): python evaluate.py {run.dir} --benchmark paper")
    run.close()                                     # --report-to: the tracker's run ends here


if __name__ == "__main__":
    sys.exit(main())
