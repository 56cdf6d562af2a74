"""A task from outside the project (README "Adding a task", run verbatim): registered in reward.TASKS
by a module of the user's, graded through --reward module:function, and carried through Phase 1,
SRT, Phase 2 and evaluate.py; plus the one-line errors that list the registered tasks."""
import json
import re
import sys

import pytest
from conftest import ROOT, build_two_answer_model

import config
import data
import evaluate
import reward
import train


def readme_task_module() -> str:
    """The python block of the README's "Adding a task" section, as a user would save it."""
    text = open(f"{ROOT}/README.md", encoding="utf-8").read()
    section = text[text.index("## Adding a task"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture()
def user_task(tmp_path, monkeypatch):
    """my_task.py in a folder of the user's (the current folder), and a clean task table after."""
    (tmp_path / "my_task.py").write_text(readme_task_module())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))     # (train.py --reward puts the current folder there itself)
    monkeypatch.setattr(reward, "TASKS", dict(reward.TASKS))      # registrations vanish with the test
    sys.modules.pop("my_task", None)
    yield tmp_path
    sys.modules.pop("my_task", None)


def test_a_task_from_outside_runs_every_phase_and_evaluate(user_task):
    rows = [{"id": i, "question": f"Reverse the string: {c}", "answer": c} for i, c in enumerate("ab" * 12)]
    (user_task / "rev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    __import__("my_task")                            # registers "reverse", as --reward will
    # a tiny model that answers "a" or "b": about half its one-letter reversals are right
    model = build_two_answer_model(user_task / "letters", [r["question"] for r in rows], "reverse", [" a", " b"],
                                   steps=40, extra_corpus=" a b")
    args = ["--model", model, "--data", "rev.jsonl", "--test-data", "rev.jsonl", "--task", "reverse",
            "--reward", "my_task:reversed_right", "--preset", "smoke", "--runs-dir", "runs", "--run-name", "rev",
            "--quiet", "--threads", "1", "--phase1-questions", "8", "--steps", "2", "--batch-questions", "4",
            "--srt-steps", "2", "--srt-batch-size", "4", "--max-new-tokens", "4", "--eval-questions", "6"]
    assert train.main(args) == 0
    run = user_task / "runs" / "rev"
    phases = [json.loads(line)["phase"] for line in open(run / "metrics.jsonl")]
    assert phases.count("srt") == 2 and phases.count("distill") == 2
    assert json.load(open(run / "phase1_stats.json"))["kept"] > 0
    assert set(json.load(open(run / "eval.json"))) == {"base", "SRT", "SD-Zero"}
    # evaluate.py on the run folder: its task, reward, P_r and test data come from config.json
    reward.TASKS.pop("reverse")                     # a fresh process knows only math and code
    sys.modules.pop("my_task", None)
    assert evaluate.main([str(run), "--k", "1", "--max-new-tokens", "4", "--out", "ev.json", "--quiet",
                          "--no-revision", "--threads", "1"]) == 0
    report = json.load(open(user_task / "ev.json"))
    assert report["args"]["task"] == "reverse" and report["args"]["data"] == "rev.jsonl"
    assert "avg@1" in report["models"][str(run / "final")]


def test_unknown_task_names_the_registered_ones(tmp_path):
    with pytest.raises(SystemExit, match="registered: code, math.*--reward module:function"):
        config.parse(["--task", "reverse"])
    with pytest.raises(SystemExit, match="cannot import"):
        config.parse(["--task", "reverse", "--reward", "no_such_module:f"])
    (tmp_path / "q.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(data.DataError, match="unknown task 'reverse' \\(registered: code, math\\)"):
        data.load_jsonl(str(tmp_path / "q.jsonl"), "reverse")


def test_reward_function_without_registration_makes_a_task(user_task):
    (user_task / "plain.py").write_text("def exact(response, row):\n    return response.strip() == row['answer']\n")
    sys.modules.pop("plain", None)
    args = config.parse(["--task", "echo", "--reward", "plain:exact"])
    task = reward.get_task(args.task)
    # only the text after the last control phrase is graded, and the result is read as a bit
    texts = ["x", f"wrong {reward.P_WRONG} x", "y"]
    assert reward.grade("echo", texts, [{"answer": "x"}] * 3) == [1.0, 1.0, 0.0]
    assert task.instruction == reward.TASKS["math"].instruction
    with pytest.raises(ValueError, match="answer"):
        task.check_row({"question": "q"})
    sys.modules.pop("plain", None)
