"""evaluate.py — the paper's measurements on any checkpoint.

SD-Zero (arXiv 2604.12002) reports (paper.md §6):
* avg@k and pass@k (Table 1, Table 7): mean accuracy over k samples per question, and the unbiased
  pass@k estimator 1 − C(n−c, k)/C(n, k) (Chen et al. 2021).
* revision ability (Table 9): sample y, grade it, append P_r by its reward, sample one revision,
  grade the revision. correction rate = share of initially *wrong* answers the revision fixes;
  break rate = share of initially *right* answers the revision breaks.
* response length and the rate of explicit self-revision phrases (Fig. 3, 6).
"""
from __future__ import annotations

import math
import re

from generate import prompt_ids, rollout
from revise import Phrases, grade, phrase_ids, reviser_prompt
from generate import eos_ids

DEFAULT_KEYWORDS = ("wait", "let me start over", "let me correct", "let me rephrase",
                    "let me re-check", "let me recheck", "this is wrong", "not correct")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 − C(n−c, k)/C(n, k), as a stable product."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least k samples per question, got n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def keyword_rate(texts: list[str], keywords=DEFAULT_KEYWORDS) -> float:
    """Share of responses containing at least one explicit self-revision phrase (case-insensitive,
    whole words, so "awaited" does not count as "wait")."""
    if not texts:
        return 0.0
    pats = [re.compile(r"\b" + re.escape(k.lower()) + r"\b") for k in keywords]
    return sum(any(p.search(t.lower()) for p in pats) for t in texts) / len(texts)


def sample_and_grade(model, tok, items, *, task="math", k=1, phrases=Phrases(), gen=None,
                     progress=False, desc="eval"):
    """k samples per question, graded. Returns (rollouts, rewards), grouped by question."""
    xs = [prompt_ids(tok, it["question"], task) for it in items]
    rolls = rollout(model, tok, xs, n=k, progress=progress, desc=desc, **(gen or {}))
    rewards = grade(task, [r.text for r in rolls], [items[r.index] for r in rolls], phrases)
    return rolls, rewards


def revision_ability(model, tok, items, rolls, rewards, *, task="math", phrases=Phrases(),
                     gen=None, progress=False) -> dict:
    """Table 9 on the first sample of each question: revise after P_r, grade only the revision."""
    eos = eos_ids(model, tok)
    firsts = {}
    for r, rw in zip(rolls, rewards):
        firsts.setdefault(r.index, (r, rw))
    order = sorted(firsts)
    prompts = [reviser_prompt(firsts[i][0].prompt_ids, firsts[i][0].completion_ids,
                              phrase_ids(tok, phrases.pick(firsts[i][1])), eos) for i in order]
    revs = rollout(model, tok, prompts, n=1, progress=progress, desc="eval revisions", **(gen or {}))
    r_rev = grade(task, [r.text for r in revs], [items[i] for i in order], phrases)
    init = [firsts[i][1] for i in order]
    wrong = [j for j, r in enumerate(init) if r < 0.5]
    right = [j for j, r in enumerate(init) if r >= 0.5]
    n = max(len(order), 1)
    return {
        "init_acc": sum(init) / n,
        "revised_acc": sum(r_rev) / n,
        "correction_rate": (sum(r_rev[j] for j in wrong) / len(wrong)) if wrong else float("nan"),
        "break_rate": (sum(1 - r_rev[j] for j in right) / len(right)) if right else float("nan"),
        "n_init_wrong": len(wrong), "n_init_right": len(right),
        "init_tokens": sum(firsts[i][0].num_tokens for i in order) / n,
        "revised_tokens": sum(r.num_tokens for r in revs) / n,
        "generations": len(revs), "generated_tokens": sum(r.num_tokens for r in revs),
    }


def evaluate_model(model, tok, items, *, task="math", k=1, phrases=Phrases(), gen=None,
                   revision=True, keywords=DEFAULT_KEYWORDS, progress=False) -> dict:
    """avg@k, pass@k, length, truncation, keyword rate and (optionally) revision ability."""
    rolls, rewards = sample_and_grade(model, tok, items, task=task, k=k, phrases=phrases, gen=gen,
                                      progress=progress)
    per_q = {}
    for r, rw in zip(rolls, rewards):
        per_q.setdefault(r.index, []).append(rw)
    out = {
        "questions": len(items), "k": k,
        f"avg@{k}": sum(rewards) / max(len(rewards), 1),
        f"pass@{k}": sum(pass_at_k(len(v), int(sum(v)), k) for v in per_q.values()) / max(len(per_q), 1),
        "mean_tokens": sum(r.num_tokens for r in rolls) / max(len(rolls), 1),
        "truncated_share": sum(not r.finished for r in rolls) / max(len(rolls), 1),
        "keyword_rate": keyword_rate([r.text for r in rolls], keywords),
        "generations": len(rolls), "generated_tokens": sum(r.num_tokens for r in rolls),
    }
    if revision:
        out["revision"] = revision_ability(model, tok, items, rolls, rewards, task=task,
                                           phrases=phrases, gen=gen, progress=progress)
    return out


def fmt_pct(x: float) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}"
