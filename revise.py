"""revise.py — the reviser: control phrases P_r, id layouts, and Phase 1 self-revision collection.

SD-Zero (arXiv 2604.12002) §2.1–2.2. The same weights act as a *reviser* when the assistant turn
already holds an answer followed by a reward-dependent control phrase P_r:

    r = 1  ->  "Let me rephrase the above solution."
    r = 0  ->  "Wait, this response is not correct, let me start over."

The binary reward enters **only** through which phrase is appended — no gold answer, no error
message (paper §2.1). Notation for the token layouts:

    X      chat-templated prompt ending in the assistant-start marker   (generate.prompt_ids)
    Y      sampled completion ids, as generated (incl. EOS when finished)
    Y'     Y without its trailing EOS
    S(P)   ids of "\\n\\n" + P + "\\n\\n"

    reviser prompt (Phase 1)   X + Y_init' + S(P_r)                 -> sample Y_rev
    SRT example (eq. 1–3)      X + Y_init' + S(P_r) + Y_rev
        revision mask   = Y_rev (incl. EOS)               L_rev = −log π(Y_rev | X, Y_init, P_r)   (eq. 1)
        generation mask = everything after X              L_gen = −log π([Y_init, P_r, Y_rev] | X) (eq. 2)
    teacher sequence (Phase 2) X + Y' + S(P_r) + Y
        the positions predicting the *second* copy of Y are aligned one-to-one with the student's
        positions predicting Y after X (eq. 4).

Everything is built by **id concatenation**: decoding Y and re-encoding it could change the tokens,
and then the teacher would be scoring a sequence the student never sampled.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

import distill
import distributed
import reward
from generate import Rollout, end_of_turn_id, eos_ids, pad, prompt_ids, rollout
from reward import P_CORRECT, P_WRONG, P_WRONG_OFFICIAL  # noqa: F401  (P_WRONG_OFFICIAL: for --p-wrong)

# P_r's strings are reward.py's (the binary reward as text); SEP frames them in every layout.
SEP = "\n\n"


@dataclass(frozen=True)
class Phrases:
    """The two control phrases. Phase 1 and Phase 2 must use the same pair (the SRT model was
    trained on exactly these strings)."""
    correct: str = P_CORRECT
    wrong: str = P_WRONG

    def pick(self, r: float) -> str:
        return self.correct if r >= 0.5 else self.wrong


def phrase_ids(tokenizer, phrase: str) -> list[int]:
    """S(P): ids of "\\n\\n" + P + "\\n\\n", encoded on its own (no special tokens)."""
    return tokenizer(SEP + phrase + SEP, add_special_tokens=False)["input_ids"]


def strip_eos(y: list[int], eos: set[int] | list[int]) -> list[int]:
    """Y': the answer as context. Its EOS is dropped so the turn continues into P_r (paper §2.1:
    the revision is a continuation of the same assistant turn)."""
    return y[:-1] if y and y[-1] in set(eos) else list(y)


# --------------------------------------------------------------------------------------------
# Id layouts
# --------------------------------------------------------------------------------------------
def reviser_prompt(x: list[int], y: list[int], s: list[int], eos) -> list[int]:
    """X + Y' + S(P_r): what the reviser continues from."""
    return list(x) + strip_eos(y, eos) + list(s)


def srt_example(x, y_init, s, y_rev, eos) -> dict:
    """One SRT training sequence and its two target masks (paper eq. 1 and eq. 2).

    ``rev_mask[i] = 1`` / ``gen_mask[i] = 1`` mark token i as a *target* (predicted from position
    i − 1). Both masks live on the same ids, so L_rev and L_gen need a single forward pass.
    """
    head = reviser_prompt(x, y_init, s, eos)
    ids = head + list(y_rev)
    rev = [0] * len(head) + [1] * len(y_rev)
    gen = [0] * len(x) + [1] * (len(ids) - len(x))
    return {"input_ids": ids, "rev_mask": rev, "gen_mask": gen}


def teacher_sequence(x, y, s, eos) -> tuple[list[int], int]:
    """X + Y' + S(P_r) + Y, and the index where the second copy of Y starts."""
    head = reviser_prompt(x, y, s, eos)
    return head + list(y), len(head)


def score_positions(starts: list[int], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (row, col) pairs of the positions whose next-token distribution predicts a target.

    Row b has ``lengths[b]`` targets starting at token index ``starts[b]``; the logits that predict
    token j sit at column j − 1. A flat list (instead of a padded [B, T] mask) means padding can
    never leak into a loss: there is simply no entry for it.
    """
    rows = [b for b, n in enumerate(lengths) for _ in range(n)]
    cols = [s - 1 + t for s, n in zip(starts, lengths) for t in range(n)]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def scored_batch(contexts: list[list[int]], ys: list[list[int]], pad_id: int) -> dict:
    """Right-padded ``context + Y`` rows and the flat (row, col) positions that predict each Y token."""
    ids, mask = pad([list(c) + list(y) for c, y in zip(contexts, ys)], pad_id, "right")
    rows, cols = score_positions([len(c) for c in contexts], [len(y) for y in ys])
    targets = torch.tensor([t for y in ys for t in y], dtype=torch.long)
    return {"ids": ids, "mask": mask, "rows": rows, "cols": cols, "targets": targets}


def phase2_batch(xs, ys, ss, eos, pad_id) -> dict:
    """Student and teacher inputs for Phase 2, aligned token for token.

    student: X + Y, targets Y;   teacher: X + Y' + S(P_r) + Y, targets the second Y.
    Both lists of (row, col) enumerate the same N targets in the same order, so entry i of the
    teacher's top-k belongs to entry i of the student's logits.
    """
    return {"student": scored_batch(xs, ys, pad_id),
            "teacher": scored_batch([reviser_prompt(x, y, sp, eos) for x, y, sp in zip(xs, ys, ss)],
                                    ys, pad_id)}


def distill_on_policy(student, teacher, student_contexts, teacher_contexts, ys, pad_id, *,
                      micro_batch: int, norm: str = "token_mean", k: int = 64, kind: str = "reverse",
                      mix: float = 0.5, support: str = "topk", temperature: float = 1.0) -> dict:
    """Eq. 4 over a batch of on-policy responses Y, micro-batch by micro-batch (gradients accumulate).

    The student scores Y after its own context, the teacher scores the same Y after its context:
    X + Y' + S(P_r) for SD-Zero's reviser, X + demonstration for SDFT. Token weights are computed
    once over the whole batch, so the micro-batch gradients add up to the full-batch gradient.
    Returns the summed loss and the mean per-token KL.
    """
    seq_of_token = torch.tensor([b for b, y in enumerate(ys) for _ in y], dtype=torch.long)
    weights = distill.token_weights(seq_of_token, len(ys), norm)
    if distributed.active():             # distributed: this rank's share of the GLOBAL batch's weights
        weights = distributed.global_weights(weights, len(seq_of_token), len(ys), norm)
    loss_sum, kls, offset = 0.0, [], 0
    for s in range(0, len(ys), micro_batch):
        sl = slice(s, s + micro_batch)
        if sum(len(y) for y in ys[sl]) == 0 and not distributed.active():   # (sharded: all ranks run)
            continue
        st = scored_batch(student_contexts[sl], ys[sl], pad_id)
        te = scored_batch(teacher_contexts[sl], ys[sl], pad_id)
        n = len(st["targets"])
        out = distill.distill_pair(student, teacher, st, te, weights=weights[offset:offset + n],
                                   k=k, kind=kind, mix=mix, support=support, temperature=temperature)
        offset += n
        loss_sum += float(out["loss"])
        kls.append(out["per_token_kl"].float().cpu())
    kl = torch.cat(kls) if kls else torch.zeros(0)
    return {"loss": loss_sum, "kl_per_token": float(kl.mean()) if len(kl) else 0.0}


def fit_teacher_budget(x_len: int, y: list[int], s_len: int, max_teacher_tokens: int) -> list[int]:
    """The teacher reads |X| + 2|Y| + |S| tokens. When that exceeds the cap, truncate Y (for the
    student too) to ⌊(cap − |X| − |S|)/2⌋ tokens, as the official code does."""
    room = (max_teacher_tokens - x_len - s_len) // 2
    return list(y) if len(y) <= room else list(y[:max(room, 0)])


# --------------------------------------------------------------------------------------------
# Grading (reward.py) — only the text after the last P_r counts when a revision is present
# --------------------------------------------------------------------------------------------
def grade(task: str, texts: list[str], items: list[dict], phrases: Phrases = Phrases()) -> list[float]:
    """Binary rewards r(y, a) for many responses; items carry "answer" (math) or "tests" (code)."""
    if not texts:
        return []
    if task == "math":
        return reward.math_reward_batch(texts, [it["answer"] for it in items],
                                        control_phrases=(phrases.correct, phrases.wrong))
    if task == "code":
        return reward.code_reward_batch(texts, [it["tests"] for it in items],
                                        control_phrases=(phrases.correct, phrases.wrong))
    raise ValueError(f"unknown task {task!r}")


def sample_and_grade(model, tok, items, *, task="math", n=1, phrases=Phrases(), gen=None,
                     progress=False, desc="rollouts"):
    """x -> n rollouts y ~ π(·|x) -> r(y, a): the generator and the verifier, written once.

    Returns (rollouts, rewards), grouped by question (question 0's n samples first).
    """
    xs = [prompt_ids(tok, it["question"], task) for it in items]
    rolls = rollout(model, tok, xs, n=n, progress=progress, desc=desc, **(gen or {}))
    return rolls, grade(task, [r.text for r in rolls], [items[r.index] for r in rolls], phrases)


# --------------------------------------------------------------------------------------------
# Phase 1 — collect verified self-revisions (paper §2.1, App. C.1)
# --------------------------------------------------------------------------------------------
SYCOPHANTIC = re.compile(r"^\s*(you'?re absolutely right|thank you for|great question|good catch)"
                         r"[^\n.!]*[.!]?\s*", re.IGNORECASE)


def trim_repeated_tail(text: str, min_len: int = 10, max_len: int = 1500, times: int = 3) -> str:
    """Cut a degenerate tail (a block of 10–1500 chars repeated ≥ 3 times at the end) to one copy,
    as the official ``prepare_data.py`` does. Looping text would otherwise be learned as-is."""
    n = len(text)
    for size in range(min_len, min(max_len, n // times) + 1):
        block = text[n - size:]
        if text.endswith(block * times):
            k = times
            while text.endswith(block * (k + 1)):
                k += 1
            return text[: n - size * (k - 1)]
    return text


def clean_revision(rev: Rollout, tokenizer) -> list[int]:
    """Official cleaning of Y_rev: strip sycophantic openings, trim repeated tails. Untouched text
    keeps its sampled ids; only a changed text is re-encoded (then it is SFT data, not on-policy),
    and it ends with the chat template's end-of-turn token, the one the model emits to stop (not
    merely any EOS id: Qwen3's sorted EOS list starts with <|endoftext|>)."""
    text = rev.text
    new = trim_repeated_tail(SYCOPHANTIC.sub("", text, count=1))
    if new == text:
        return list(rev.completion_ids)
    ids = tokenizer(new, add_special_tokens=False)["input_ids"]
    return ids + ([end_of_turn_id(tokenizer)] if rev.finished else [])


def collect_revisions(model, tokenizer, items: list[dict], *, task: str = "math",
                      phrases: Phrases = Phrases(), n_init: int = 1, n_rev: int = 3,
                      revise_correct: bool = True, gen: dict | None = None,
                      max_traces: int = 0, seed: int = 0,
                      progress: bool = False) -> tuple[list[dict], dict]:
    """Phase 1 data: y_init ~ π(·|x) → r → P_r → n_rev revisions ~ π(·|x, y_init, P_r) → keep the
    verified-correct ones (paper §2.1 steps 1–5). The reviser sees x, y_init and P_r — never the gold.

    ``max_traces`` > 0 caps D_revision as the paper does (App. C.1: 6K traces kept). The paper does
    not say how the 6K were chosen, so a uniformly random subset (from ``seed``) is kept, in order.

    ``items``: dicts with "question" and "answer"/"tests". Returns (rows, stats); each row holds
    ids (for SRT) and texts (for reading), and is JSON-serialisable.

    Under torchrun each rank collects on its share of ``items`` with its unsharded model (no
    communication while generating), and every rank returns the union: rows in rank order, counts
    summed, the cap applied once to all of them, as one process would.
    """
    items = distributed.split(items, None)   # distributed: this rank's share (any split will do)
    gen = dict(gen or {})
    eos = eos_ids(model, tokenizer)
    inits, r_init = sample_and_grade(model, tokenizer, items, task=task, n=n_init, phrases=phrases,
                                     gen=gen, progress=progress, desc="phase1 y_init")

    s_ids = {p: phrase_ids(tokenizer, p) for p in (phrases.correct, phrases.wrong)}
    todo = [(k, r) for k, r in enumerate(inits) if revise_correct or r_init[k] < 0.5]
    rev_prompts = [reviser_prompt(r.prompt_ids, r.completion_ids, s_ids[phrases.pick(r_init[k])], eos)
                   for k, r in todo]
    revs = rollout(model, tokenizer, rev_prompts, n=n_rev, progress=progress,
                   desc="phase1 revisions", **gen)
    # Grade the revision text only: it is a separate rollout, so no P_r can be inside it unless the
    # reviser itself wrote one — and then reward.py grades what follows the last one.
    r_rev = grade(task, [r.text for r in revs], [items[inits[todo[r.index][0]].index] for r in revs],
                  phrases)

    rows, seen, truncated = [], set(), 0
    kept = {"correct_init": 0, "wrong_init": 0}
    for rev, rr in zip(revs, r_rev):
        k, init = todo[rev.index]
        if rr < 0.5:
            continue                      # paper: keep only verified-correct revisions
        if not rev.finished:
            # Cut off by max_new_tokens but already holding a correct answer: as SRT data it would
            # teach the model to run on instead of stopping, so it is dropped (and counted).
            truncated += 1
            continue
        item = items[init.index]
        y_rev = clean_revision(rev, tokenizer)
        key = (item["question"], init.text, tokenizer.decode(y_rev, skip_special_tokens=True))
        if key in seen:
            continue                      # official code dedupes on (x, y_init, y_rev)
        seen.add(key)
        phrase = phrases.pick(r_init[k])
        kept["correct_init" if r_init[k] >= 0.5 else "wrong_init"] += 1
        rows.append({"id": item.get("id", init.index), "question": item["question"],
                     "reward_init": r_init[k], "phrase": phrase,
                     "prompt_ids": init.prompt_ids, "y_init_ids": init.completion_ids,
                     "y_rev_ids": y_rev, "y_init_text": init.text,
                     "y_rev_text": tokenizer.decode(y_rev, skip_special_tokens=True)})
    n_correct = sum(r >= 0.5 for r in r_init)
    stats = {"questions": len(items), "y_init": len(inits), "y_init_correct": int(n_correct),
             "y_init_wrong": len(inits) - int(n_correct), "revisions_sampled": len(revs),
             "revisions_correct": int(sum(r >= 0.5 for r in r_rev)),
             "kept_from_correct_init": kept["correct_init"], "kept_from_wrong_init": kept["wrong_init"],
             "dropped_truncated": truncated, "verified_unique": len(rows), "kept": len(rows),
             "generations": len(inits) + len(revs),
             "generated_tokens": sum(r.num_tokens for r in inits) + sum(r.num_tokens for r in revs)}
    rows, stats = distributed.gather_examples(rows, stats)   # distributed: every rank's rows, summed counts
    if max_traces and len(rows) > max_traces:
        rows = cap_traces(rows, max_traces, seed)
        stats["kept_from_correct_init"] = sum(r["reward_init"] >= 0.5 for r in rows)
        stats["kept_from_wrong_init"] = len(rows) - stats["kept_from_correct_init"]
        stats["kept"] = len(rows)
    return rows, stats


def cap_traces(rows: list[dict], max_traces: int, seed: int) -> list[dict]:
    """At most ``max_traces`` rows, a uniformly random subset from ``seed``, kept in order; 0 = all."""
    if not max_traces or len(rows) <= max_traces:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_traces))
    return [rows[i] for i in keep]


# --------------------------------------------------------------------------------------------
# SRT loss (eq. 1–3): one forward pass, two weightings of the same token cross-entropies
# --------------------------------------------------------------------------------------------
def ce_loss_fn(targets: torch.Tensor, weights: torch.Tensor):
    """Weighted token cross-entropy on one chunk of logits (fp32 inside the loss)."""
    def fn(logits, sl):
        logp = torch.log_softmax(logits.float(), dim=-1)
        nll = -logp.gather(-1, targets[sl].unsqueeze(-1).to(logits.device)).squeeze(-1)
        return (nll * weights[sl].to(logits.device)).sum()
    return fn


def srt_token_weights(examples: list[dict], mode: str) -> list[list[float]]:
    """Per-target weights that make one forward pass compute L_rev + L_gen (eq. 3).

    Both losses predict the same tokens of the same sequence from the same context, so
    L_rev + L_gen = Σ_i (rev_i / N_rev + gen_i / N_gen) · nll_i  with token means over the batch.
    mode "rev" / "gen" gives one term alone (the official code's sequential stages).
    """
    n_rev = sum(sum(e["rev_mask"]) for e in examples)
    n_gen = sum(sum(e["gen_mask"]) for e in examples)
    if distributed.active():             # distributed: token means over the GLOBAL batch
        n_rev, n_gen = distributed.all_sum([n_rev, n_gen])
    out = []
    for e in examples:
        w = []
        for r, g in zip(e["rev_mask"], e["gen_mask"]):
            v = 0.0
            if mode in ("joint", "rev") and r:
                v += 1.0 / max(n_rev, 1)
            if mode in ("joint", "gen") and g:
                v += 1.0 / max(n_gen, 1)
            w.append(v)
        out.append(w)
    return out


def srt_backward(model, examples: list[dict], mode: str, pad_id: int, micro: int) -> float:
    """Forward + backward of L_SRT (or one of its terms) on a batch, in micro-batches.

    The weights are global over the whole batch, so summing the micro-batch gradients gives the
    full-batch gradient; the LM head + cross-entropy run chunk by chunk (distill.chunked_head_backward).
    Also serves plain SFT (RFT): an example with rev_mask == gen_mask == "the completion".
    Under torchrun each rank runs its share of the batch and every rank returns the batch's loss.
    """
    examples = distributed.split(examples, "SRT batch")     # distributed: this rank's share
    weights = srt_token_weights(examples, mode)
    total = 0.0
    device = next(model.parameters()).device
    for s in range(0, len(examples), micro):
        ex, ws = examples[s:s + micro], weights[s:s + micro]
        ids, mask = pad([e["input_ids"] for e in ex], pad_id, "right")
        starts = [e["gen_mask"].index(1) for e in ex]          # first target after X
        lengths = [len(e["input_ids"]) - st for e, st in zip(ex, starts)]
        rows, cols = score_positions(starts, lengths)
        targets = torch.tensor([t for e, st in zip(ex, starts) for t in e["input_ids"][st:]])
        w = torch.tensor([v for e, st, wl in zip(ex, starts, ws) for v in wl[st:]], dtype=torch.float32)
        hidden = distill.final_hidden(model, ids.to(device), mask.to(device))
        rows_h = hidden[rows.to(device), cols.to(device)]
        total += float(distill.chunked_head_backward(model, rows_h, ce_loss_fn(targets, w)))
    return distributed.all_sum(total)                       # distributed: the ranks' shares added
