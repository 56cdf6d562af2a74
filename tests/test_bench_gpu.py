"""bench/gpu.py: the prepared GPU check runs end to end (tiny config, CPU) through the project's code."""
import argparse

from bench.gpu import add_arguments, bench_gpu


def test_gpu_check_mechanics_on_cpu():
    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--small", "--steps", "2", "--response-tokens", "16", "--prompt-tokens", "8"])
    res = bench_gpu(args)
    assert len(res["steps"]) == 2 and res["device"] == "cpu"
    assert all(s["loss"] >= 0 and s["gen_tokens_per_s"] > 0 for s in res["steps"])
    assert res["teacher_tokens_per_sequence"] == 8 + 2 * 16 + 9
