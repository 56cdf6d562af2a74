"""baselines.py — RFT, GRPO, SDFT and SFT, the paper's comparisons (Table 1) at its generation budget.

    python baselines.py rft            # the toy world, at the budget the default SD-Zero run spends
    python baselines.py grpo --budget 9000
    python baselines.py sdft --model Qwen/Qwen3-4B-Instruct             # Table 3's budget: 15K x 4 = 60K
    python baselines.py rft --model Qwen/Qwen3-4B-Instruct --dry-run    # the plan, nothing loaded

SD-Zero's central claim is comparative (paper Table 1, §4.3, §7): with the same questions and about
the same number of generated responses, SD-Zero beats
* **RFT** (rejection fine-tuning): sample n responses per question, keep the verified-correct ones,
  SFT on them with the SRT optimiser settings. It throws the wrong attempts away — SRT keeps them
  in context and learns "wrong → fix" from them.
* **GRPO** (the paper's footnote: a DAPO-style variant): n rollouts per question, binary reward,
  group-normalised advantages A_i = (r_i − mean_g) / (std_g + ε), clipped policy ratio with
  DAPO's asymmetric clip (1 − 0.2, 1 + 0.28), token-level normalisation (every token of the batch
  weighs the same), no reference-KL term. Each rollout batch is cut into --grpo-updates
  mini-batches, one optimizer step each (DAPO's recipe: 16); the ratio's denominator is the policy
  that sampled, so from the second mini-batch on the clip acts. With one update (the toy's) the
  ratio is 1 in value but its gradient is the policy gradient.
* **SDFT** (self-distillation fine-tuning): on-policy self-distillation like Phase 2, but the
  teacher is the same model conditioned on a correct demonstration instead of on the student's
  own answer + P_r. Same divergence code as SD-Zero (distill.py), and the same teacher handling:
  a frozen copy of the starting weights, re-synchronised every --teacher-sync steps. (A live
  teacher — the student itself — collapses the student: docs/findings.md, "Where the code's
  choices come from".) The demonstration (--demo) is, as in the paper, a DeepSeek-R1 trace from
  the dataset that the dataset marks correct; `--demo answer` is Table 8's final-answer-only variant.
* **SFT**: supervised fine-tuning on those same demonstrations, with SRT's optimiser settings. It
  generates nothing, so it spends 0 generations.

Each method runs through train.py's own loops (``srt_loop`` for RFT and SFT, ``phase2`` for GRPO and SDFT,
with a step function of the same shape as distill.phase2_step) and takes train.py's flags, so its
knobs, checkpoints, resume and held-out table are SD-Zero's. Budget accounting is shared too: every
generated response counts as one generation (paper App. C.2), and generated tokens are counted the
same way for every method.
"""
from __future__ import annotations

import json
import os
import sys
import time

from machinery import repro

if __name__ == "__main__":
    repro.before_torch(sys.argv[1:])   # as train.py does
import torch

import config
import data
import distill
import toy
import train
from generate import build_messages, end_of_turn_id, prompt_ids, rollout_metrics, sample_and_grade, training_sampling
from machinery import distributed
from machinery.lm_head import chunked_head_backward, hidden_rows, scored_batch
from machinery.run import seed_all
from revise import Phrases, phrase_ids

DAPO_CLIP = (0.2, 0.28)


# --------------------------------------------------------------------------------------------
# RFT
# --------------------------------------------------------------------------------------------
def rft_collect(model, tok, items, *, task="math", n=4, gen=None, phrases=None,
                progress=False) -> tuple[list[dict], dict]:
    """Sample n responses per question, keep the verified-correct ones (deduplicated).

    Returns SFT examples in the SRT example format (loss on the completion only) and stats.
    """
    rolls, rewards = sample_and_grade(model, tok, items, task=task, n=n, phrases=phrases or Phrases(),
                                      gen=gen, progress=progress, desc="RFT samples")
    examples, seen = [], set()
    for r, rw in zip(rolls, rewards):
        key = (r.index, tuple(r.completion_ids))
        if rw < 0.5 or key in seen:
            continue
        seen.add(key)
        ids = list(r.prompt_ids) + list(r.completion_ids)
        mask = [0] * len(r.prompt_ids) + [1] * len(r.completion_ids)
        examples.append({"input_ids": ids, "rev_mask": mask, "gen_mask": mask, "wrong_init": False})
    stats = {"questions": len(items), "samples": len(rolls), "correct": int(sum(rewards)),
             "kept": len(examples), "generations": len(rolls),
             "generated_tokens": sum(r.num_tokens for r in rolls)}
    return examples, stats


# --------------------------------------------------------------------------------------------
# GRPO (DAPO-style)
# --------------------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, n: int, eps: float = 1e-6) -> torch.Tensor:
    """A_i = (r_i − mean of its group) / (std of its group + ε); groups are n consecutive rollouts.

    A group whose rewards are all equal carries no signal and gets A = 0 (DAPO would resample it;
    here it simply contributes no gradient). std is the unbiased one, as in TRL.
    """
    g = rewards.float().view(-1, n)
    std = g.std(dim=1, keepdim=True) if n > 1 else torch.zeros_like(g[:, :1])
    return ((g - g.mean(dim=1, keepdim=True)) / (std + eps)).view(-1)


def clipped_pg_loss(logp, old_logp, adv, clip=DAPO_CLIP) -> torch.Tensor:
    """Per-token PPO/DAPO surrogate −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A), ρ = exp(logp − old)."""
    ratio = torch.exp(logp - old_logp)
    return -torch.minimum(ratio * adv, ratio.clamp(1 - clip[0], 1 + clip[1]) * adv)


def grpo_step(args, student, teacher, tok, items, *, phrases, eos, gen, count_all=distill.count_local) -> dict:
    """One GRPO rollout batch: --grpo-n rollouts per question, graded, group advantages; then the
    policy updates, returned as ``updates``: one backward pass per mini-batch, which train.phase2
    runs, each followed by its own optimizer step (DAPO: several updates per rollout batch).

    The same signature as distill.phase2_step, so train.phase2 runs it (``teacher`` and ``eos`` are
    unused: GRPO has no teacher). ``count_all`` makes the token mean global under torchrun.

    Why the updates are handed back instead of run here: the optimizer, its schedule, the clip and
    the NaN guard belong to phase2's loop, shared by every on-policy method. The ratio's denominator
    must be the policy that SAMPLED, so it is scored once, before the first update (``old_logps``);
    with --grpo-updates 1 those are the weights being differentiated, and logp.detach() is the same.
    """
    n, updates = args.grpo_n, args.grpo_updates
    rolls, rewards = sample_and_grade(student, tok, items, task=args.task, n=n, phrases=phrases, gen=gen)
    adv = group_advantages(torch.tensor(rewards), n).tolist()
    temp = args.temperature if args.temperature > 0 else 1.0
    old = old_logps(student, tok, rolls, temp, args.micro_batch) if updates > 1 else [None] * len(rolls)
    # Mini-batches of whole groups, in rollout order (as DAPO's trainer splits its rollout batch). Every
    # rank makes the same number, empty ones included, so the optimizer steps stay in lockstep.
    per = max(1, -(-len(items) // updates) * n)
    parts = [range(s, min(s + per, len(rolls))) for s in range(0, updates * per, per)]

    def update(idx):
        return lambda: pg_backward(args, student, tok, [rolls[i] for i in idx], [adv[i] for i in idx],
                                   [old[i] for i in idx], temp, count_all)
    return {"loss": 0.0, "kl_per_token": None, "updates": [update(p) for p in parts],
            **rollout_metrics(rolls, rewards)}


def token_logp(logits: torch.Tensor, targets: torch.Tensor, temp: float) -> torch.Tensor:
    """log π_T(y_t): the policy that samples is softmax(logits / T), so its log-probs, not the T = 1
    ones, make the ratio and the gradient those of the policy that generated the rollouts."""
    return torch.log_softmax(logits / temp, -1).gather(-1, targets[:, None]).squeeze(-1)


def old_logps(model, tok, rolls, temp: float, micro_batch: int) -> list[torch.Tensor]:
    """Per rollout, log π_old(y_t) of its tokens under the current (sampling) weights, no gradient,
    through the same body + chunked head as the loss, so the first update's ratio is 1."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(rolls), micro_batch):
        rs = rolls[s:s + micro_batch]
        b = {k: v.to(device) for k, v in scored_batch([r.prompt_ids for r in rs], [r.completion_ids for r in rs],
                                                     tok.pad_token_id).items()}
        flat = torch.empty(len(b["targets"]), device=device)

        def keep(logits, sl, b=b, flat=flat):
            flat[sl] = token_logp(logits, b["targets"][sl], temp)
            return logits.new_zeros(())
        with torch.no_grad():
            chunked_head_backward(model, hidden_rows(model, b), keep, backward=False)
        out += list(flat.split([len(r.completion_ids) for r in rs]))
    return out


def pg_backward(args, student, tok, rolls, adv, old, temp: float, count_all) -> float:
    """Backward of one mini-batch's clipped surrogate, every token weighing 1 / (the mini-batch's
    tokens on all ranks): DAPO's token-level normalisation. ``old[i]``: rollout i's sampling
    log-probs, or None for ratio-1 (old = logp.detach()). Returns the loss value."""
    n_tok = count_all([sum(r.num_tokens for r in rolls)])[0]
    device = next(student.parameters()).device
    loss_sum = 0.0
    for s in range(0, len(rolls), args.micro_batch):
        rs, olds = rolls[s:s + args.micro_batch], old[s:s + args.micro_batch]
        b = {k: v.to(device) for k, v in scored_batch([r.prompt_ids for r in rs], [r.completion_ids for r in rs],
                                                     tok.pad_token_id).items()}
        targets = b["targets"]
        a = torch.tensor([float(adv[s + j]) for j, r in enumerate(rs) for _ in r.completion_ids], device=device)
        o = None if olds[0] is None else torch.cat(olds).to(device)
        w = torch.full_like(a, 1.0 / max(n_tok, 1))          # token-level normalisation (DAPO)
        hidden = hidden_rows(student, b)                      # [n, H]

        def loss_fn(logits, sl, targets=targets, a=a, w=w, o=o):
            logp = token_logp(logits, targets[sl], temp)
            return (clipped_pg_loss(logp, logp.detach() if o is None else o[sl], a[sl]) * w[sl]).sum()

        loss_sum += float(chunked_head_backward(student, hidden, loss_fn))
    return loss_sum


# --------------------------------------------------------------------------------------------
# SDFT
# --------------------------------------------------------------------------------------------
DEMO_TEMPLATE = ("{question}\n\nHere is an example of a correct response to this question:\n\n"
                 "{demo}\n\nNow write a response of your own.")


def sdft_teacher_prompt(tok, question: str, demo: str, task: str = "math", context: str = "user",
                        phrases=None) -> list[int]:
    """The SDFT teacher's context, before the student's Y.

    "user" (the SDFT paper's way): the question plus the correct demonstration in the user turn,
    with the same task instruction as the student's prompt.
    "assistant": X + demonstration + S(P_correct) — the demonstration shown as an earlier correct
    answer inside the assistant turn. A model that cannot read English instructions (the toy) can
    still read this layout; it is SD-Zero's teacher layout with a gold answer instead of the
    student's own, and no SRT before it.
    """
    if context == "assistant":
        p = (phrases or Phrases()).correct
        return (prompt_ids(tok, question, task) + tok(demo, add_special_tokens=False)["input_ids"]
                + phrase_ids(tok, p))
    if context != "user":
        raise ValueError(f"unknown SDFT context {context!r} (expected 'user' or 'assistant')")
    msgs = build_messages(DEMO_TEMPLATE.format(question=question, demo=demo), task)
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def sdft_step(args, student, teacher, tok, items, *, phrases, eos, gen, count_all=distill.count_local) -> dict:
    """One SDFT step: the student samples y | x; the teacher (a frozen copy of the starting model)
    reads x + demonstration and scores the same y; the student minimises the same KL as SD-Zero
    (distill.distill_batch). The same signature as distill.phase2_step."""
    rolls, rewards = sample_and_grade(student, tok, items, task=args.task, n=args.rollouts_per_question,
                                      phrases=phrases, gen=gen)
    demo = demo_function(args)
    demo_x = [sdft_teacher_prompt(tok, items[r.index]["question"], demo(items[r.index]), args.task,
                                  args.sdft_context, phrases) for r in rolls]
    ys = [r.completion_ids for r in rolls]
    out = distill.distill_batch(student, teacher, [r.prompt_ids for r in rolls], demo_x, ys, tok.pad_token_id,
                                weights=distill.batch_token_weights(ys, args.norm, count_all),
                                micro_batch=args.micro_batch, k=args.topk, kind=args.kl, mix=args.mix,
                                support=args.support, temperature=args.temperature,
                                kl_temperature=args.kl_temperature)
    kl = out["per_token_kl"]
    return {"loss": out["loss"], "kl_per_token": float(kl.mean()) if len(kl) else 0.0,
            **rollout_metrics(rolls, rewards)}


# --------------------------------------------------------------------------------------------
# The entry point: train.py's setting, one method instead of Phase 1 + Phase 2
# --------------------------------------------------------------------------------------------
METHODS = ("rft", "grpo", "sdft", "sft")


def run_method(args, model_name, model, tok, rows, run, budget: int) -> int:
    """RFT, GRPO, SDFT or SFT on all training questions within ``budget`` generations (how: data.baseline_plan);
    writes final/. Returns the generations spent."""
    phrases = Phrases(args.p_correct, args.p_wrong)
    label = args.method.upper()
    plan = data.baseline_plan(args, args.method, len(rows), budget)
    if args.method == "sft":
        # SFT (paper Table 1): the demonstrations themselves, no sampling; SRT's optimiser, like RFT
        examples = sft_examples(tok, rows, demo_function(args), args.task)
        train.srt_loop(args, model, tok, [("gen", examples)], run, (0, 0), "final", label=label)
        return 0
    if args.method == "rft":
        n = plan["samples"]
        examples_path, stats_path = run.path("rft_examples.jsonl"), run.path("rft_stats.json")
        if run.ckpt is None or not os.path.exists(examples_path):
            run.say(f"[RFT] sampling {n} responses for each of {len(rows)} questions (budget {budget})")
            examples, stats = rft_collect(model, tok, distributed.split(rows, None), task=args.task, n=n,
                                          gen=training_sampling(args), phrases=phrases, progress=not args.quiet)
            examples, stats = distributed.gather_examples(examples, stats)   # distributed: all ranks'

            def write():
                data.write_jsonl_atomic(examples_path, examples)
                json.dump(stats, open(stats_path, "w"), indent=1)
            distributed.on_main(write)                  # distributed: rank 0 writes, all read below
            run.say(f"[RFT] kept {stats['kept']} correct of {stats['samples']}")
        examples, stats = data.read_jsonl(examples_path), json.load(open(stats_path))
        if not examples:
            raise SystemExit("error: RFT kept no correct response; nothing to fine-tune on")
        train.srt_loop(args, model, tok, [("gen", examples)], run, (stats["generations"], stats["generated_tokens"]),
                       "final", label=label)
        return stats["generations"]
    teacher = None
    if args.method == "grpo":
        # GRPO has its own step size and batch: the Phase-2 ones (3e-4, 32 questions x 4) left the
        # toy flat and higher rates collapsed it (docs/findings.md, "GRPO's step size"); the budget
        # is unchanged.
        # A step is one rollout batch of --grpo-updates mini-batches (data.baseline_plan).
        lr, step = args.grpo_lr, grpo_step
    else:
        lr, step = args.lr, sdft_step
        teacher = train.load(model_name, args)          # frozen copy, as SD-Zero's teacher
    steps, batch_questions = plan["steps"], plan["batch_questions"]
    run.say(f"[{label}] {steps} steps x {plan['per_step']} rollouts (budget {budget} generations)")
    if run.ckpt is None:
        seed_all(args.seed + 1)
    train.phase2(args, model, teacher, tok, rows, run, (0, 0), steps=steps, lr=lr,
                 batch_questions=batch_questions, step=step, label=label)
    return run.last_metric()["generations"]


def demo_function(args):
    """The demonstration for a question, for SDFT's teacher and SFT's targets (--demo).

    r1: the DeepSeek-R1 trace data.paper_math picked (the paper's; on the toy, toy.solve's worked
    solution stands in for it); solution: the --solution-field text (the toy: toy.solve again);
    answer: the final answer alone, "The final answer is \\boxed{a}." (paper Table 8)."""
    if args.demo == "answer":
        return lambda item: f"The final answer is \\boxed{{{item['answer']}}}."
    if args.toy:
        return lambda item: toy.solve(item["question"])
    field, flag = ("r1", "an R1 trace marked correct (the paper's data has them; with --data use "
                   "--demo solution)") if args.demo == "r1" else ("solution", f"field {args.solution_field!r}")

    def from_data(item):
        if not item.get(field):
            raise SystemExit(f"error: --demo {args.demo} needs {flag} for every question; question id "
                             f"{item.get('id')!r} has none")
        return item[field]
    return from_data


def sft_examples(tok, rows, demo, task: str) -> list[dict]:
    """SFT examples in the SRT example format: chat prompt X + demonstration + end of turn, with the
    loss on the demonstration only (as RFT's examples, with the dataset's text instead of a sample)."""
    eos = end_of_turn_id(tok)             # written, not sampled: the token the chat template closes a turn with
    out = []
    for item in rows:
        x = prompt_ids(tok, item["question"], task)
        y = tok(demo(item), add_special_tokens=False)["input_ids"] + [eos]
        mask = [0] * len(x) + [1] * len(y)
        out.append({"input_ids": x + y, "rev_mask": mask, "gen_mask": mask, "wrong_init": False})
    return out


def build_parser():
    p = config.build_parser("The baselines of SD-Zero's Table 1, through train.py's loops at its budget.")
    p.add_argument("method", choices=METHODS, help="rft, grpo, sdft or sft")
    p.add_argument("--budget", type=budget_arg, default=None,
                   help="generations to spend: paper = every training question x 4 (Table 3: 15K x 4 = 60K; "
                        "the default with --model), equal = SD-Zero's planned total (data.planned_budget; the "
                        "toy's default, so its table compares equal budgets), or a number")
    return p


def budget_arg(text: str):
    if text in ("paper", "equal") or (text.isdigit() and int(text) > 0):
        return text if not text.isdigit() else int(text)
    raise ValueError(text)                              # argparse: "invalid budget_arg value"


def main(argv=None) -> int:
    args = config.resolve(build_parser().parse_args(argv))
    args.budget = args.budget or ("equal" if args.toy else "paper")
    if args.dry_run:
        return train.dry_run(args, (args.method,), args.budget)
    t_start = time.time()
    setting = train.open_run(args)
    run, tok, table, rows = setting["run"], setting["tok"], setting["table"], setting["train_rows"]
    model = setting.pop("model")
    run.say(f"run {run.dir}: model {setting['model_name']}, {len(rows)} training questions, all for "
            f"{args.method.upper()}; device {setting['device']}")
    if run.ckpt is None or "base" in table.evals:
        table.add("base", model, 0)
    budget = data.baseline_budget(args, len(rows), args.budget)
    run.say(f"plan: {data.baseline_plan(args, args.method, len(rows), budget)['text']} "
            f"(budget {budget}: --budget {args.budget})")
    spent = run_method(args, setting["model_name"], model, tok, rows, run, budget)
    del model                          # trained in place and saved as final/, which is evaluated
    table.add(args.method.upper(), train.load(run.path("final"), args), spent)
    train.finish_run(args, run, table, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
