"""The real run as typed (`python train.py --model Qwen/Qwen3-4B-Instruct`): the paper's data, split
and budget arithmetic, and the one-line messages when the data cannot be had. Offline: a fake
`datasets` module stands in for the hub."""
import math
import sys
import types

import pytest

import config
import data
import train


def fake_openr1(n=21_000):
    """Rows shaped like OpenR1-Math-220k: every 10th is a proof, every 7th has no verified generation."""
    rows = [{"uuid": f"u{i}", "problem": f"Problem {i}: what is {i}+1?", "answer": str(i + 1),
             "solution": f"{i}+1={i + 1}", "correctness_math_verify": [i % 7 != 0, False],
             "generations": ["long text"] * 2} for i in range(n)]
    for i in range(0, n, 10):
        rows[i]["answer"] = "proof"
    return rows


def install_fake_datasets(monkeypatch, rows=None, error=None):
    mod = types.ModuleType("datasets")

    def load_dataset(name, config=None, split=None):
        assert name == data.PAPER_MATH and split == "train"
        if error is not None:
            raise error
        return rows
    mod.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", mod)


def run_expecting_error(argv, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        train.main(argv + ["--runs-dir", str(runs), "--quiet"])
    msg = str(e.value)
    assert msg.startswith("error:") and "\n" not in msg
    assert not runs.exists()                      # stopped before writing anything
    return msg


def test_without_datasets_one_line_with_both_ways_forward(monkeypatch, tmp_path, tiny_dir):
    monkeypatch.setitem(sys.modules, "datasets", None)          # import datasets -> ImportError
    msg = run_expecting_error(["--model", tiny_dir], tmp_path)
    assert data.PAPER_MATH in msg and "pip install datasets" in msg and "--data file.jsonl" in msg


def test_without_network_one_line_with_both_ways_forward(monkeypatch, tmp_path, tiny_dir):
    install_fake_datasets(monkeypatch, error=ConnectionError(
        "Couldn't reach 'open-r1/OpenR1-Math-220k' on the Hub (LocalEntryNotFoundError)\nmore lines"))
    msg = run_expecting_error(["--model", tiny_dir], tmp_path)
    assert "no network" in msg and "huggingface-cli download" in msg and "--data file.jsonl" in msg


def test_code_without_data_names_the_papers_dataset(tmp_path, tiny_dir):
    msg = run_expecting_error(["--model", tiny_dir, "--task", "code"], tmp_path)
    assert data.PAPER_CODE in msg and "--question-field prompt" in msg and "--tests-field examples" in msg


def test_command_as_typed_reaches_the_model_with_the_papers_data(monkeypatch, tmp_path):
    """Exactly as the user types it: the data step succeeds (fake hub), then the model cannot be
    downloaded here, which is again one line and nothing written."""
    install_fake_datasets(monkeypatch, rows=fake_openr1())
    msg = run_expecting_error(["--model", "Qwen/Qwen3-4B-Instruct"], tmp_path)
    assert "Qwen/Qwen3-4B-Instruct-2507" in msg


def test_paper_split_is_15k_plus_500_verified_disjoint_and_seeded(monkeypatch):
    rows = fake_openr1()
    install_fake_datasets(monkeypatch, rows=rows)
    train_a, test_a = data.paper_math(seed=42)
    train_b, test_b = data.paper_math(seed=42)
    train_c, _ = data.paper_math(seed=7)
    assert len(train_a) == 15_000 and len(test_a) == 500
    assert [r["id"] for r in train_a] == [r["id"] for r in train_b] and test_a == test_b
    assert [r["id"] for r in train_a] != [r["id"] for r in train_c]
    assert not {r["id"] for r in train_a} & {r["id"] for r in test_a}
    bad = {r["uuid"] for i, r in enumerate(rows) if i % 10 == 0 or i % 7 == 0}
    assert not bad & {r["id"] for r in train_a + test_a}     # proofs and unverified are out
    assert set(train_a[0]) == {"id", "question", "answer", "solution"}
    # Table 13's best split of the 15K: 6K for Phase 1, 9K for Phase 2, disjoint
    args = config.parse(["--model", "x"])
    n1, n2 = data.split_phases(train_a, args.phase1_questions, seed=args.seed)
    assert (len(n1), len(n2)) == (6000, 9000)
    assert not {r["id"] for r in n1} & {r["id"] for r in n2}


def test_too_few_verified_problems_is_a_clear_error(monkeypatch):
    install_fake_datasets(monkeypatch, rows=fake_openr1(1000))
    with pytest.raises(data.DataError, match="fewer than"):
        data.paper_math(seed=0)


def paper_args(*extra):
    return config.parse(["--model", "x", *extra])


def test_paper_budget_arithmetic():
    """Phase 1: 6K questions x (1 y_init + 3 revisions) = 24K; Phase 2: one pass over 9K questions
    at 128 per step = ceil(70.3) = 71 steps = 9,088 generations (paper App. C.2: 40K + 9K)."""
    a = paper_args()
    assert (a.phase1_questions, a.max_traces, a.steps, a.phase2_epochs) == (6000, 6000, 0, 1.0)
    assert data.phase2_steps(a, 9000) == 71 == math.ceil(9000 / 128)
    assert data.planned_budget(a, 15_000) == 6000 * 4 + 71 * 128 == 33_088
    assert data.planned_budget(paper_args("--phase2-epochs", "5"), 15_000) == 24_000 + 352 * 128
    assert data.planned_budget(paper_args("--steps", "10", "--rollouts-per-question", "2"),
                                15_000) == 24_000 + 10 * 128 * 2
    assert data.planned_budget(paper_args("--n-init", "2", "--n-rev", "1"), 15_000) == 6000 * 2 * 2 + 71 * 128
    with pytest.raises(SystemExit, match="--budget"):
        data.planned_budget(paper_args("--revise-correct", "0"), 15_000)


def test_planned_budget_equals_what_sdzero_spends(tmp_path, tiny_dir, monkeypatch):
    """Exact, not estimated: a tiny SD-Zero run's logged generations equal planned_budget."""
    import json

    import revise
    from generate import rollout as real_rollout

    def finished_rollout(model, tok, prompts, **kw):      # same samples, all counted as finished
        out = real_rollout(model, tok, prompts, **kw)
        for r in out:
            r.finished = True
        return out
    monkeypatch.setattr(revise, "rollout", finished_rollout)
    monkeypatch.setattr(revise, "grade", lambda task, texts, items, phrases=None: [1.0] * len(texts))
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": str(i + 1)}) + "\n"
                         for i in range(11)))
    argv = ["--model", tiny_dir, "--data", str(p), "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--threads", "1", "--max-new-tokens", "4", "--batch-questions", "3", "--micro-batch", "4",
            "--no-eval", "--phase1-questions", "4", "--n-rev", "2", "--srt-steps", "1",
            "--gen-batch", "16", "--run-name", "budget"]
    assert train.main(argv) == 0
    last = [json.loads(line) for line in open(tmp_path / "runs" / "budget" / "metrics.jsonl")][-1]
    planned = data.planned_budget(config.parse(argv), 11)
    assert last["generations"] == planned == 4 * (1 + 2) + math.ceil(7 / 3) * 3
    assert last["step"] == math.ceil(7 / 3)
