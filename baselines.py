"""baselines.py — RFT, GRPO and SDFT, the paper's comparisons (Table 1) at the same generation budget.

    python baselines.py rft            # the toy world, at the budget the default SD-Zero run spends
    python baselines.py grpo --budget 9000
    python baselines.py sdft --model Qwen/Qwen3-4B-Instruct

SD-Zero's central claim is comparative (paper Table 1, §4.3, §7): with the same questions and about
the same number of generated responses, SD-Zero beats
* **RFT** (rejection fine-tuning): sample n responses per question, keep the verified-correct ones,
  SFT on them with the SRT optimiser settings. It throws the wrong attempts away — SRT keeps them
  in context and learns "wrong → fix" from them.
* **GRPO** (the paper's footnote: a DAPO-style variant): n rollouts per question, binary reward,
  group-normalised advantages A_i = (r_i − mean_g) / (std_g + ε), clipped policy ratio with
  DAPO's asymmetric clip (1 − 0.2, 1 + 0.28), token-level normalisation (every token of the batch
  weighs the same), no reference-KL term. One policy update per batch of fresh rollouts by default,
  so the ratio is 1 in value but its gradient is the policy gradient.
* **SDFT** (self-distillation fine-tuning): on-policy self-distillation like Phase 2, but the
  teacher is the same model conditioned on a correct demonstration instead of on the student's
  own answer + P_r. Same divergence code as SD-Zero (distill.py), and the same teacher handling:
  a frozen copy of the starting weights, re-synchronised every --teacher-sync steps. (A live
  teacher — the student itself — collapses the student: docs/findings.md, "Where the code's
  choices come from".)

Each method runs through train.py's own loops (``srt_loop`` for RFT, ``phase2`` for GRPO and SDFT,
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
from generate import build_messages, prompt_ids, rollout_metrics, sample_and_grade, training_sampling
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
    """One GRPO update on a batch of fresh rollouts (--grpo-n per question); gradients accumulated.

    The same signature as distill.phase2_step, so train.phase2 runs it (``teacher`` and ``eos`` are
    unused: GRPO has no teacher). ``count_all`` makes the token mean global under torchrun.
    """
    n = args.grpo_n
    rolls, rewards = sample_and_grade(student, tok, items, task=args.task, n=n, phrases=phrases, gen=gen)
    adv = group_advantages(torch.tensor(rewards), n)
    temp = args.temperature if args.temperature > 0 else 1.0
    n_tok = count_all([sum(r.num_tokens for r in rolls)])[0]      # every token of the batch weighs 1/n_tok
    device = next(student.parameters()).device
    loss_sum = 0.0
    for s in range(0, len(rolls), args.micro_batch):
        rs = rolls[s:s + args.micro_batch]
        b = {k: v.to(device) for k, v in scored_batch([r.prompt_ids for r in rs], [r.completion_ids for r in rs],
                                                     tok.pad_token_id).items()}
        targets = b["targets"]
        a = torch.tensor([float(adv[s + j]) for j, r in enumerate(rs) for _ in r.completion_ids], device=device)
        w = torch.full_like(a, 1.0 / max(n_tok, 1))          # token-level normalisation (DAPO)
        hidden = hidden_rows(student, b)                      # [n, H]

        def loss_fn(logits, sl, targets=targets, a=a, w=w):
            # The policy that sampled is softmax(logits / T): its log-probs, not the T = 1 ones,
            # make this the policy gradient of the policy that generated the rollouts.
            logp = torch.log_softmax(logits / temp, -1).gather(-1, targets[sl, None]).squeeze(-1)
            # On-policy: the rollouts came from these very weights, so old_logp = logp (detached).
            return (clipped_pg_loss(logp, logp.detach(), a[sl]) * w[sl]).sum()

        loss_sum += float(chunked_head_backward(student, hidden, loss_fn))
    return {"loss": loss_sum, "kl_per_token": None, **rollout_metrics(rolls, rewards)}


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
METHODS = ("rft", "grpo", "sdft")


def run_method(args, model_name, model, tok, rows, run, budget: int) -> int:
    """RFT, GRPO or SDFT on all training questions within ``budget`` generations; writes final/.
    Returns the generations spent."""
    phrases = Phrases(args.p_correct, args.p_wrong)
    label = args.method.upper()
    if args.method == "rft":
        n = max(1, budget // len(rows))
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
        lr, batch_questions, per_step, step = args.grpo_lr, args.grpo_batch_questions, args.grpo_n, grpo_step
    else:
        lr, batch_questions, per_step, step = args.lr, args.batch_questions, args.rollouts_per_question, sdft_step
        teacher = train.load(model_name, args)          # frozen copy, as SD-Zero's teacher
    per_step *= batch_questions
    steps = max(1, budget // per_step)
    run.say(f"[{label}] {steps} steps x {per_step} rollouts (budget {budget} generations)")
    if run.ckpt is None:
        seed_all(args.seed + 1)
    train.phase2(args, model, teacher, tok, rows, run, (0, 0), steps=steps, lr=lr,
                 batch_questions=batch_questions, step=step, label=label)
    return run.last_metric()["generations"]


def demo_function(args):
    """SDFT's demonstration for a question: the toy writes a correct worked solution; real data
    must carry a reference solution (--solution-field)."""
    if args.toy:
        return lambda item: toy.solve(item["question"])

    def from_data(item):
        if not item.get("solution"):
            raise SystemExit(f"error: SDFT needs a reference solution per question; field "
                             f"{args.solution_field!r} is missing for question id {item.get('id')!r}")
        return item["solution"]
    return from_data


def build_parser():
    p = config.build_parser("The baselines of SD-Zero's Table 1, through train.py's loops at its budget.")
    p.add_argument("method", choices=METHODS, help="rft, grpo or sdft")
    p.add_argument("--budget", type=int, default=0,
                   help="generations to spend (default: what SD-Zero's settings would use, data.planned_budget)")
    p.add_argument("--grpo-n", type=int, default=4,
                   help="GRPO rollouts per question (paper budget table: 4; Table 5: 8)")
    return p


def main(argv=None) -> int:
    args = config.resolve(build_parser().parse_args(argv))
    t_start = time.time()
    setting = train.open_run(args)
    run, tok, table, rows = setting["run"], setting["tok"], setting["table"], setting["train_rows"]
    model = setting.pop("model")
    run.say(f"run {run.dir}: model {setting['model_name']}, {len(rows)} training questions, all for "
            f"{args.method.upper()}; device {setting['device']}")
    if run.ckpt is None or "base" in table.evals:
        table.add("base", model, 0)
    budget = args.budget or data.planned_budget(args, len(rows))
    spent = run_method(args, setting["model_name"], model, tok, rows, run, budget)
    del model                          # trained in place and saved as final/, which is evaluated
    table.add(args.method.upper(), train.load(run.path("final"), args), spent)
    train.finish_run(args, run, table, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
