"""selfloc.py — token self-localisation (paper Fig. 4, §4): where does the reviser disagree?

Under Phase 2's teacher layout X + Y' + S(P_r) + Y, each token y_t of a generator's answer gets
KL(generator ‖ reviser) at its position and a "token KL reward" log p_gen(y_t) − log p_rev(y_t).
The paper's claim: on wrong answers the KL mass sits on a few key tokens (the reviser localises the
error); on right answers it is small and flat. This file computes those per-token numbers with the
Phase-2 loss code itself (distill.distill_pair, no backward), summarises how concentrated they are
per group, and renders them as an offline HTML heat map. ``python evaluate.py --selfloc`` runs it.
"""
from __future__ import annotations

import html
import math

import torch

import distill
from generate import eos_ids
from revise import Phrases, phase2_batch, phrase_ids


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
    """Per-token KL(generator ‖ reviser) and token KL reward for each rollout, Phase-2 layout."""
    eos = eos_ids(generator, tok)
    out = []
    for s in range(0, len(rolls), micro):
        rs, rws = rolls[s:s + micro], rewards[s:s + micro]
        ys = [r.completion_ids for r in rs]
        if not any(ys):
            out += [{"kl": [], "reward_tok": []} for _ in rs]
            continue
        ss = [phrase_ids(tok, phrases.pick(rw)) for rw in rws]
        b = phase2_batch([r.prompt_ids for r in rs], ys, ss, eos, tok.pad_token_id)
        n = len(b["student"]["targets"])
        o = distill.distill_pair(generator, teacher, b["student"], b["teacher"], weights=torch.zeros(n),
                                 k=topk, support=support, backward=False)
        kl = o["per_token_kl"].float().cpu().tolist()
        rew = (o["student_target_logp"] - o["teacher_target_logp"]).float().cpu().tolist()
        pos = 0
        for y in ys:
            out.append({"kl": kl[pos:pos + len(y)], "reward_tok": rew[pos:pos + len(y)]})
            pos += len(y)
    return out


def selfloc_summary(scores: list[dict], rewards: list[float], buckets: int = 20) -> dict:
    """Per group (wrong / right): KL per token, KL per response, mean top-10 % share, bucket shares."""
    res = {}
    for name, want in (("wrong", 0), ("right", 1)):
        idx = [i for i, r in enumerate(rewards) if (r >= 0.5) == bool(want) and scores[i]["kl"]]
        conc = [kl_concentration(scores[i]["kl"], buckets) for i in idx]
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


def selfloc_html(path, tok, items, rolls, rewards, scores, phrases=Phrases(), title="SD-Zero") -> None:
    """One self-contained HTML file (inline CSS, no scripts, no external assets): each response's
    tokens coloured by KL (red) with the signed token KL reward in the tooltip; wrong answers first.
    Model text is untrusted, so every piece of it goes through html.escape."""
    order = sorted(range(len(rolls)), key=lambda i: (rewards[i] >= 0.5, i))
    vmax = max([max(s["kl"]) for s in scores if s["kl"]] + [1e-9])
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             ".r{border:1px solid #ccc;border-radius:6px;padding:.6em;margin:1em 0}"
             ".t{font-family:monospace;white-space:pre-wrap;line-height:1.7}"
             ".w{color:#b00}.c{color:#070}.m{color:#555;font-size:.9em}</style>",
             f"<h1>{html.escape(title)}: where the reviser disagrees with the generator</h1>",
             "<p class=m>Colour = per-token KL(generator ‖ reviser) under the Phase-2 teacher layout "
             "X + Y' + S(P_r) + Y (darker = larger). Hover a token for KL and the token KL reward "
             "log p_gen(y_t) − log p_rev(y_t). Wrong answers first.</p>"]
    for i in order:
        r, it, sc = rolls[i], items[rolls[i].index], scores[i]
        ok = rewards[i] >= 0.5
        gold = it.get("answer", "(tests)")
        spans = []
        for tid, kl, rw in zip(r.completion_ids, sc["kl"], sc["reward_tok"]):
            a = min(1.0, max(kl, 0.0) / vmax) ** 0.5
            txt = html.escape(tok.decode([tid]))
            spans.append(f"<span style='background:rgba(220,30,30,{a:.2f})' "
                         f"title='KL {kl:.4f} | reward {rw:+.4f}'>{txt}</span>")
        parts.append(
            f"<div class=r><div><b>Q:</b> {html.escape(it['question'])}</div>"
            f"<div class=m>gold: {html.escape(str(gold))} · verdict: "
            f"<span class={'c' if ok else 'w'}>{'right' if ok else 'wrong'}</span> · P_r: "
            f"{html.escape(phrases.pick(rewards[i]))} · KL sum {sum(sc['kl']):.3f}</div>"
            f"<div class=t>{''.join(spans)}</div></div>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
