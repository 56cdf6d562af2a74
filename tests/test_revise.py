"""revise.py and distill.py's layouts: exact ids, SRT masks (eq. 1–2), Phase-2 alignment (eq. 4),
Phase-1 collection."""
import json

import pytest
import torch

import generate
import revise
import reward
from distill import fit_teacher_budget, phase2_batch, teacher_contexts, teacher_sequence
from machinery.lm_head import score_positions
from revise import Phrases, reviser_prompt, srt_example, strip_eos, trim_repeated_tail

EOS = 2
X = [10, 11, 12]
S = [30, 31]


def test_control_phrases_follow_reward():
    ph = Phrases()
    assert ph.pick(1.0) == "Let me rephrase the above solution."
    assert ph.pick(0.0) == "Wait, this response is not correct, let me start over."
    assert Phrases(wrong=reward.P_WRONG_OFFICIAL).pick(0) == "Wait, this response is wrong. Let me correct it."


def test_reviser_prompt_drops_only_trailing_eos():
    assert strip_eos([5, 6, EOS], {EOS}) == [5, 6]
    assert strip_eos([5, 6], {EOS}) == [5, 6]              # truncated answer: nothing to drop
    assert reviser_prompt(X, [5, 6, EOS], S, {EOS}) == [10, 11, 12, 5, 6, 30, 31]


def test_srt_example_layout_and_masks():
    ex = srt_example(X, [5, 6, EOS], S, [7, 8, EOS], {EOS})
    assert ex["input_ids"] == [10, 11, 12, 5, 6, 30, 31, 7, 8, EOS]
    #                          X----------  Y_init' S(P_r)  Y_rev (incl. EOS)
    assert ex["rev_mask"] == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]   # eq. 1: Y_rev only
    assert ex["gen_mask"] == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]   # eq. 2: everything after X


def test_teacher_sequence_layout():
    ids, start = teacher_sequence(X, [5, 6, EOS], S, {EOS})
    assert ids == [10, 11, 12, 5, 6, 30, 31, 5, 6, EOS] and start == 7


def test_score_positions_predict_targets():
    rows, cols = score_positions([3, 1], [2, 3])
    assert rows.tolist() == [0, 0, 1, 1, 1] and cols.tolist() == [2, 3, 0, 1, 2]


@pytest.mark.parametrize("seed", range(5))
def test_alignment_property_on_padded_batch(seed):
    """For every row of a padded batch: the ids right after the teacher's scored positions are Y
    (the second copy), the student's are Y too, and both enumerate the same targets in order."""
    g = torch.Generator().manual_seed(seed)
    B = 5
    xs = [torch.randint(3, 50, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
          for _ in range(B)]
    ys = []
    for _ in range(B):
        y = torch.randint(3, 50, (int(torch.randint(0, 7, (1,), generator=g)),), generator=g).tolist()
        if torch.rand(1, generator=g) < 0.6:
            y = y + [EOS]                                     # finished vs truncated answers
        ys.append(y)
    ss = [[30, 31] if torch.rand(1, generator=g) < 0.5 else [40, 41, 42] for _ in range(B)]
    b = phase2_batch(xs, teacher_contexts(xs, ys, ss, {EOS}), ys, pad_id=0)
    s, t = b["student"], b["teacher"]
    flat_y = [tok for y in ys for tok in y]
    assert s["targets"].tolist() == flat_y and t["targets"].tolist() == flat_y
    assert t["ids"][t["rows"], t["cols"] + 1].tolist() == flat_y
    assert s["ids"][s["rows"], s["cols"] + 1].tolist() == flat_y
    assert torch.equal(t["rows"], s["rows"])
    # Padding never appears at a scored position or as a target.
    assert bool(t["mask"][t["rows"], t["cols"] + 1].all())
    assert bool(s["mask"][s["rows"], s["cols"] + 1].all())
    # The teacher's context before the second copy is X + Y' + S: it saw the answer and P_r.
    for i, (x, y, s) in enumerate(zip(xs, ys, ss)):
        seq = t["ids"][i, : len(x) + len(strip_eos(y, {EOS})) + len(s)].tolist()
        assert seq == x + strip_eos(y, {EOS}) + s


def test_fit_teacher_budget_truncates_symmetrically():
    y = list(range(100))
    out = fit_teacher_budget(10, y, 4, 10 + 4 + 2 * 40)
    assert out == y[:40]
    assert fit_teacher_budget(10, y, 4, 1000) == y


def test_trim_repeated_tail():
    base = "The answer is \\boxed{4}."
    assert trim_repeated_tail(base + " and again and again" * 5).count("and again") == 1
    assert trim_repeated_tail(base) == base


def test_collection_keeps_only_verified_revisions_and_never_shows_gold(tiny, monkeypatch):
    model, tok = tiny
    seen_prompts = []
    calls = {"n": 0}

    def fake_rollout(model_, tok_, prompts, *, n=1, **kw):
        from generate import Rollout
        calls["n"] += 1
        out = []
        for i, p in enumerate(prompts):
            seen_prompts.append(tok.decode(p))
            for j in range(n):
                if calls["n"] == 1:                       # y_init: q0 right, q1 wrong
                    text = "\\boxed{3}" if i == 0 else "\\boxed{99}"
                else:                                     # revisions: 1 of 3 right per prompt
                    text = ["\\boxed{99}", "\\boxed{3}" if i == 0 else "\\boxed{12}", "\\boxed{98}"][j]
                ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                out.append(Rollout(i, list(p), ids, text, True))
        return out

    monkeypatch.setattr(revise, "rollout", fake_rollout)       # the revisions
    monkeypatch.setattr(generate, "rollout", fake_rollout)     # y_init (generate.sample_and_grade)
    items = [{"id": "a", "question": "What is 1+2?", "answer": "3"},
             {"id": "b", "question": "What is 3*4?", "answer": "12"}]
    rows, stats = revise.collect_revisions(model, tok, items, n_rev=3)
    assert stats["y_init_correct"] == 1 and stats["y_init_wrong"] == 1
    assert stats["revisions_sampled"] == 6 and stats["kept"] == 2
    assert stats["kept_from_wrong_init"] == 1 and stats["kept_from_correct_init"] == 1
    assert stats["generations"] == 2 + 6
    by_id = {r["id"]: r for r in rows}
    assert by_id["a"]["phrase"] == revise.P_CORRECT and by_id["b"]["phrase"] == revise.P_WRONG
    json.dumps(rows)                                      # rows are JSONL-ready
    # The reviser prompts hold the question, y_init and P_r — never the gold answer ("12" for b,
    # whose y_init was wrong, so "12" can only appear if the gold leaked in).
    rev_prompts = seen_prompts[2:]
    b_prompts = [p for p in rev_prompts if "3*4" in p]
    assert b_prompts and all(revise.P_WRONG in p and "\\boxed{99}" in p for p in b_prompts)
    assert not any("12" in p for p in b_prompts)


def test_reencoded_revision_ends_with_the_templates_end_of_turn(tiny_dir):
    """Qwen3's generation config lists two EOS ids and the sorted first one is <|endoftext|>; a
    cleaned, re-encoded revision must end with <|im_end|>, the token that closes a turn."""
    from generate import Rollout, end_of_turn_id, eos_ids, load_model
    model, tok = load_model(tiny_dir, device="cpu", quiet=True)
    im_end, endoftext = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    model.generation_config.eos_token_id = [im_end, endoftext]
    assert eos_ids(model, tok)[0] == endoftext            # the trap: sorted, <|endoftext|> first
    assert end_of_turn_id(tok) == im_end
    text = "Good catch! 3*4=12 \\boxed{12}"                 # sycophantic opening: gets cleaned
    ids = tok(text, add_special_tokens=False)["input_ids"] + [im_end]
    cleaned = revise.clean_revision(Rollout(0, [1], ids, text, True), tok)
    assert cleaned[-1] == im_end and tok.decode(cleaned[:-1]).startswith("3*4")


def _scripted_collection(tok, monkeypatch, finished_rev=True, texts=None):
    from generate import Rollout
    calls = {"n": 0}

    def fake_rollout(model_, tok_, prompts, *, n=1, **kw):
        calls["n"] += 1
        out = []
        for i, p in enumerate(prompts):
            for j in range(n):
                init = calls["n"] % 2 == 1                # calls alternate: y_init, revisions
                text = "\\boxed{99}" if init else (texts or ["\\boxed{3}"] * n)[j]
                ids = tok(text, add_special_tokens=False)["input_ids"]
                fin = init or finished_rev
                out.append(Rollout(i, list(p), ids + ([tok.eos_token_id] if fin else []), text, fin))
        return out
    monkeypatch.setattr(revise, "rollout", fake_rollout)       # the revisions
    monkeypatch.setattr(generate, "rollout", fake_rollout)     # y_init (generate.sample_and_grade)


def test_truncated_revisions_are_not_kept_even_when_correct(tiny, monkeypatch):
    model, tok = tiny
    _scripted_collection(tok, monkeypatch, finished_rev=False)
    rows, stats = revise.collect_revisions(model, tok, [{"question": "1+2?", "answer": "3"}], n_rev=2)
    assert rows == [] and stats["revisions_correct"] == 2 and stats["dropped_truncated"] == 2


def test_max_traces_caps_kept_revisions_deterministically(tiny, monkeypatch):
    model, tok = tiny
    items = [{"id": i, "question": f"{i}+2?", "answer": "3"} for i in range(6)]
    _scripted_collection(tok, monkeypatch, texts=["\\boxed{3}", "\\boxed{3.0}"])
    full, st_full = revise.collect_revisions(model, tok, items, n_rev=2)
    a, st_a = revise.cap_traces(*revise.collect_revisions(model, tok, items, n_rev=2), max_traces=5, seed=1)
    b, _ = revise.cap_traces(*revise.collect_revisions(model, tok, items, n_rev=2), max_traces=5, seed=1)
    assert st_full["kept"] == 12 and st_a["verified_unique"] == 12 and st_a["kept"] == 5
    assert a == b and all(r in full for r in a)
    assert st_a["kept_from_wrong_init"] + st_a["kept_from_correct_init"] == 5


def test_code_grading_uses_the_runs_own_phrases(monkeypatch):
    """A custom --p-wrong must also mark where a code revision starts: only the code after it counts."""
    seen = {}

    def fake_batch(texts, tests, control_phrases=None, **kw):
        seen["phrases"] = control_phrases
        return [0.0] * len(texts)
    monkeypatch.setattr(reward, "code_reward_batch", fake_batch)
    ph = Phrases("Say it again.", "No, redo.")
    reward.grade("code", ["x"], [{"tests": {"stdio": [{"input": "", "output": ""}]}}], ph)
    assert seen["phrases"] == ("Say it again.", "No, redo.")


@pytest.mark.parametrize("norm", ["seq_sum", "token_mean"])
@pytest.mark.parametrize("mode", ["joint", "rev", "gen"])
def test_srt_loss_and_gradient_equal_the_slow_reference(tiny, mode, norm):
    """srt_backward (one forward, two weightings, micro-batches, chunked head) against eq. 1–3 written
    the slow way: full logits of each example alone, NLL of every target, and the two terms summed
    per sequence (seq_sum, eq. 3 as written) or averaged per token over the batch (token_mean)."""
    import torch

    from revise import srt_backward
    model, tok = tiny
    model.train()
    g = torch.Generator().manual_seed(0)
    V = model.config.vocab_size

    def ids(n):
        return torch.randint(5, V, (n,), generator=g).tolist()
    examples = [srt_example(ids(3 + b), ids(2 + b), ids(2), ids(4 - b % 2), {0}) for b in range(3)]
    model.zero_grad(set_to_none=True)
    loss = srt_backward(model, examples, mode, tok.pad_token_id, micro=2, norm=norm)
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad(set_to_none=True)
    rev_terms, gen_terms, n_rev, n_gen = [], [], 0, 0
    for e in examples:
        logp = torch.log_softmax(model(torch.tensor([e["input_ids"]])).logits[0].double(), -1)
        nll = [-logp[i - 1, t] for i, t in enumerate(e["input_ids"]) if i > 0]
        rev_terms.append(sum(v for v, m in zip(nll, e["rev_mask"][1:]) if m))
        gen_terms.append(sum(v for v, m in zip(nll, e["gen_mask"][1:]) if m))
        n_rev, n_gen = n_rev + sum(e["rev_mask"]), n_gen + sum(e["gen_mask"])
    d_rev, d_gen = (len(examples), len(examples)) if norm == "seq_sum" else (n_rev, n_gen)
    ref = (sum(rev_terms) / d_rev if mode != "gen" else 0) + (sum(gen_terms) / d_gen if mode != "rev" else 0)
    ref.backward()
    assert abs(loss - ref.item()) < 1e-4 * max(1.0, abs(ref.item()))
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-3, atol=1e-5, msg=n)
