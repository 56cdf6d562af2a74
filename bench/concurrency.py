"""bench/concurrency.py — toy runs side by side on shared cores (`python -m bench concurrency`).

Ablations run side by side, and tests run while a run trains. This starts N short toy runs at once
(the fingerprint test's recipe: Phase 1 on 160 questions, 20 SRT steps, 8 Phase-2 steps, a
64-question table) under each OpenMP wait policy, for each N:

    brief     what every run does (machinery/repro.py: GOMP_SPINCOUNT=2000 unless set): a thread
              waiting for the next parallel region spins briefly, then sleeps
    passive   OMP_WAIT_POLICY=PASSIVE forced: a waiting thread sleeps at once
    active    OMP_WAIT_POLICY=ACTIVE forced: a waiting thread spins on its core
    default   OpenMP's own default, what runs did before repro.py set one: spin 300,000 times, then
              sleep; the child skips repro.share_cores(), nothing else changes

Every figure is measured side by side in this one run, policies interleaved at each N so the
machine's background load hits them alike: a configuration's wall time (first start to last
finish) against N × the same policy's one-run-alone time (below 1: side by side beats one after
another), its mean Phase-1 collection time, and each policy's wall time over brief's at each N. Each run's table.md
must come out the same under every policy (the policy moves no bit); the JSON says whether it did.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOT

RECIPE = ["--quiet", "--phase1-questions", "160", "--srt-steps", "20", "--srt-batch-size", "16", "--steps", "8",
          "--batch-questions", "16", "--eval-questions", "64"]
POLICIES = ("brief", "passive", "active", "default")
# The "default" arm: train.py exactly as run from the command line, except that repro.share_cores()
# is skipped, so OpenMP picks its own wait policy (and torch its thread count, set later by --threads
# or repro.cpu_threads() as in every run).
DEFAULT_ARM = ("import runpy, sys; from machinery import repro; repro.share_cores = lambda: None; "
               "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def add_arguments(p) -> None:
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 3], help="how many runs at once (1 must be among them)")
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=["brief", "passive", "default"])
    p.add_argument("--threads", type=int, default=None, help="train.py --threads (default: repro.cpu_threads())")
    p.add_argument("--runs-dir", default=None, help="keep the runs here (default: a temporary folder)")


def _env(policy: str) -> dict:
    """The child's environment: the caller's, without the OpenMP settings, so the child's own code
    decides them (brief, default), or with a wait policy forced, which repro.py keeps as a user's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")}
    if policy in ("passive", "active"):
        env["OMP_WAIT_POLICY"] = policy.upper()
    return env


def _batch(policy: str, n: int, runs_dir: str, threads: int | None) -> dict:
    """n runs started at once; wall time from the first start to the last finish."""
    train = os.path.join(ROOT, "train.py")
    procs, t0 = [], time.time()
    for i in range(n):
        extra = RECIPE + ["--runs-dir", runs_dir, "--run-name", f"{policy}-n{n}-{i}"]
        extra += ["--threads", str(threads)] if threads else []
        cmd = [sys.executable, "-c", DEFAULT_ARM, train] if policy == "default" else [sys.executable, train]
        procs.append(subprocess.Popen(cmd + extra, cwd=ROOT, env=_env(policy), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    walls = []
    for p in procs:
        out = p.communicate()[0]
        walls.append(time.time() - t0)
        if p.returncode != 0:
            raise SystemExit(f"a {policy} run (n={n}) failed:\n{out[-3000:]}")
    runs = [os.path.join(runs_dir, f"{policy}-n{n}-{i}") for i in range(n)]
    phase1 = [json.loads(Path(r, "phase1_stats.json").read_text())["seconds"] for r in runs]
    return {"policy": policy, "n": n, "wall_s": round(max(walls), 1), "run_walls_s": [round(w, 1) for w in walls],
            "phase1_collect_s_mean": round(sum(phase1) / n, 1),
            "tables": [_table_rows(r) for r in runs]}


def _table_rows(run: str) -> str:
    """The table's figures (the rows, not the header), as tests/test_fingerprint.py compares them."""
    lines = Path(run, "table.md").read_text().splitlines()
    return "\n".join(ln for ln in lines if ln.startswith("| ") and not ln.startswith("| model"))


def bench_concurrency(args) -> dict:
    if 1 not in args.n:
        raise SystemExit("--n must include 1: each configuration is compared with one run alone")
    ns = sorted(set(args.n))
    with tempfile.TemporaryDirectory(prefix="sdz-concurrency-") as tmp:
        runs_dir = args.runs_dir or tmp
        load = os.getloadavg()[0]
        rows = []
        for n in ns:
            for policy in args.policies:                  # interleaved: background load hits both alike
                print(f"  n={n} {policy} ...", end=" ", flush=True)
                rows.append(_batch(policy, n, runs_dir, args.threads))
                print(f"{rows[-1]['wall_s']:.1f}s", flush=True)
    tables = {t for r in rows for t in r.pop("tables")}
    alone = {r["policy"]: r["wall_s"] for r in rows if r["n"] == 1}
    for r in rows:
        r["vs_n_alone"] = round(r["wall_s"] / (r["n"] * alone[r["policy"]]), 2)
    wall = {(r["policy"], r["n"]): r["wall_s"] for r in rows}
    ratios = {p: {f"n={n}": round(wall[p, n] / wall["brief", n], 2) for n in ns}
              for p in args.policies if p != "brief" and "brief" in args.policies}
    print("\n| policy | N | wall s | N × alone s | wall / (N × alone) | mean Phase-1 collection s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['policy']} | {r['n']} | {r['wall_s']:.1f} | {r['n'] * alone[r['policy']]:.1f} | "
              f"{r['vs_n_alone']:.2f} | {r['phase1_collect_s_mean']:.1f} |")
    print(f"wall time over brief's: {ratios}; every run's table identical: {len(tables) == 1}")
    return {"date": datetime.date.today().isoformat(), "cores": os.cpu_count(), "load_1min_at_start": load,
            "recipe": RECIPE, "threads": args.threads, "rows": rows, "over_brief": ratios,
            "same_table_everywhere": len(tables) == 1}
