"""bench — measured figures as JSON: benchmarks, not tests (one entry point: python -m bench).

    python -m bench reward     # verifier throughput, worst-case latency, sandbox overhead -> results/reward.json
    python -m bench distill    # loss memory: chunked vs the plain reference (Qwen3-4B)   -> results/distill.json
    python -m bench table      # paper Table 1 in miniature on the toy world              -> results/table.*
    python -m bench table --world banded   # the same with a rarely-solved band         -> results/table-banded.*
    python -m bench sync       # frozen teacher vs one sync on a reward plateau (Fig. 5)  -> results/sync.*
    python -m bench gpu        # one GPU: rollout engines, Phase-2/SRT steps at 16K, hours -> results/gpu.json
    python -m bench concurrency  # N toy runs side by side, PASSIVE vs ACTIVE OpenMP -> results/concurrency.json

(results/ is bench/results/.)
Run from the repository root. Each benchmark lives in its own module here (reward_speed, memory,
table, gpu, concurrency) and imports the project's modules exactly as train.py does.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("SDZERO_BENCH_OUT") or os.path.join(ROOT, "bench", "results")   # tests: a tmp dir
