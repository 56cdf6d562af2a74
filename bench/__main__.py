"""python -m bench {reward,distill,table,sync,gpu,concurrency}: the benchmarks' one entry point (bench/__init__.py)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from machinery import repro

if __name__ == "__main__" and sys.argv[1:2] in (["table"], ["sync"]):
    repro.pin_cpu_kernels()      # the toy tables (each train.py run they start pins itself as well)
from bench import OUT
from bench.concurrency import add_arguments as concurrency_arguments
from bench.concurrency import bench_concurrency
from bench.gpu import add_arguments as gpu_arguments
from bench.gpu import bench_gpu
from bench.memory import bench_distill
from bench.reward_speed import bench_reward
from bench.table import bench_sync, bench_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("reward", help="verifier throughput / latency")
    d = sub.add_parser("distill", help="loss memory and time at Qwen3-4B sizes")
    d.add_argument("--small", action="store_true", help="a quick, small-size sanity version")
    t = sub.add_parser("table", help="Table 1 in miniature on the toy world")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--eval-k", type=int, default=1)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--runs-dir", default="runs")
    t.add_argument("--only-sdzero", action="store_true",
                   help="only the SD-Zero runs: the seed band of the default table's rows (base, SRT, SD-Zero)")
    t.add_argument("--world", choices=["standard", "banded"], default="standard",
                   help="banded: add the rarely-solved band (toy.py) and report each band")
    y = sub.add_parser("sync", help="frozen teacher vs one teacher sync on a reward plateau (Fig. 5)")
    y.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    y.add_argument("--eval-k", type=int, default=1)
    y.add_argument("--threads", type=int, default=2)
    y.add_argument("--runs-dir", default="runs")
    y.add_argument("--patience", type=int, default=20, help="train.py --sync-on-plateau P")
    gpu_arguments(sub.add_parser("gpu", help="one GPU at Qwen3-4B size: rollout tokens/s, 16K Phase-2 and SRT steps, "
                                  "predicted vs measured peak, hours of the paper run"))
    concurrency_arguments(sub.add_parser("concurrency", help="N toy runs side by side: PASSIVE vs ACTIVE OpenMP "
                                         "wait policy, each against N runs one after another"))
    args = p.parse_args(argv)
    if args.cmd == "gpu":
        res = bench_gpu(args)
    elif args.cmd == "reward":
        res = bench_reward(args)
    elif args.cmd == "distill":
        res = bench_distill(args)
    elif args.cmd == "concurrency":
        res = bench_concurrency(args)
    elif args.cmd == "sync":
        res = bench_sync(args)
    else:
        res = bench_table(args)
    if args.cmd != "table":
        os.makedirs(OUT, exist_ok=True)
        name = f"{args.cmd}-small" if getattr(args, "small", False) else args.cmd   # keep full results
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
