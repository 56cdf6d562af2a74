"""revise.py — Phase 1 of SD-Zero: Self-Revision Training (SRT), paper §2.1, eq. 1–3, App. C.1.

The same weights act as a *reviser* when the assistant turn already holds an answer followed by a
reward-dependent control phrase P_r (the strings live in reward.py, which grades after them):

    r = 1  ->  "Let me rephrase the above solution."
    r = 0  ->  "Wait, this response is not correct, let me start over."

The binary reward enters **only** through which phrase is appended — no gold answer, no error
message (paper §2.1). Notation for the token layouts, used by both phases:

    X      chat-templated prompt ending in the assistant-start marker   (generate.prompt_ids)
    Y      sampled completion ids, as generated (incl. EOS when finished)
    Y'     Y without its trailing EOS
    S(P)   ids of "\\n\\n" + P + "\\n\\n"

    reviser prompt             X + Y_init' + S(P_r)                 -> sample Y_rev
    SRT example (eq. 1–3)      X + Y_init' + S(P_r) + Y_rev
        revision mask   = Y_rev (incl. EOS)               L_rev = −log π(Y_rev | X, Y_init, P_r)   (eq. 1)
        generation mask = everything after X              L_gen = −log π([Y_init, P_r, Y_rev] | X) (eq. 2)

Read top to bottom: P_r and the reviser prompt; collecting D_revision (y_init → r → P_r → n
revisions → keep the verified ones, cleaned); the SRT example and its loss L_SRT = L_rev + L_gen.
train.py's ``phase1`` runs them in that order; distill.py (Phase 2) builds its teacher from the same
reviser prompt.

Everything is built by **id concatenation**: decoding Y and re-encoding it could change the tokens,
and then the teacher would be scoring a sequence the student never sampled.
"""
from __future__ import annotations

import random
import re
from typing import NamedTuple

import torch

from generate import Rollout, end_of_turn_id, eos_ids, rollout, sample_and_grade
from machinery.lm_head import chunked_head_backward, final_hidden, pad, score_positions
from reward import P_CORRECT, P_WRONG, grade

# P_r's strings are reward.py's (the binary reward as text); SEP frames them in every layout.
SEP = "\n\n"


# --------------------------------------------------------------------------------------------
# P_r and the reviser prompt
# --------------------------------------------------------------------------------------------
class Phrases(NamedTuple):
    """The two control phrases P_r. Phase 1 and Phase 2 must use the same pair (the SRT model was
    trained on exactly these strings). A tuple, so that it is also the ``control_phrases`` the
    verifier cuts a transcript at (reward.py grades only what follows the last one)."""
    correct: str = P_CORRECT
    wrong: str = P_WRONG

    def pick(self, r: float) -> str:
        return self.correct if r >= 0.5 else self.wrong

    def ids(self, tokenizer) -> dict[str, list[int]]:
        """{P_r: S(P_r)} for both phrases, tokenised once per batch (see phrase_ids)."""
        return {p: phrase_ids(tokenizer, p) for p in self}


def phrase_ids(tokenizer, phrase: str) -> list[int]:
    """S(P): ids of "\\n\\n" + P + "\\n\\n", encoded on its own (no special tokens)."""
    return tokenizer(SEP + phrase + SEP, add_special_tokens=False)["input_ids"]


def strip_eos(y: list[int], eos: set[int] | list[int]) -> list[int]:
    """Y': the answer as context. Its EOS is dropped so the turn continues into P_r (paper §2.1:
    the revision is a continuation of the same assistant turn)."""
    return y[:-1] if y and y[-1] in set(eos) else list(y)


def reviser_prompt(x: list[int], y: list[int], s: list[int], eos) -> list[int]:
    """X + Y' + S(P_r): what the reviser continues from (Phase 1) and the teacher's context (Phase 2)."""
    return list(x) + strip_eos(y, eos) + list(s)


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
                      progress: bool = False, on_graded=None) -> tuple[list[dict], dict]:
    """Phase 1 data: y_init ~ π(·|x) → r → P_r → n_rev revisions ~ π(·|x, y_init, P_r) → keep the
    verified-correct ones (paper §2.1 steps 1–5). The reviser sees x, y_init and P_r — never the gold.

    ``items``: dicts with "question" and "answer"/"tests". Returns (rows, stats); each row holds
    ids (for SRT) and texts (for reading), and is JSON-serialisable. The cap of D_revision
    (``cap_traces``) is applied by the caller, once, to everything collected: under torchrun each
    rank collects on its own share of the questions, and train.py joins the shares first.
    ``on_graded(right, n, to_revise)`` is told the y_init accuracy before any revision is sampled.
    """
    gen = dict(gen or {})
    eos = eos_ids(model, tokenizer)
    inits, r_init = sample_and_grade(model, tokenizer, items, task=task, n=n_init, phrases=phrases,
                                     gen=gen, progress=progress, desc="phase1 y_init")

    s_ids = phrases.ids(tokenizer)
    todo = [(k, r) for k, r in enumerate(inits) if revise_correct or r_init[k] < 0.5]
    if on_graded:                 # before the revision budget is spent: how good is the generator?
        on_graded(int(sum(r >= 0.5 for r in r_init)), len(inits), len(todo))
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
    for rev, rev_reward in zip(revs, r_rev):
        k, init = todo[rev.index]
        if rev_reward < 0.5:
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
    return rows, stats


def cap_traces(rows: list[dict], stats: dict, max_traces: int, seed: int) -> tuple[list[dict], dict]:
    """D_revision capped as the paper does (App. C.1: 6K traces kept); 0 = all.

    The paper does not say how the 6K were chosen, so a uniformly random subset (from ``seed``) is
    kept, in order; the kept counts in ``stats`` are updated to match.
    """
    if not max_traces or len(rows) <= max_traces:
        return rows, stats
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_traces))
    rows = [rows[i] for i in keep]
    n_correct = sum(r["reward_init"] >= 0.5 for r in rows)
    return rows, {**stats, "kept_from_correct_init": n_correct, "kept_from_wrong_init": len(rows) - n_correct,
                  "kept": len(rows)}


# --------------------------------------------------------------------------------------------
# The SRT example and its loss (eq. 1–3): one forward pass, two weightings of the same tokens
# --------------------------------------------------------------------------------------------
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


SRT_NORMS = ("seq_sum", "token_mean")


def srt_token_counts(examples: list[dict], norm: str = "token_mean") -> list[int]:
    """The denominators [D_rev, D_gen] of L_rev and L_gen over a batch (``--srt-norm``):
      seq_sum    — the number of examples for both: each term is a sum of token NLLs per sequence,
                   averaged over sequences (eq. 1–3 as written: −E log π(y | context));
      token_mean — the number of revision / generation targets: each term a mean over its tokens
                   in the batch (the official code's SFT stages; the toy's setting).
    Under torchrun train.py sums them over ranks, so each rank's share of a batch is weighted by the
    whole batch's counts."""
    if norm == "seq_sum":
        return [len(examples), len(examples)]
    if norm == "token_mean":
        return [sum(sum(e["rev_mask"]) for e in examples), sum(sum(e["gen_mask"]) for e in examples)]
    raise ValueError(f"unknown SRT norm {norm!r}; expected one of {SRT_NORMS}")


def srt_token_weights(examples: list[dict], mode: str, counts: list[int] | None = None,
                      norm: str = "token_mean") -> list[list[float]]:
    """Per-target weights that make one forward pass compute L_rev + L_gen (eq. 3).

    Both losses predict the same tokens of the same sequence from the same context, so
    L_rev + L_gen = Σ_i (rev_i / D_rev + gen_i / D_gen) · nll_i, with the denominators of
    srt_token_counts (``counts``, by default this batch's own under ``norm``). A token of Y_rev is in
    both masks, so it counts twice: at equal lengths of Y_init and Y_rev that is 2 : 1 against a
    Y_init token with seq_sum, and 3 : 1 with token_mean (D_gen ≈ 2 D_rev). mode "rev" / "gen" gives
    one term alone: Table 11's ablations and the official code's two sequential stages.
    """
    n_rev, n_gen = counts or srt_token_counts(examples, norm)
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


def ce_loss_fn(targets: torch.Tensor, weights: torch.Tensor):
    """Weighted token cross-entropy on one chunk of logits: [n, V] fp32 logits -> scalar."""
    def fn(logits, sl):
        logp = torch.log_softmax(logits.float(), dim=-1)
        nll = -logp.gather(-1, targets[sl].unsqueeze(-1).to(logits.device)).squeeze(-1)
        return (nll * weights[sl].to(logits.device)).sum()
    return fn


def srt_backward(model, examples: list[dict], mode: str, pad_id: int, micro: int,
                 counts: list[int] | None = None, norm: str = "token_mean") -> float:
    """Forward + backward of L_SRT (or one of its terms) on a batch, in micro-batches; returns the loss.

    The weights are global over the whole batch (``counts`` and ``norm``, see srt_token_weights), so summing the
    micro-batch gradients gives the full-batch gradient; the LM head + cross-entropy run chunk by
    chunk (lm_head.chunked_head_backward). Also serves plain SFT (RFT, SFT): an example with
    rev_mask == gen_mask == "the completion".
    """
    weights = srt_token_weights(examples, mode, counts, norm)
    total = 0.0
    device = next(model.parameters()).device
    for s in range(0, len(examples), micro):
        ex, ws = examples[s:s + micro], weights[s:s + micro]
        ids, mask = pad([e["input_ids"] for e in ex], pad_id, "right")          # [b, W]
        starts = [e["gen_mask"].index(1) for e in ex]          # first target after X
        lengths = [len(e["input_ids"]) - start for e, start in zip(ex, starts)]
        rows, cols = score_positions(starts, lengths)          # [n] each
        targets = torch.tensor([t for e, start in zip(ex, starts) for t in e["input_ids"][start:]])
        w = torch.tensor([v for start, wl in zip(starts, ws) for v in wl[start:]], dtype=torch.float32)
        hidden = final_hidden(model, ids.to(device), mask.to(device))          # [b, W, H]
        rows_h = hidden[rows.to(device), cols.to(device)]                      # [n, H]
        total += float(chunked_head_backward(model, rows_h, ce_loss_fn(targets, w)))
    return total
