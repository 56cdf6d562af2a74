"""Batch grading: the worker pool gives the same answers as the serial path, kills and replaces a stuck
or crashed worker (the item scores the default), and can be called from several threads at once."""
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reward import math_reward, math_reward_batch  # noqa: E402
from verifier.pool import _pool_map  # noqa: E402

PAIRS = [("\\boxed{\\frac{1}{2}}", "0.5"), ("\\boxed{3}", "4"), ("\\boxed{(1,2)}", "(1, 2)"), ("no box", "1"),
         ("\\boxed{x^2+2x+1}", "(x+1)^2"), ("\\boxed{10^{10^{10}}}", "1"), ("\\boxed{2}", "\\pm 2"),
         ("\\boxed{\\sqrt{8}}", "2\\sqrt2")] * 5


def test_batch_matches_serial():
    responses, golds = zip(*PAIRS)
    expected = [math_reward(r, g) for r, g in PAIRS]
    assert math_reward_batch(responses, golds, workers=2, timeout=5.0) == expected
    assert math_reward_batch(responses, golds, workers=0) == expected
    assert math_reward_batch([], [], workers=2) == []
    with pytest.raises(ValueError):
        math_reward_batch(["a"], ["1", "2"])


def test_stuck_worker_is_killed_and_replaced():
    t0 = time.monotonic()
    out = _pool_map("time", "sleep", [(0.01,), (30,), (0.01,), (0.05,)], workers=2, timeout=1.0,
                    default="timeout")
    assert out == [None, "timeout", None, None]
    assert time.monotonic() - t0 < 10.0
    assert math_reward_batch(["\\boxed{7}"] * 4, ["7"] * 4, workers=2) == [1.0] * 4   # the pool recovered


def test_crashed_worker_is_replaced():
    assert _pool_map("os", "_exit", [(3,)], workers=2, timeout=5.0, default="crashed") == ["crashed"]
    assert _pool_map("math", "sqrt", [(-1,)], workers=2, default="error") == ["error"]   # exception in item
    assert math_reward_batch(["\\boxed{7}"], ["7"], workers=2) == [1.0]


def test_batch_from_threads():
    results = {}

    def grade(k):
        results[k] = math_reward_batch([f"\\boxed{{{j}}}" for j in range(12)], [str(j + k) for j in range(12)])

    threads = [threading.Thread(target=grade, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {0: [1.0] * 12, 1: [0.0] * 12, 2: [0.0] * 12}
