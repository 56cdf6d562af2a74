"""bench/table.py — paper Table 1 in miniature on the toy world (`python -m bench table`), and the
teacher-sync comparison of Fig. 5 (`python -m bench sync`).

Every method is trained from the same toy base model on the same training questions with the same
generation budget (paper App. C.2: SD-Zero's own count, Phase 1 + Phase 2), for several seeds, and
evaluated on the same held-out questions with the same sampling seed. Rows: base, SFT (on toy.solve's
worked solutions; it generates nothing), RFT, GRPO, SDFT, SRT only, SD-Zero, and the Table 12 ablation
"Phase 2 without Phase 1". It takes tens of minutes on
2 cores. Every figure in the table comes from the runs' own eval.json / metrics.jsonl; table.html
draws the first seed's runs with report.py.

`--only-sdzero` runs only the SD-Zero runs, whose eval.json hold the default run's three rows (base,
SRT, SD-Zero): the seed band of `python train.py`'s table in a few minutes (-> table-sdzero.*).
`--world banded` runs the toy world with a rare band (toy.py: shapes whose correct habit the base
rarely writes) for base, RFT, GRPO, SRT only and SD-Zero, with one accuracy column per band
(-> table-banded.*). `sync` trains SD-Zero with the frozen teacher and with one teacher sync on a
reward plateau (train.py --sync-on-plateau) on the same seeds (-> sync.*).
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from bench import OUT, ROOT
from machinery import report


def _train(run_name: str, extra: list[str], runs_dir: str, quiet=True, script: str = "train.py") -> float:
    """One train.py (or baselines.py) run in its own process (clean state per method); returns wall seconds.

    A run that already finished with the same arguments is reused (its wall time is stored beside
    it), so an interrupted table continues where it stopped; delete runs/table-* to start afresh.
    """
    cmd = [sys.executable, os.path.join(ROOT, script), *extra[:1 if script != "train.py" else 0],
           "--runs-dir", runs_dir, "--run-name", run_name, "--quiet"] + extra[1 if script != "train.py" else 0:]
    done = os.path.join(runs_dir, run_name, "bench_done.json")
    if os.path.exists(done):
        rec = json.load(open(done))
        if rec["cmd"][1:] == cmd[2:]:        # the same arguments; where the checkout lives does not matter
            print("  (reused)", " ".join(cmd[1:]), flush=True)
            return rec["wall_s"]
    shutil.rmtree(os.path.join(runs_dir, run_name), ignore_errors=True)
    t0 = time.time()
    print("  $", " ".join(cmd[1:]), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise SystemExit(f"run {run_name} failed:\n{r.stdout[-3000:]}")
    wall = time.time() - t0
    json.dump({"cmd": cmd[1:], "wall_s": wall}, open(done, "w"))
    return wall


def _last_metrics(run_dir: str) -> dict:
    return json.loads(open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()[-1])


def bench_table(args) -> dict:
    runs_dir = os.path.join(args.runs_dir)
    rows: dict[str, list[dict]] = {}
    common = ["--eval-k", str(args.eval_k), "--threads", str(args.threads)]
    banded, prefix = args.world == "banded", _prefix(args.world)
    baselines = () if args.only_sdzero else ("rft", "grpo") if banded else ("rft", "grpo", "sdft", "sft")
    if banded:
        common += ["--toy-world", "banded"]
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        name = f"{prefix}-sdzero-s{seed}"
        wall = _train(name, common + ["--seed", str(seed)], runs_dir)
        run = os.path.join(runs_dir, name)
        ev = json.load(open(os.path.join(run, "eval.json")))
        last = _last_metrics(run)
        p1 = json.load(open(os.path.join(run, "phase1_stats.json")))
        budget = last["generations"]
        p2_steps = json.load(open(os.path.join(run, "config.json")))["steps"]
        rows.setdefault("base", []).append({**_summ(ev["base"], args.eval_k), "generations": 0,
                                            "generated_tokens": 0, "wall_s": 0.0})
        rows.setdefault("SRT only", []).append({**_summ(ev["SRT"], args.eval_k), "generations": p1["generations"],
                                                "generated_tokens": p1["generated_tokens"],
                                                "wall_s": None, "phase1_collect_s": p1["seconds"]})
        rows.setdefault("SD-Zero", []).append({**_summ(ev["SD-Zero"], args.eval_k), "generations": budget,
                                               "generated_tokens": last["generated_tokens"], "wall_s": wall})
        for method in baselines:
            name = f"{prefix}-{method}-s{seed}"
            wall = _train(name, [method] + common + ["--seed", str(seed), "--budget", str(budget)], runs_dir,
                          script="baselines.py")
            run = os.path.join(runs_dir, name)
            ev = json.load(open(os.path.join(run, "eval.json")))
            last = _last_metrics(run)
            rows.setdefault(method.upper(), []).append({**_summ(ev[method.upper()], args.eval_k),
                                                        "generations": last["generations"],
                                                        "generated_tokens": last["generated_tokens"],
                                                        "wall_s": wall})
        if banded or args.only_sdzero:                 # the rare band's question needs no Table 12 row
            _write_table(rows, args)
            continue
        # Table 12: Phase 2 straight from the base model, same Phase-2 steps, no SRT.
        name = f"table-p2only-s{seed}"
        wall = _train(name, common + ["--seed", str(seed), "--phase", "distill", "--steps", str(p2_steps)],
                      runs_dir)
        run = os.path.join(runs_dir, name)
        ev = json.load(open(os.path.join(run, "eval.json")))
        last = _last_metrics(run)
        rows.setdefault("Phase 2 without Phase 1", []).append(
            {**_summ(ev["Phase 2 only"], args.eval_k), "generations": last["generations"],
             "generated_tokens": last["generated_tokens"], "wall_s": wall})
        _write_table(rows, args)                       # partial results survive an interruption
    # The learning-efficiency picture: one line per method (the first seed's runs) on one page.
    first = [os.path.join(runs_dir, f"{prefix}-{m}-s{args.seeds[0]}")
             for m in ("sdzero", *baselines, *(() if banded or args.only_sdzero else ("p2only",)))]
    html = os.path.join(OUT, f"{prefix}{'-sdzero' if args.only_sdzero else ''}.html")
    print("charts:", report.write_report(first, html), flush=True)
    return _write_table(rows, args)


def _prefix(world: str) -> str:
    """Run names and result files of one world: table-* (standard), table-banded-* (banded)."""
    return "table" if world == "standard" else f"table-{world}"


def _summ(ev: dict, k: int) -> dict:
    return {"avg": ev[f"avg@{k}"], "mean_tokens": ev["mean_tokens"],
            "correction_rate": ev.get("revision", {}).get("correction_rate"),
            "bands": {b: v["avg"] for b, v in ev.get("bands", {}).items()}}


def _mean_spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.mean(xs), (max(xs) - min(xs)) / 2 if len(xs) > 1 else 0.0


def _write_table(rows: dict, args) -> dict:
    order = ["base", "SFT", "RFT", "GRPO", "SDFT", "SRT only", "SD-Zero", "Phase 2 without Phase 1"]
    k = args.eval_k
    bands = sorted({b for rs in rows.values() for r in rs for b in r["bands"]})
    lines = [f"| method | avg@{k} (mean ± half-range over seeds) | " + "".join(f"{b} band | " for b in bands)
             + "generations | generated tokens | mean response tokens | correction rate | wall s |",
             "|" + "---|" * (7 + len(bands))]
    summary = {}
    for name in order:
        if name not in rows:
            continue
        rs = rows[name]
        m, s = _mean_spread([r["avg"] for r in rs])
        per_band = {b: _mean_spread([r["bands"].get(b) for r in rs]) for b in bands}
        g, _ = _mean_spread([r["generations"] for r in rs])
        tk, _ = _mean_spread([r["generated_tokens"] for r in rs])
        ln, _ = _mean_spread([r["mean_tokens"] for r in rs])
        cr, _ = _mean_spread([r["correction_rate"] for r in rs])
        w, _ = _mean_spread([r["wall_s"] for r in rs])
        summary[name] = {"avg_mean": m, "avg_half_range": s, "seeds": len(rs), "runs": rs,
                         **({"bands": {b: {"mean": bm, "half_range": bs} for b, (bm, bs) in per_band.items()}}
                            if bands else {})}
        lines.append(f"| {name} | {100 * m:.1f} ± {100 * s:.1f} | "
                     + "".join(f"{100 * bm:.1f} ± {100 * bs:.1f} | " for bm, bs in per_band.values())
                     + f"{g:.0f} | {tk:.0f} | {ln:.1f} | "
                     f"{'n/a' if cr is None else f'{100 * cr:.1f}'} | "
                     f"{'(in SD-Zero)' if w is None else f'{w:.0f}'} |")
    md = "\n".join(lines)
    os.makedirs(OUT, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    world = ("" if args.world == "standard" else f" --world {args.world}")
    world += " --only-sdzero" if args.only_sdzero else ""
    header = (f"Toy world ({args.world}), seeds {args.seeds}, {k} sample(s) per held-out question, run {stamp} "
              f"with `python -m bench table{world}`\n\n")
    name = _prefix(args.world) + ("-sdzero" if args.only_sdzero else "")   # a partial table: its own file
    open(os.path.join(OUT, f"{name}.md"), "w").write(header + md + "\n")
    result = {"date": stamp, "world": args.world, "seeds": args.seeds, "eval_k": k, "rows": summary, "markdown": md}
    json.dump(result, open(os.path.join(OUT, f"{name}.json"), "w"), indent=1)
    print(header + md, flush=True)
    return result


# --------------------------------------------------------------------------------------------
# Teacher sync on a plateau vs the frozen teacher (paper Fig. 5), same seeds
# --------------------------------------------------------------------------------------------
def bench_sync(args) -> dict:
    """SD-Zero twice per seed: the frozen teacher (the very run `bench table` makes, reused when it is
    there) and one sync at the first Phase-2 reward plateau (--sync-on-plateau P, at most one)."""
    common = ["--eval-k", str(args.eval_k), "--threads", str(args.threads)]
    runs = {}
    for seed in args.seeds:
        for label, name, extra in (("frozen", f"table-sdzero-s{seed}", []),
                                   ("plateau", f"sync-plateau{args.patience}-s{seed}",
                                    ["--sync-on-plateau", str(args.patience), "--max-syncs", "1"])):
            wall = _train(name, common + ["--seed", str(seed)] + extra, args.runs_dir)
            run = os.path.join(args.runs_dir, name)
            ev = json.load(open(os.path.join(run, "eval.json")))["SD-Zero"]
            p2 = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl")) if '"distill"' in line]
            synced = [r["step"] for r, prev in zip(p2, [{"teacher_syncs": 0}] + p2)
                      if r["teacher_syncs"] > prev["teacher_syncs"]]
            tail = p2[-20:]
            runs.setdefault(label, []).append({
                "seed": seed, "avg": ev[f"avg@{args.eval_k}"], "sync_steps": synced,
                "pool_correction": ev.get("pool", {}).get("correction_rate"),
                "final_reward_20": sum(r["reward"] for r in tail) / len(tail),
                "final_kl_20": sum(r["kl"] for r in tail) / len(tail), "wall_s": wall})
    lines = ["| teacher | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | sync step(s) | "
             "Phase-2 reward, last 20 steps | pool correction |", "|" + "---|" * (len(args.seeds) + 5)]
    for label, rs in runs.items():
        mean = statistics.mean(r["avg"] for r in rs)
        pc = [r["pool_correction"] for r in rs if r["pool_correction"] is not None]
        lines.append(f"| {label} | " + " | ".join(f"{100 * r['avg']:.1f}" for r in rs) + f" | {100 * mean:.1f} | "
                     + ", ".join(str(r["sync_steps"] or "-") for r in rs) + " | "
                     + ", ".join(f"{r['final_reward_20']:.3f}" for r in rs) + " | "
                     + (f"{100 * statistics.mean(pc):.1f}" if pc else "n/a") + " |")
    md = "\n".join(lines)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"SD-Zero on the toy world, frozen teacher vs one sync on a reward plateau (patience "
              f"{args.patience}), avg@{args.eval_k}, run {stamp} with `python -m bench sync`\n\n")
    os.makedirs(OUT, exist_ok=True)
    open(os.path.join(OUT, "sync.md"), "w").write(header + md + "\n")
    print(header + md, flush=True)
    return {"date": stamp, "seeds": args.seeds, "patience": args.patience, "runs": runs, "markdown": md}
