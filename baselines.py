"""baselines.py — RFT, GRPO and SDFT, the paper's comparisons at the same generation budget.

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
  teacher — the student itself — collapsed the toy student to empty 96-token rambles within 40
  steps, the failure every self-distillation peer reports; anchors.md §0.6.)

Budget accounting is shared with train.py: every generated response counts as one generation
(paper App. C.2), and generated tokens are counted the same way for every method.
"""
from __future__ import annotations

import torch

import distill
from generate import prompt_ids, rollout, rollout_metrics
from revise import distill_on_policy, grade, phrase_ids, scored_batch

DAPO_CLIP = (0.2, 0.28)


# --------------------------------------------------------------------------------------------
# RFT
# --------------------------------------------------------------------------------------------
def rft_collect(model, tok, items, *, task="math", n=4, gen=None, phrases=None,
                progress=False) -> tuple[list[dict], dict]:
    """Sample n responses per question, keep the verified-correct ones (deduplicated).

    Returns SFT examples in the SRT example format (loss on the completion only) and stats.
    """
    xs = [prompt_ids(tok, it["question"], task) for it in items]
    rolls = rollout(model, tok, xs, n=n, progress=progress, desc="RFT samples", **(gen or {}))
    kw = {} if phrases is None else {"phrases": phrases}
    rewards = grade(task, [r.text for r in rolls], [items[r.index] for r in rolls], **kw)
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


def grpo_step(args, student, tok, items, phrases, device) -> dict:
    """One GRPO update on a batch of fresh rollouts (n per question); gradients accumulated."""
    n = args.grpo_n
    xs = [prompt_ids(tok, it["question"], args.task) for it in items]
    rolls = rollout(student, tok, xs, n=n, temperature=args.temperature, top_p=args.top_p, top_k=0,
                    max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch)
    rewards = grade(args.task, [r.text for r in rolls], [items[r.index] for r in rolls], phrases)
    adv = group_advantages(torch.tensor(rewards), n)
    temp = args.temperature if args.temperature > 0 else 1.0
    n_tok = sum(r.num_tokens for r in rolls)
    loss_sum = 0.0
    for s in range(0, len(rolls), args.micro_batch):
        rs = rolls[s:s + args.micro_batch]
        if not any(r.completion_ids for r in rs):
            continue
        sb = scored_batch([r.prompt_ids for r in rs], [r.completion_ids for r in rs], tok.pad_token_id)
        targets = sb["targets"].to(device)
        a = torch.tensor([float(adv[s + j]) for j, r in enumerate(rs) for _ in r.completion_ids],
                         device=device)
        w = torch.full_like(a, 1.0 / max(n_tok, 1))          # token-level normalisation (DAPO)
        hidden = distill.gather_rows(distill.final_hidden(student, sb["ids"].to(device),
                                                          sb["mask"].to(device)),
                                     sb["rows"].to(device), sb["cols"].to(device))

        def loss_fn(logits, sl, targets=targets, a=a, w=w):
            # The policy that sampled is softmax(logits / T): its log-probs, not the T = 1 ones,
            # make this the policy gradient of the policy that generated the rollouts.
            logp = torch.log_softmax(logits / temp, -1).gather(-1, targets[sl, None]).squeeze(-1)
            # On-policy: the rollouts came from these very weights, so old_logp = logp (detached).
            return (clipped_pg_loss(logp, logp.detach(), a[sl]) * w[sl]).sum()

        loss_sum += float(distill.chunked_head_backward(student, hidden, loss_fn))
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
    from generate import build_messages
    if context == "assistant":
        from revise import Phrases
        p = (phrases or Phrases()).correct
        return (prompt_ids(tok, question, task) + tok(demo, add_special_tokens=False)["input_ids"]
                + phrase_ids(tok, p))
    if context != "user":
        raise ValueError(f"unknown SDFT context {context!r} (expected 'user' or 'assistant')")
    msgs = build_messages(DEMO_TEMPLATE.format(question=question, demo=demo), task)
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def sdft_step(args, student, teacher, tok, items, phrases, demo_fn) -> dict:
    """One SDFT step: student samples y | x; the teacher (a frozen copy of the same model) reads
    x + demonstration and scores the same y; student minimises the same KL as SD-Zero."""
    xs = [prompt_ids(tok, it["question"], args.task) for it in items]
    rolls = rollout(student, tok, xs, n=args.rollouts_per_question, temperature=args.temperature,
                    top_p=args.top_p, top_k=0, max_new_tokens=args.max_new_tokens,
                    batch_size=args.gen_batch)
    rewards = grade(args.task, [r.text for r in rolls], [items[r.index] for r in rolls], phrases)
    demo_x = [sdft_teacher_prompt(tok, items[r.index]["question"], demo_fn(items[r.index]), args.task,
                                  args.sdft_context, phrases) for r in rolls]
    out = distill_on_policy(student, teacher, [r.prompt_ids for r in rolls], demo_x,
                            [r.completion_ids for r in rolls], tok.pad_token_id,
                            micro_batch=args.micro_batch, norm=args.norm, k=args.topk, kind=args.kl,
                            mix=args.mix, support=args.support, temperature=args.temperature)
    return {**out, **rollout_metrics(rolls, rewards)}
