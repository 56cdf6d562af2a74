"""data.BENCHMARKS / load_benchmark: every Table 1 benchmark read from a fixture in the dataset's OWN columns,
mapped onto our schema by the same code as hub rows, and graded right by the project's own verifier; the
hub path (configs, JSONL files) on a fake ``datasets``; the one-line errors offline and without ``datasets``.

The fixture rows in tests/fixtures/benchmarks/ are invented problems written in each dataset's columns and
value formats (docs/benchmarks.md lists them); no test touches the network.
"""
import base64
import json
import os
import pickle
import sys
import types
import zlib
from pathlib import Path

import pytest
from conftest import ROOT

import data
import reward

FIX = os.path.join(ROOT, "tests", "fixtures", "benchmarks")

# A correct program for each code fixture problem (by its id after mapping): graded through code_reward.
SOLUTIONS = {
    "1900/A": "print(2 * int(input()))",
    "1900/B": "a, b = map(int, input().split())\nprint(a + b)",
    "abc400_a": "print(input()[::-1])",
    "1999A": "for _ in range(int(input())):\n    print(int(input()) ** 2)",
}


@pytest.fixture(autouse=True)
def _no_env_source(monkeypatch):
    monkeypatch.delenv("SDZERO_BENCHMARKS", raising=False)


@pytest.mark.parametrize("name", sorted(data.BENCHMARKS))
def test_every_benchmark_loads_from_its_fixture_and_grades_right(name):
    spec = data.BENCHMARKS[name]
    rows = data.load_benchmark(name, source=os.path.join(FIX, f"{name}.jsonl"))
    assert rows and len({str(r["id"]) for r in rows}) == len(rows)          # every row has its own id
    for r in rows:
        assert isinstance(r["question"], str) and r["question"].strip()
        if spec["task"] == "math":
            assert reward.math_reward(f"So the answer is \\boxed{{{r['answer']}}}.", r["answer"]) == 1.0
            assert reward.math_reward("So the answer is \\boxed{123456789}.", r["answer"]) == 0.0
        else:
            assert set(r["tests"]) == {"stdio"} and r["tests"]["stdio"]
            good = f"```python\n{SOLUTIONS[r['id']]}\n```"
            assert reward.code_reward(good, r["tests"]) == 1.0, r["id"]
            assert reward.code_reward("```python\nprint(0)\n```", r["tests"]) == 0.0


def test_field_mappings_follow_each_dataset():
    aime24 = data.load_benchmark("aime24", source=FIX)                       # a folder: FIX/aime24.jsonl
    assert [r["id"] for r in aime24] == [60, 61] and aime24[0]["answer"] == "401"
    assert [r["id"] for r in data.load_benchmark("aime25", source=FIX)] == ["aime25:0", "aime25:1"]   # no id column
    assert data.load_benchmark("hmmt25", source=FIX)[1]["answer"] == "\\frac{4\\sqrt{2}-5}{3}"
    amo = data.load_benchmark("amobench", source=FIX)
    assert [r["answer"] for r in amo][:2] == ["6", "\\{1, 2, 3\\}"]          # \boxed{...} unwrapped
    assert data.load_benchmark("math500", source=FIX)[0]["id"] == "test/precalculus/807.json"
    assert data.load_benchmark("openr1", source=FIX)[0]["id"].startswith("0f3c2b1e")
    assert data.load_benchmark("aime24", limit=1, source=FIX) == aime24[:1]


def test_codeforces_keeps_each_problem_once():
    rows = data.load_benchmark("codeforces", source=FIX)                    # 3 rows: two generations of 1900/A
    assert [r["id"] for r in rows] == ["1900/A", "1900/B"]
    assert rows[0]["tests"] == {"stdio": [{"input": "3", "output": "6"}, {"input": "10", "output": "20"}]}
    assert "Python 3" in rows[0]["question"]


def test_livecodebench_decodes_packed_private_tests_and_counts_what_it_leaves_out(capsys):
    rows = data.load_benchmark("livecodebench", source=FIX)
    assert [r["id"] for r in rows] == ["abc400_a", "1999A"]                 # the LeetCode-style row is left out
    assert rows[0]["tests"]["stdio"] == [{"input": "abc\n", "output": "cba\n"}, {"input": "xy\n", "output": "yx\n"}]
    assert len(rows[1]["tests"]["stdio"]) == 2                              # public + plain-JSON private
    assert "left out 1 problems" in capsys.readouterr().err


def test_a_pickle_that_names_a_function_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    row = json.loads(Path(FIX, "livecodebench.jsonl").read_text().splitlines()[0])
    row["private_test_cases"] = blob
    (tmp_path / "livecodebench.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(data.DataError, match=r"livecodebench.jsonl:1: .*refusing"):
        data.load_benchmark("livecodebench", source=str(tmp_path))


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(data.DataError) as e:
        data.load_benchmark("aime23")
    msg = str(e.value)
    assert "\n" not in msg and "'aime23'" in msg and all(n in msg for n in data.BENCHMARKS)
    assert data.benchmark_names(["paper", "aime24", "livecodebench"]) == [*data.PAPER_TABLE1, "livecodebench"]


def test_a_fixture_in_the_wrong_columns_fails_with_file_and_line(tmp_path):
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"question": "x", "answer": "1"}) + "\n")
    with pytest.raises(data.DataError, match=r"aime24.jsonl:1: missing or empty question"):
        data.load_benchmark("aime24", source=str(tmp_path))


def test_env_var_points_at_local_copies(monkeypatch):
    monkeypatch.setenv("SDZERO_BENCHMARKS", FIX)
    assert len(data.load_benchmark("hmmt25")) == 2
    assert len(data.load("hmmt25")) == 2                     # data.load (evaluate/train --data NAME) knows them


# --------------------------------------------------------------------------------------------
# The hub path, on a stand-in ``datasets`` module
# --------------------------------------------------------------------------------------------
def fake_datasets(monkeypatch, load_dataset):
    mod = types.ModuleType("datasets")
    mod.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", mod)


def test_hub_rows_take_the_same_mapping(monkeypatch):
    calls = []
    own = {n: [json.loads(ln) for ln in Path(FIX, f"{n}.jsonl").read_text().splitlines()] for n in data.BENCHMARKS}

    def load_dataset(path, config=None, split=None, data_files=None):
        calls.append((path, config, split, data_files))
        name = "livecodebench" if path == "json" else next(n for n, s in data.BENCHMARKS.items() if s["hf"] == path)
        return own[name]
    fake_datasets(monkeypatch, load_dataset)
    assert len(data.load_benchmark("aime25")) == 4                          # two configs, concatenated
    assert [c[1] for c in calls] == ["AIME2025-I", "AIME2025-II"] and calls[0][2] == "test"
    assert data.load_benchmark("math500") == data.load_benchmark("math500", source=FIX)
    calls.clear()
    assert [r["id"] for r in data.load_benchmark("livecodebench")] == ["abc400_a", "1999A"]
    assert calls == [("json", None, "train", "hf://datasets/livecodebench/code_generation_lite/test6.jsonl")]


def test_offline_without_cache_is_one_line_naming_the_dataset(monkeypatch):
    def load_dataset(*a, **k):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/aime_2024' on the Hub (LocalEntryNotFoundError)\nmore")
    fake_datasets(monkeypatch, load_dataset)
    with pytest.raises(data.DataError) as e:
        data.load_benchmark("aime24")
    msg = str(e.value)
    assert "\n" not in msg and "HuggingFaceH4/aime_2024" in msg and "huggingface-cli download" in msg
    assert "SDZERO_BENCHMARKS" in msg


@pytest.mark.parametrize("name", ["livecodebench", "openr1"])
def test_offline_names_the_dataset_for_files_and_the_held_out_split(monkeypatch, name):
    def load_dataset(*a, **k):
        raise OSError("offline")
    fake_datasets(monkeypatch, load_dataset)
    with pytest.raises(data.DataError, match=data.BENCHMARKS[name]["hf"]):
        data.load_benchmark(name)


def test_without_datasets_installed_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)                     # `import datasets` raises ImportError
    with pytest.raises(data.DataError) as e:
        data.load_benchmark("amobench")
    msg = str(e.value)
    assert "\n" not in msg and "meituan-longcat/AMO-Bench" in msg and "pip install datasets" in msg


def test_real_datasets_offline_with_an_empty_cache(monkeypatch, tmp_path):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    with pytest.raises(data.DataError, match="HuggingFaceH4/MATH-500"):
        data.load_benchmark("math500")


# --------------------------------------------------------------------------------------------
# evaluate.py --benchmark: one ordinary run per benchmark, then Table 1's layout
# --------------------------------------------------------------------------------------------
def test_evaluate_benchmark_end_to_end(tiny_dir, tmp_path, monkeypatch, capsys):
    import evaluate
    monkeypatch.setenv("SDZERO_BENCHMARKS", FIX)                           # the fixtures stand in for the hub
    out = tmp_path / "t1.json"
    rc = evaluate.main(["--model", tiny_dir, "--model", tiny_dir, "--benchmark", "aime24", "--benchmark",
                        "livecodebench", "--k", "2", "--max-new-tokens", "6", "--no-revision", "--out", str(out),
                        "--quiet", "--threads", "1"])
    assert rc == 0
    results = json.loads(out.read_text())
    assert list(results) == ["aime24", "livecodebench"]
    assert results["aime24"]["questions"] == 2 and results["livecodebench"]["args"]["task"] == "code"
    assert json.loads((tmp_path / "t1-aime24.json").read_text()) == results["aime24"]    # each run's own report
    for rep in results.values():
        assert len(rep["models"]) == 2 and all(ev["k"] == 2 for ev in rep["models"].values())
    table = capsys.readouterr().out.split("Table 1")[-1]
    assert "| model (avg@2, %) | aime24 | livecodebench | Avg |" in table
    assert table.count(f"| {tiny_dir}") == 2                               # a row per model (the second is '#2')


def test_evaluate_benchmark_paper_is_table1s_math_columns_under_the_papers_protocol(monkeypatch, tmp_path, capsys):
    """No model runs here: load_model and evaluate_model are stand-ins that record what they were asked."""
    import evaluate
    asked = []

    def fake_evaluate(model, tok, items, *, task, k, gen, **kw):
        asked.append((task, k, gen["max_new_tokens"], gen["temperature"], len(items)))
        return {"questions": len(items), "k": k, f"avg@{k}": 0.25 * len(asked), f"pass@{k}": 0.5,
                "mean_tokens": 1.0, "truncated_share": 0.0, "keyword_rate": 0.0}
    monkeypatch.setattr(evaluate, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(evaluate, "evaluate_model", fake_evaluate)
    monkeypatch.setenv("SDZERO_BENCHMARKS", FIX)
    assert evaluate.main(["--model", "m", "--benchmark", "paper", "--out", str(tmp_path / "e.json"), "--quiet"]) == 0
    assert list(json.loads((tmp_path / "e.json").read_text())) == list(data.PAPER_TABLE1)
    assert {a[:4] for a in asked} == {("math", 8, 32768, 0.7)}                 # k = 8, 32,768 tokens, T = 0.7
    row = next(ln for ln in capsys.readouterr().out.split("Table 1")[-1].splitlines() if ln.startswith("| m "))
    assert row == "| m |  25.0 |  50.0 |  75.0 | 100.0 | 125.0 | 150.0 |  87.5 |"
