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
    """Rows shaped like OpenR1-Math-220k: every 10th is a proof, every 7th has no verified generation;
    the verified generation is the second one on odd rows (the first is then marked wrong)."""
    rows = [{"uuid": f"u{i}", "problem": f"Problem {i}: what is {i}+1?", "answer": str(i + 1),
             "solution": f"{i}+1={i + 1}",
             "correctness_math_verify": [i % 7 != 0, False] if i % 2 == 0 else [False, i % 7 != 0],
             "generations": [f"r1 trace A{i}", f"r1 trace B{i}"]} for i in range(n)]
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
    assert set(train_a[0]) == {"id", "question", "answer", "solution", "r1"}
    assert set(test_a[0]) == {"id", "question", "answer", "solution"}         # held out: no demonstration
    # SDFT's and SFT's demonstration: the R1 generation the row's own math-verify column marks correct
    by_id = {r["uuid"]: r for r in rows}
    for r in train_a[:50]:
        src = by_id[r["id"]]
        assert r["r1"] == src["generations"][src["correctness_math_verify"].index(True)]
    # App. C.1 as data.phase2_questions reads it: collect on 10K, keep <= 6K traces, distil on 9K others
    args = config.parse(["--model", "x"])
    n1, rest = data.split_phases(train_a, args.phase1_questions, seed=args.seed)
    assert (len(n1), len(rest)) == (10_000, 5_000)
    kept = [r["id"] for r in n1[::3]][:6000] + [n1[0]["id"]]     # ids of kept traces (a question may repeat)
    n2 = data.phase2_questions(args, n1, rest, kept)
    assert len(n2) == 9000 == data.phase2_size(args, 10_000, 5_000)
    assert n2[:5000] == rest                                      # first the questions Phase 1 never saw
    assert not set(kept) & {r["id"] for r in n2}                  # none with a trace SRT trained on
    assert len({r["id"] for r in n2}) == 9000
    # The toy's rule (--phase2-questions 0): every question outside N1, in order
    assert data.phase2_questions(config.parse([]), n1, rest, kept) is rest


def test_too_few_verified_problems_is_a_clear_error(monkeypatch):
    install_fake_datasets(monkeypatch, rows=fake_openr1(1000))
    with pytest.raises(data.DataError, match="fewer than"):
        data.paper_math(seed=0)


def paper_args(*extra):
    return config.parse(["--model", "x", *extra])


def test_paper_budget_arithmetic():
    """Phase 1: 10K questions x (1 y_init + 3 revisions) = 40K; Phase 2: one pass over 9K questions
    at 128 per step = ceil(70.3) = 71 steps = 9,088 generations (paper App. C.2, Table 3: 40K + 9K)."""
    a = paper_args()
    assert (a.phase1_questions, a.phase2_questions, a.max_traces, a.steps, a.phase2_epochs) == (
        10_000, 9000, 6000, 0, 1.0)
    assert data.phase2_steps(a, 9000) == 71 == math.ceil(9000 / 128)
    assert data.planned_budget(a, 15_000) == 10_000 * 4 + 71 * 128 == 49_088
    assert data.planned_budget(paper_args("--phase2-epochs", "5"), 15_000) == 40_000 + 352 * 128
    assert data.planned_budget(paper_args("--steps", "10", "--rollouts-per-question", "2"),
                                15_000) == 40_000 + 10 * 128 * 2
    assert data.planned_budget(paper_args("--n-init", "2", "--n-rev", "1"), 15_000) == 10_000 * 2 * 2 + 71 * 128
    # N2 is what is certain to exist whatever Phase 1 keeps: 5K unseen + (10K - at most 6K with a trace)
    assert data.phase2_size(paper_args("--max-traces", "8000"), 10_000, 5000) == 7000
    assert data.phase2_size(paper_args("--max-traces", "0"), 10_000, 5000) == 5000      # all kept: none certain
    assert data.phase2_size(paper_args("--phase2-questions", "0"), 10_000, 5000) == 5000
    with pytest.raises(SystemExit, match="--budget"):
        data.planned_budget(paper_args("--revise-correct", "0"), 15_000)


def test_baselines_paper_budget_arithmetic():
    """--budget paper: 15K questions x 4 = 60K for each of RFT, GRPO and SDFT (Table 3), spent in whole steps."""
    a = paper_args("--grpo-updates", "16")
    assert data.baseline_budget(a, 15_000, "paper") == 60_000
    assert data.baseline_budget(a, 15_000, "equal") == 49_088 and data.baseline_budget(a, 15_000, 123) == 123
    rft = data.baseline_plan(a, "rft", 15_000, 60_000)
    assert (rft["samples"], rft["generations"]) == (4, 60_000)
    # GRPO: rollout batches of 16 mini-batches x 32 questions = 512 questions (DAPO's recipe), 4 rollouts each
    grpo = data.baseline_plan(a, "grpo", 15_000, 60_000)
    assert (grpo["batch_questions"], grpo["per_step"], grpo["steps"]) == (512, 2048, 29)
    assert grpo["generations"] == 29 * 2048 == 59_392                 # one pass, less the 152 a 30th batch would pass
    sdft = data.baseline_plan(a, "sdft", 15_000, 60_000)
    assert (sdft["per_step"], sdft["steps"], sdft["generations"]) == (128, 468, 59_904)
    assert data.baseline_plan(a, "sft", 15_000, 60_000)["generations"] == 0


def dry_run_output(capsys, monkeypatch, main, argv):
    """--dry-run's printout; loading any model or data fails the test."""
    import baselines
    import generate

    def forbidden(*a, **kw):
        raise AssertionError("--dry-run loaded something")
    for mod, name in ((train, "open_run"), (train, "load_model"), (generate, "load_model"), (data, "paper_math"),
                      (data, "load"), (baselines.train, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    assert main(argv) == 0
    return capsys.readouterr().out


def test_dry_run_prints_the_papers_plan_without_loading(capsys, monkeypatch):
    import baselines
    out = dry_run_output(capsys, monkeypatch, train.main, ["--model", "Qwen/Qwen3-4B-Instruct", "--dry-run"])
    assert "15,000 training questions" in out
    assert "N1 = 10,000 questions x (1 y_init + 3 revisions) = 40,000 generations" in out
    assert "keep at most 6,000 verified traces" in out
    assert "N2 = 9,000 questions" in out and "71 steps x 128 questions x 1 rollouts = 9,088 generations" in out
    assert "SD-Zero: 40,000 + 9,088 = 49,088 generations (paper Table 3: 40K + 9K = 49K)" in out
    assert "RFT: 15,000 questions x 4 samples = 60,000 generations" in out
    assert "GRPO: 29 rollout batches x (512 questions x 4 rollouts, 16 updates each) = 59,392" in out
    assert "SDFT: 468 steps x (128 questions x 1 rollouts) = 59,904" in out
    assert out.count("(budget 60,000, paper: 15,000 questions x 4, Table 3)") == 3
    assert "SFT: 15,000 demonstrations (--demo r1), 0 generations" in out
    out = dry_run_output(capsys, monkeypatch, baselines.main,
                         ["rft", "--model", "Qwen/Qwen3-4B-Instruct", "--dry-run"])
    assert "RFT: 15,000 questions x 4 samples = 60,000 generations (budget 60,000" in out and "SD-Zero" not in out
    grpo = ["grpo", "--model", "x", "--dry-run", "--budget", "equal", "--limit", "1000", "--phase1-questions", "0.4"]
    out = dry_run_output(capsys, monkeypatch, baselines.main, grpo)
    assert "budget 2,240, equal" in out              # 400 x 4 + ceil(600 / 128) = 5 steps x 128
    assert "GRPO: 1 rollout batches x (512 questions x 4 rollouts, 16 updates each) = 2,048" in out
    with pytest.raises(SystemExit, match="--limit N"):
        train.main(["--dry-run"])                     # the toy: the count is the data's, so it must be given


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
