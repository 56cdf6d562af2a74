"""machinery/report.py: the page of a real (tiny) train.py run is self-contained, draws one polyline per
series, marks teacher syncs, and escapes everything it reads from the run folder. The same run
checks that train.py writes the shared revision pool and the pool columns."""
import html
import json
import re
import shutil

import pytest

import train
from machinery import report

EVIL = "<img src=x onerror=alert(1)>"            # a run name is a folder name: no slash, but markup


@pytest.fixture(scope="module")
def tiny_run(tiny_dir, tmp_path_factory):
    """Phase 2 from the tiny random model for 3 steps with a teacher sync every 2, then the table."""
    tmp = tmp_path_factory.mktemp("report")
    data = tmp / "math.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": f"What is {i}+{i + 1}?", "answer": str(2 * i + 1)})
                            + "\n" for i in range(12)))
    args = ["--model", tiny_dir, "--data", str(data), "--test-data", str(data), "--runs-dir", str(tmp / "runs"),
            "--run-name", EVIL, "--quiet", "--threads", "1", "--max-new-tokens", "8", "--batch-questions", "4",
            "--micro-batch", "2", "--lr", "1e-3", "--save-every", "1", "--gen-batch", "8", "--phase", "distill",
            "--steps", "3", "--teacher-sync", "2", "--eval-questions", "6"]
    assert train.main(args) == 0
    return tmp / "runs" / EVIL


def test_train_run_writes_pool_and_report(tiny_run):
    assert (tiny_run / "report.html").exists()
    pool = [json.loads(line) for line in open(tiny_run / "revision_pool.jsonl")]
    assert len(pool) == 6 and {"prompt_ids", "y_init_ids", "y_init_text", "reward"} <= set(pool[0])
    ev = json.load(open(tiny_run / "eval.json"))
    assert set(ev) == {"start", "Phase 2 only"}
    assert ev["start"]["generations_used"] == 0 and ev["Phase 2 only"]["generations_used"] == 12
    for e in ev.values():                          # both models revised the same 6 answers
        assert e["pool"]["pool_size"] == 6
        assert e["pool"]["n_wrong"] == sum(p["reward"] < 0.5 for p in pool)
    assert "| pool correction | pool break |" in (tiny_run / "table.md").read_text()


def _check_self_contained(text):
    assert not re.search(r"https?://", text)                       # nothing fetched from anywhere
    assert "<script" not in text.lower() and "<img" not in text      # no script, no injected tag
    assert "<svg" in text


def test_single_run_page(tiny_run):
    text = (tiny_run / "report.html").read_text()
    _check_self_contained(text)
    assert EVIL not in text and html.escape(EVIL) in text
    charts = re.findall(r"<svg.*?</svg>", text, re.S)
    assert len(charts) == 5                        # reward, KL, length, keyword rate, held-out accuracy
    for chart in charts:
        assert chart.count("<polyline") == 1       # one run -> one series per chart
    reward_pts = re.search(r"<polyline points='([^']*)'", charts[0]).group(1).split()
    assert len(reward_pts) == 3                    # one point per Phase-2 step
    acc_pts = re.search(r"<polyline points='([^']*)'", charts[4]).group(1).split()
    assert len(acc_pts) == 2                       # start (0 generations) and the final model
    for chart in charts[:4]:                       # the one teacher sync (after step 2), dashed
        assert chart.count("stroke-dasharray") == 1 and "teacher sync 1" in chart
    assert "stroke-dasharray" not in charts[4]
    assert "(reverse, eq. 4)" in charts[1]         # the KL chart names the divergence the run used


def test_overlay_escapes_labels_and_draws_every_run(tiny_run, tmp_path):
    other = tmp_path / "other-run"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("*.pt", "final"))
    ev = json.load(open(other / "eval.json"))
    bad = "</title></svg><script>alert(2)</script>"
    ev[bad] = ev.pop("Phase 2 only")
    json.dump(ev, open(other / "eval.json", "w"))
    out = report.write_report([str(tiny_run), str(other)], str(tmp_path / "both.html"))
    text = open(out).read()
    _check_self_contained(text)
    assert html.escape(bad) in text and bad not in text
    charts = re.findall(r"<svg.*?</svg>", text, re.S)
    assert [c.count("<polyline") for c in charts] == [2, 2, 2, 2, 2]


def test_empty_run_folder_and_cli(tmp_path, capsys):
    """A run killed before any step still gets a page (charts say there is no data)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty)]) == 0
    text = (empty / "report.html").read_text()
    _check_self_contained(text)
    assert text.count("no data in these runs") == 5 and "<polyline" not in text
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "missing")])


def test_nice_ticks():
    assert report.nice_ticks(0, 9200) == [0, 2000, 4000, 6000, 8000, 10000]
    assert report.nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    t = report.nice_ticks(0.013, 0.61)
    assert t[0] <= 0.013 and t[-1] >= 0.61 and len(t) <= 8


def test_two_runs_that_differ_only_in_kl_say_so(tiny_run, tmp_path):
    """Every output names the variant: table.md's header, eval.json, metrics' divergence column, the
    report's legend, its KL title and its list of differences."""
    cfg = json.load(open(tiny_run / "config.json"))
    args = ["--model", cfg["model"], "--data", cfg["data"], "--test-data", cfg["test_data"], "--runs-dir",
            str(tmp_path), "--run-name", "fwd", "--quiet", "--threads", "1", "--max-new-tokens", "8",
            "--batch-questions", "4", "--micro-batch", "2", "--lr", "1e-3", "--save-every", "1", "--gen-batch", "8",
            "--phase", "distill", "--steps", "3", "--teacher-sync", "2", "--eval-questions", "6", "--kl", "forward"]
    assert train.main(args) == 0
    fwd = tmp_path / "fwd"
    assert (tiny_run / "table.md").read_text().startswith("variant: --teacher-sync 2;")
    assert (fwd / "table.md").read_text().startswith("variant: --kl forward --teacher-sync 2;")
    assert all(e["variant"] == "--kl forward --teacher-sync 2" for e in json.load(open(fwd / "eval.json")).values())
    assert {json.loads(line)["divergence"] for line in open(fwd / "metrics.jsonl")} == {"forward"}
    assert {json.loads(line)["divergence"] for line in open(tiny_run / "metrics.jsonl")} == {"reverse"}
    text = open(report.write_report([str(tiny_run), str(fwd)], str(tmp_path / "both.html"))).read()
    assert "sdzero --kl forward --teacher-sync 2" in text and "sdzero --teacher-sync 2" in text
    assert "Divergence per token, student vs teacher (see legend)" in text
    differences = text[text.index("<h2>Differences</h2>"):text.index("</table>", text.index("<h2>Differences</h2>"))]
    assert "--kl" in differences and "forward" in differences and "--teacher-sync" not in differences
    assert "KL per token, teacher ‖ student (forward)" in open(fwd / "report.html").read()
