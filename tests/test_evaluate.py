"""evaluate.py: pass@k vs brute force, revision arithmetic on a scripted generator, self-localisation
statistics on hand-built logits, HTML escaping, and an end-to-end CLI run on a tiny model."""
import itertools
import json
import math

import pytest
import torch

import distill
import evaluate
import generate
import revise
from evaluate import kl_concentration, pass_at_k
from generate import Rollout
from machinery import report


@pytest.mark.parametrize("n,c,k", [(n, c, k) for n in range(1, 7) for c in range(n + 1)
                                   for k in range(1, n + 1)])
def test_pass_at_k_equals_brute_force(n, c, k):
    """Unbiased estimator == share of all k-subsets of the n samples that hold a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_keyword_rate_whole_words():
    assert evaluate.keyword_rate(["Wait, no.", "awaited answer", "Let me start over: 3"]) == pytest.approx(2 / 3)


def test_revision_arithmetic_on_scripted_generator(tiny, monkeypatch):
    """4 questions: 2 right initially (one revision keeps it, one breaks it), 2 wrong (one fixed)."""
    model, tok = tiny
    items = [{"question": f"What is {i}+0?", "answer": str(i)} for i in range(4)]
    init_texts = ["\\boxed{0}", "\\boxed{1}", "\\boxed{9}", "\\boxed{9}"]      # right right wrong wrong
    rev_texts = ["\\boxed{0}", "\\boxed{7}", "\\boxed{2}", "\\boxed{8}"]       # keep break fix miss
    seen = []

    def fake_rollout(m, t, prompts, *, n=1, **kw):
        texts = init_texts if not seen else rev_texts
        seen.append([t.decode(p) for p in prompts])
        return [Rollout(i, list(p), t(x, add_special_tokens=False)["input_ids"] + [t.eos_token_id], x, True)
                for i, (p, x) in enumerate(zip(prompts, texts))]

    monkeypatch.setattr(evaluate, "rollout", fake_rollout)          # the revisions
    monkeypatch.setattr(generate, "rollout", fake_rollout)          # the answers (sample_and_grade)
    ev = evaluate.evaluate_model(model, tok, items, k=1)
    rv = ev["revision"]
    assert ev["avg@1"] == 0.5
    assert rv["init_acc"] == 0.5 and rv["revised_acc"] == 0.5
    assert rv["correction_rate"] == 0.5 and rv["break_rate"] == 0.5
    assert rv["n_init_wrong"] == 2 and rv["n_init_right"] == 2
    # P_r follows each answer's own reward
    assert "rephrase" in seen[1][0] and "start over" in seen[1][2]


def test_single_disagreeing_token_carries_all_mass():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 11, generator=g, dtype=torch.float64)
    teacher = logits.clone()
    teacher[17] += torch.randn(11, generator=g, dtype=torch.float64) * 3     # one token disagrees
    kl = distill.divergence(torch.log_softmax(logits, -1), torch.log_softmax(teacher, -1)).tolist()
    c = kl_concentration(kl)
    assert c["top_share"] == pytest.approx(1.0, abs=1e-9)
    assert c["bucket_shares"][0] == pytest.approx(1.0, abs=1e-9)
    flat = kl_concentration([0.3] * 40)
    assert flat["top_share"] == pytest.approx(0.1)
    assert all(s == pytest.approx(0.05) for s in flat["bucket_shares"])
    assert math.isnan(kl_concentration([])["top_share"])


def test_token_scores_zero_when_teacher_ignores_context(tiny):
    """Same model as generator and reviser: KL is ≥ 0 per token and the token reward is finite."""
    model, tok = tiny
    items = [{"question": "What is 1+2?", "answer": "3"}, {"question": "What is 2+2?", "answer": "4"}]
    rolls, rws = evaluate.sample_and_grade(model, tok, items, gen={"max_new_tokens": 6, "temperature": 1.0})
    sc = evaluate.token_scores(model, model, tok, rolls, rws)
    for r, s in zip(rolls, sc):
        assert len(s["kl"]) == len(r.completion_ids)
        assert all(v >= -1e-6 for v in s["kl"]) and all(math.isfinite(v) for v in s["reward_tok"])
    summ = evaluate.selfloc_summary(sc, rws)
    assert summ["wrong"]["responses"] + summ["right"]["responses"] == len(rolls)


def test_html_escapes_model_text(tiny, tmp_path):
    model, tok = tiny
    evil = "<script>alert(1)</script>"
    items = [{"question": evil, "answer": "<b>3</b>"}]
    ids = tok(evil, add_special_tokens=False)["input_ids"]
    rolls = [Rollout(0, [1, 2], ids, evil, False)]
    scores = [{"kl": [0.1] * len(ids), "reward_tok": [0.0] * len(ids)}]
    path = tmp_path / "x.html"
    report.selfloc_html(str(path), tok, items, rolls, [0.0], scores, revise.Phrases(), title=evil)
    text = path.read_text()
    assert "<script" not in text.lower() and "&lt;script&gt;" in text
    assert "<b>3</b>" not in text
    assert "http" not in text                       # no external assets


def test_cli_end_to_end_two_models(tiny_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": str(i + 1)}) + "\n"
                            for i in range(5)))
    out, html_path = tmp_path / "e.json", tmp_path / "s.html"
    rc = evaluate.main(["--model", tiny_dir, "--model", tiny_dir, "--data", str(data), "--k", "2",
                        "--max-new-tokens", "6", "--selfloc", "--out", str(out), "--html", str(html_path),
                        "--quiet", "--threads", "1"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["questions"] == 5 and len(rep["models"]) == 2
    a, b = rep["models"].values()
    assert a["avg@2"] == b["avg@2"] and a["mean_tokens"] == b["mean_tokens"]   # same seeds, same model
    assert (tmp_path / "s-1.html").exists() and (tmp_path / "s-2.html").exists()
    ev = a
    for key in ("avg@2", "pass@2", "mean_tokens", "truncated_share", "keyword_rate", "revision", "selfloc"):
        assert key in ev
    assert rep["verifier_version"]
    printed = capsys.readouterr().out
    assert "avg@2" in printed and "correction" in printed


# --------------------------------------------------------------------------------------------
# Revision ability on a shared pool: every model revises the same fixed initial answers
# --------------------------------------------------------------------------------------------
def _scripted_rolls(tok, prompts, texts, finished=True):
    return [Rollout(i, list(p), tok(x, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], x, finished)
            for i, (p, x) in enumerate(zip(prompts, texts))]


def test_shared_pool_arithmetic_on_scripted_generator(tiny, monkeypatch):
    """Pool of 4: 2 right (one revision keeps it, one breaks it), 2 wrong (one fixed, one missed).
    P_r follows the *pool's* verdict, and only the revision is graded."""
    model, tok = tiny
    items = [{"question": f"What is {i}+0?", "answer": str(i)} for i in range(4)]
    xs = [evaluate.prompt_ids(tok, it["question"]) for it in items]
    init = _scripted_rolls(tok, xs, ["\\boxed{0}", "\\boxed{1}", "\\boxed{9}", "\\boxed{9}"])
    pool = evaluate.revision_pool(items, init, [1.0, 1.0, 0.0, 0.0])
    assert [e["reward"] for e in pool] == [1.0, 1.0, 0.0, 0.0] and pool[2]["y_init_text"] == "\\boxed{9}"
    seen = []

    def fake_rollout(m, t, prompts, *, n=1, **kw):
        seen.append([t.decode(p) for p in prompts])
        return _scripted_rolls(t, prompts, ["\\boxed{0}", "\\boxed{7}", "\\boxed{2}", "\\boxed{8}"])

    monkeypatch.setattr(evaluate, "rollout", fake_rollout)
    rv = evaluate.shared_pool_revision(model, tok, items, pool)
    assert rv["correction_rate"] == 0.5 and rv["break_rate"] == 0.5 and rv["revised_acc"] == 0.5
    assert rv["n_wrong"] == 2 and rv["n_right"] == 2 and rv["init_acc"] == 0.5
    assert rv["generations"] == 4 and rv["retokenized"] == 0
    assert "rephrase" in seen[0][1] and "start over" in seen[0][2]
    assert seen[0][2].count("\\boxed{9}") == 1              # the pool answer is in the reviser's prompt
    # A pool built on other questions is refused, not silently graded against the wrong answers.
    with pytest.raises(ValueError):
        evaluate.shared_pool_revision(model, tok, items[1:] + items[:1], pool)


def test_every_model_revises_the_same_pool(tiny_dir, tmp_path, monkeypatch, capsys):
    """--pool-from A with --model A --model B: both models receive identical reviser prompts (the
    same answers, the same P_r), and --pool FILE later replays exactly those prompts."""
    from conftest import build_tiny
    other = build_tiny(tmp_path / "other", seed=1)            # same tokenizer, different weights
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": str(i + 1)}) + "\n"
                            for i in range(5)))
    real, calls = evaluate.rollout, []

    def recording_rollout(model, tok, prompts, **kw):
        if kw.get("desc") == "pool revisions":
            # Not id(model): evaluate frees each model before loading the next, so CPython may hand
            # the second model the first one's address. The folder it was loaded from is unique.
            calls.append((model.config._name_or_path, [list(p) for p in prompts]))
        return real(model, tok, prompts, **kw)

    monkeypatch.setattr(evaluate, "rollout", recording_rollout)
    out = tmp_path / "e.json"
    common = ["--data", str(data), "--k", "1", "--max-new-tokens", "6", "--quiet", "--threads", "1"]
    assert evaluate.main(["--model", tiny_dir, "--model", other, "--pool-from", tiny_dir,
                          "--out", str(out)] + common) == 0
    assert len(calls) == 2 and calls[0][0] != calls[1][0]            # two models ...
    assert calls[0][1] == calls[1][1]                                 # ... the same prompts
    rep = json.loads(out.read_text())
    pool = evaluate.load_pool(rep["pool"]["file"])
    assert len(pool) == 5 and rep["pool"]["size"] == 5
    a, b = rep["models"].values()
    for ev in (a, b):
        assert ev["pool"]["n_wrong"] + ev["pool"]["n_right"] == 5
        assert ev["pool"]["n_wrong"] == sum(e["reward"] < 0.5 for e in pool)
    assert "pool correction" in capsys.readouterr().out
    # The same pool from its file, probed on B alone: the very same prompts again.
    assert evaluate.main(["--model", other, "--pool", rep["pool"]["file"],
                          "--out", str(tmp_path / "e2.json")] + common) == 0
    assert calls[2][1] == calls[0][1]


def test_table_pool_keeps_existing_eval_and_rng(tiny_dir, tmp_path):
    """train.py's table: the pool is the first model's own sampled answers, saved once; adding the
    probe changes neither the existing figures nor the RNG state the rest of a run continues from;
    a resumed table reloads the same pool."""
    import random
    from types import SimpleNamespace

    from conftest import build_tiny

    from evaluate import Table
    from generate import load_model
    from machinery.run import Run, seed_all
    items = [{"question": f"What is {i}+2?", "answer": str(i + 2)} for i in range(6)]
    gen = {"max_new_tokens": 6, "temperature": 1.0, "batch_size": 8}
    args = SimpleNamespace(seed=3, task="math", eval_k=1, p_correct=revise.P_CORRECT, p_wrong=revise.P_WRONG,
                           quiet=True, no_eval=False, resume=False, temperature=1.0, max_new_tokens=6)
    a, tok = load_model(tiny_dir, device="cpu", quiet=True)
    b = load_model(build_tiny(tmp_path / "b", seed=2), device="cpu", quiet=True)[0]

    seed_all(args.seed + 7)                                 # what the table computed before the probe
    plain, rolls, rws = evaluate.evaluate_model(a, tok, items, gen=gen, return_rolls=True)
    after_plain = (torch.get_rng_state(), random.getstate())

    run = Run(str(tmp_path / "run"), {}, resume=False)
    table = Table(args, run, tok, items, gen)
    table.add("base", a, 0)
    assert (torch.equal(torch.get_rng_state(), after_plain[0]) and random.getstate() == after_plain[1])
    ev = table.evals["base"]
    assert {k: v for k, v in ev.items() if k not in ("pool", "generations_used")} == evaluate.json_safe(plain)
    assert ev["generations_used"] == 0 and ev["pool"]["pool_size"] == 6
    pool = evaluate.load_pool(run.path("revision_pool.jsonl"))
    assert pool == evaluate.revision_pool(items, rolls, rws)        # the base's evaluated answers
    table.add("other", b, 12, "(in Phase 2)")
    assert table.evals["other"]["generations_used"] == 12
    assert "| pool correction | pool break |" in evaluate.results_table(table.rows, table.budgets)

    resumed = Table(SimpleNamespace(**{**vars(args), "resume": True}), Run(str(tmp_path / "run"), {}, True),
                    tok, items, gen)
    assert resumed.pool == pool and resumed.evals == table.evals     # eval.json reloaded, not redone


def test_accuracy_per_difficulty_band():
    """band_accuracy against a count by hand, and the table's one column per band."""
    items = [{"question": "q", "band": b} for b in ("common", "common", "rare", "rare", "rare")] + [{"question": "q"}]
    rolls = [Rollout(index=i, prompt_ids=[], completion_ids=[7], text="", finished=True)
             for i in (0, 0, 1, 2, 3, 4, 4, 5)]
    rewards = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    bands = evaluate.band_accuracy(items, rolls, rewards)
    assert bands == {"common": {"avg": 2 / 3, "questions": 2}, "rare": {"avg": 2 / 4, "questions": 3}}
    ev = {"k": 1, "avg@1": 0.5, "pass@1": 0.5, "mean_tokens": 1.0, "truncated_share": 0.0, "bands": bands}
    md = evaluate.results_table([("base", ev)], {"base": "0"})
    head, _, row = md.splitlines()
    assert head.startswith("| model | avg@1 | common | rare | pass@1 |")
    assert row.startswith("| base |  50.0 |  66.7 |  50.0 |")
    assert "common" not in evaluate.results_table([("base", {**ev, "bands": {}})], {})   # no bands, no columns
