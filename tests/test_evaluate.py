"""evaluate.py: pass@k vs brute force, revision arithmetic on a scripted generator, self-localisation
statistics on hand-built logits, HTML escaping, and an end-to-end CLI run on a tiny model."""
import itertools
import json
import math

import pytest
import torch

import distill
import evaluate
import revise
from generate import Rollout
from evaluate import kl_concentration, pass_at_k


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
    monkeypatch.setattr(revise, "rollout", fake_rollout)            # the answers (sample_and_grade)
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
    evaluate.selfloc_html(str(path), tok, items, rolls, [0.0], scores, title=evil)
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
