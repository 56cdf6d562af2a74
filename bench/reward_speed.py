"""bench/reward_speed.py — how fast is the verifier? (a benchmark, not a test)

Measures on the project's own data:
  * math checks per second on a realistic mix (fixture golds x rollout-like responses: right, equivalent
    forms, near-misses, no box), in-process and through math_reward_batch's worker pool;
  * worst-case latency on the pathological set (power towers, 100 KB strings, deep nesting, ...);
  * code runs per second and the sandbox's per-run overhead over a bare `python -I` start, with the
    read-only mount namespace (file-write containment) on and off, measured side by side.
Targets (2-core CI machine): >= 200 typical math checks/s, every check <= 2 s, <= 50 ms overhead per code run.

    python -m bench reward            # writes bench/results/reward.json and prints it
"""
from __future__ import annotations

import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import reward
from bench import OUT, ROOT
from verifier import answer, sandbox

PATHOLOGICAL = ["9^{9^{9^9}}", "10^{10^{10}}", "2^{2^{2^{2^{2^{2}}}}}", "e^{e^{e^{e^{e}}}}", "\\exp(\\exp(\\exp(10)))",
                "99999999!", "\\sqrt{2^{50000}+1}", "\\binom{10^{9}}{3}", "\\sin(10^{10^{5}})", "x" * 100_000,
                "1+" * 50_000 + "1", "(" * 5000 + "1" + ")" * 5000, "\\sqrt{" * 400 + "2" + "}" * 400, "\\frac{1}{2",
                "{" * 50 + "1", "e^{e^{e^{x}}}", "(x+1)^{10000}", "3000!\\cdot 3000!", "e^{10000}",
                ", ".join(f"\\sqrt{{x+{k}}}" for k in range(32)), ", ".join(f"x^{{{k}}}+{k}" for k in range(32))]


def _load(name):
    text = (Path(ROOT) / "verifier" / "cases" / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _math_mix():
    """(response, gold) pairs shaped like Phase-1/2 rollouts: ~1.5 KB of reasoning, then a boxed answer."""
    reasoning = "Let us reason step by step. " * 50
    pairs = []
    for c in _load("math_checker_cases.jsonl"):
        if "pathological" in c["rule"] or "injection" in c["rule"]:
            continue
        if "response" in c:
            pairs.append((reasoning + c["response"], c["gold"]))
        else:
            pairs.append((reasoning + f"\\boxed{{{c['pred']}}}", c["gold"]))
    for r in _load("math_fixtures.jsonl"):
        gold = r["answer"]
        pairs += [(reasoning + f"\\boxed{{{gold}}}", gold), (reasoning + "\\boxed{17}", gold),
                  (reasoning + "so the answer is 17", gold),
                  (reasoning + f"\\boxed{{1}}\n\n{reward.CONTROL_PHRASES[1]}\n\n\\boxed{{{gold}}}", gold)]
    return pairs


def _time_each(fn, items):
    lat = []
    for it in items:
        t0 = time.perf_counter()
        fn(*it)
        lat.append(time.perf_counter() - t0)
    return lat


def bench_reward(args=None) -> dict:
    workers = int(getattr(args, "workers", None) or 2)
    out = {"verifier_version": reward.VERIFIER_VERSION, "python": platform.python_version(),
           "cpu_count": os.cpu_count(), "workers": workers}
    try:
        import sympy
        out["sympy"] = sympy.__version__
    except ImportError:
        pass

    # ---- math, in-process (cold parse cache, as at the start of a run; golds then repeat as in training)
    pairs = _math_mix()
    answer._analyse.cache_clear()
    lat = _time_each(reward.math_reward, pairs)
    out["math_mix_size"] = len(pairs)
    out["math_inprocess_checks_per_s"] = round(len(pairs) / sum(lat), 1)
    out["math_inprocess_max_latency_s"] = round(max(lat), 4)
    out["math_inprocess_p99_latency_s"] = round(sorted(lat)[int(0.99 * len(lat))], 4)
    lat = _time_each(reward.math_reward, pairs)
    out["math_inprocess_warm_checks_per_s"] = round(len(pairs) / sum(lat), 1)

    # ---- math through the worker pool (start-up measured separately; pool is persistent)
    t0 = time.perf_counter()
    reward.math_reward_batch(["\\boxed{1}"], ["1"], workers=workers)
    out["pool_startup_s"] = round(time.perf_counter() - t0, 3)
    responses, golds = zip(*pairs)
    t0 = time.perf_counter()
    got = reward.math_reward_batch(responses, golds, workers=workers, timeout=3.0)
    dt = time.perf_counter() - t0
    out["math_batch_checks_per_s"] = round(len(pairs) / dt, 1)
    out["math_batch_agrees_with_inprocess"] = got == [reward.math_reward(r, g) for r, g in pairs]

    # ---- pathological: every comparison must come back False within 2 s
    worst, worst_item = 0.0, None
    for p in PATHOLOGICAL:
        for call in ((p, "1"), ("1", p), (p, p), ("x+1", p)):
            answer._analyse.cache_clear()
            t0 = time.perf_counter()
            r = reward.math_equal(*call)
            dt = time.perf_counter() - t0
            if dt > worst:
                worst, worst_item = dt, p[:40]
            if r and call[0] != call[1]:
                out.setdefault("pathological_unexpected_true", []).append(p[:40])
    t0 = time.perf_counter()
    reward.math_reward_batch([f"\\boxed{{{p}}}" for p in PATHOLOGICAL], ["1"] * len(PATHOLOGICAL), workers=workers)
    out["pathological_count"] = len(PATHOLOGICAL)
    out["pathological_worst_latency_s"] = round(worst, 4)
    out["pathological_worst_item"] = worst_item
    out["pathological_batch_s"] = round(time.perf_counter() - t0, 3)

    # ---- code: sandboxed trivial run vs a bare interpreter start, with the read-only mount namespace on
    # and off (verifier.sandbox's private switch) in the same loop, so both overheads see the same machine load.
    # CPU time of the children (unshare, launcher, program) is reported too: on a shared, busy machine it
    # moves far less than wall time, which also counts the time spent waiting for a core.
    def fs_run(mode):
        def run():
            sandbox._FS_CONTAINMENT = mode
            try:
                reward.run_python("print(input())", stdin="1\n")
            finally:
                sandbox._FS_CONTAINMENT = "auto"
        return run

    def child_cpu():
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    reward.sandbox_protections()                       # probe outside the timed loop
    kinds = {"bare": lambda: subprocess.run([sys.executable, "-I", "-B", "-c", "print(input())"],
                                            input=b"1\n", capture_output=True),
             "fs_off": fs_run("off"), "fs_on": fs_run("auto")}
    n, wall, cpu = 40, {k: [] for k in kinds}, {k: [] for k in kinds}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    order, rng = list(kinds), random.Random(0)
    # Interleaved, so load from other processes hits all kinds alike; shuffled each round, so the kernel's
    # deferred clean-up of one run's namespaces does not always land on the same kind.
    for _ in range(n):
        rng.shuffle(order)
        for k in order:
            c0, t0 = child_cpu(), time.perf_counter()
            kinds[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(child_cpu() - c0)
    med = {k: 1000 * statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: 1000 * statistics.median(v) for k, v in cpu.items()}
    out["code_bench_loadavg_1min"] = load_before and round(load_before, 2)
    out["code_bare_python_ms"] = round(med["bare"], 1)
    out["code_sandboxed_run_ms"] = round(med["fs_on"], 1)
    out["code_sandboxed_run_without_fs_containment_ms"] = round(med["fs_off"], 1)
    out["code_overhead_per_run_ms"] = round(med["fs_on"] - med["bare"], 1)
    out["code_overhead_per_run_without_fs_containment_ms"] = round(med["fs_off"] - med["bare"], 1)
    out["code_fs_containment_extra_ms"] = round(med["fs_on"] - med["fs_off"], 1)
    out["code_fs_containment_extra_cpu_ms"] = round(med_cpu["fs_on"] - med_cpu["fs_off"], 1)
    out["code_run_ratio_fs_on_over_off"] = round(med["fs_on"] / med["fs_off"], 3)
    out["code_cpu_ms"] = {k: round(v, 1) for k, v in med_cpu.items()}
    out["code_cpu_overhead_per_run_ms"] = round(med_cpu["fs_on"] - med_cpu["bare"], 1)
    out["code_cpu_overhead_per_run_without_fs_containment_ms"] = round(med_cpu["fs_off"] - med_cpu["bare"], 1)
    out["code_serial_runs_per_s"] = round(n / sum(wall["fs_on"]), 1)
    fixtures = _load("code_fixtures.jsonl")
    responses = [r["solution"] for r in fixtures] + [r["wrong_solution"] for r in fixtures]
    tests = [r["tests"] for r in fixtures] * 2
    runs = sum(len(t["stdio"]) if "stdio" in t else 1 for t in tests)   # upper bound: fails stop early
    t0 = time.perf_counter()
    got = reward.code_reward_batch(responses, tests, workers=workers)
    dt = time.perf_counter() - t0
    out["code_fixture_programs"] = len(responses)
    out["code_batch_programs_per_s"] = round(len(responses) / dt, 1)
    out["code_batch_runs_per_s_upper_bound"] = round(runs / dt, 1)
    out["code_fixtures_correct"] = got == [1.0] * len(fixtures) + [0.0] * len(fixtures)
    out["sandbox_protections"] = reward.sandbox_protections()

    out["targets"] = {"math_checks_per_s>=200": out["math_inprocess_checks_per_s"] >= 200
                      and out["math_batch_checks_per_s"] >= 200,
                      "every_check<=2s": out["pathological_worst_latency_s"] <= 2.0
                      and out["math_inprocess_max_latency_s"] <= 2.0,
                      "code_overhead<=50ms": out["code_overhead_per_run_ms"] <= 50}
    return out


if __name__ == "__main__":                      # python -m bench.reward_speed (or python -m bench reward)
    res = bench_reward(None)
    path = Path(OUT) / "reward.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
