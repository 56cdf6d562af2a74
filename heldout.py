"""heldout.py — the held-out table a run ends with: every model evaluated the same way, side by side.

This is paper Table 1's row per model in miniature, with the revision columns of Table 9: train.py
adds the base, the SRT model (end of Phase 1, §2.1) and the SD-Zero model (end of Phase 2, §2.2),
or a baseline, each with the generations it used (App. C.2), and the table goes to table.md.

* ``Table``          — one evaluation per model (evaluate.evaluate_model under one fixed seed),
                       cached in eval.json so that a resumed run does not redo it; the shared
                       revision pool (revision_pool.jsonl) that every model revises.
* ``results_table``  — the markdown rows train.py prints at the end.

Floor: above evaluate.py (the measurements) and plumbing.py (the run folder, the RNG); below
train.py and baselines.py, which call it.
"""
from __future__ import annotations

import json
import os
import re

import distributed
from evaluate import (evaluate_model, fmt_pct, json_safe, load_pool, revision_pool, save_pool,
                      shared_pool_revision)
from plumbing import Run, rng_state, seed_all, set_rng_state
from revise import Phrases


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

    def add(self, name, model, generations: str) -> None:
        a = self.args
        self.budgets[name] = generations
        if a.no_eval or not self.items or not distributed.is_main():   # distributed: rank 0 evaluates
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
            used = re.match(r"\d+", str(generations))                 # "2800 (Phase 1)" -> 2800
            ev["generations_used"] = int(used.group()) if used else None  # report.py's x axis
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
