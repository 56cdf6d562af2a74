"""generate.py: loading, prompts, and rollouts on a tiny random model (no hub)."""
import pytest

import generate
from generate import ModelLoadError, cut_at_eos, load_model, prompt_ids, rollout


def test_prompt_ends_with_assistant_marker_and_holds_instruction(tiny):
    _, tok = tiny
    text = generate.prompt_text(tok, "What is 1+2?", "math")
    assert text.endswith("<|im_start|>assistant\n")
    assert "What is 1+2?" in text and "\\boxed{}" in text
    assert tok.decode(prompt_ids(tok, "What is 1+2?")) == text
    assert "```python" in generate.prompt_text(tok, "Print 2.", "code")
    with pytest.raises(ValueError):
        generate.build_messages("x", "poetry")


def test_batch_greedy_equals_one_by_one_with_left_padding(tiny):
    model, tok = tiny
    qs = ["What is 1+2?", "What is 12+3*4? Show every step please.", "Hi", "What is 7*8+9-1?"]
    prompts = [prompt_ids(tok, q) for q in qs]
    assert len({len(p) for p in prompts}) > 1, "prompts must differ in length to test padding"
    batch = rollout(model, tok, prompts, greedy=True, max_new_tokens=12, batch_size=4)
    for p, r in zip(prompts, batch):
        one = rollout(model, tok, [p], greedy=True, max_new_tokens=12, batch_size=1)[0]
        assert r.completion_ids == one.completion_ids
        assert r.prompt_ids == p


def test_truncation_flag_and_length(tiny):
    model, tok = tiny
    rs = rollout(model, tok, [prompt_ids(tok, "What is 1+2?")], n=3, temperature=1.0,
                 max_new_tokens=5, seed=0)
    for r in rs:
        assert len(r.completion_ids) <= 5
        eos = set(generate.eos_ids(model, tok))
        assert r.finished == any(t in eos for t in r.completion_ids)
        if not r.finished:
            assert len(r.completion_ids) == 5


def test_eos_kept_when_pad_equals_eos(tiny_pad_eos_dir):
    model, tok = load_model(tiny_pad_eos_dir, device="cpu", quiet=True)
    assert tok.pad_token_id == tok.eos_token_id
    eos = tok.eos_token_id
    comp, fin = cut_at_eos([5, 6, eos, eos, eos], {eos})
    assert comp == [5, 6, eos] and fin
    comp, fin = cut_at_eos([5, 6, 7], {eos})
    assert comp == [5, 6, 7] and not fin
    # End to end: a mixed batch where short prompts finish early; the EOS stays in the ids.
    rs = rollout(model, tok, [prompt_ids(tok, "Hi"), prompt_ids(tok, "What is 1+2?")], n=4,
                 temperature=1.0, max_new_tokens=30, seed=1)
    for r in rs:
        if r.finished:
            assert r.completion_ids[-1] == eos and eos not in r.completion_ids[:-1]


def test_determinism_under_seed_and_train_mode_restored(tiny):
    model, tok = tiny
    model.train()
    p = [prompt_ids(tok, "What is 1+2?")]
    a = rollout(model, tok, p, n=4, temperature=1.0, max_new_tokens=8, seed=123)
    assert model.training, "rollout must restore training mode"
    b = rollout(model, tok, p, n=4, temperature=1.0, max_new_tokens=8, seed=123)
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    model.eval()
    rollout(model, tok, p, max_new_tokens=2, seed=0)
    assert not model.training


def test_unknown_model_is_one_clear_line(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        load_model(str(tmp_path / "nope"), device="cpu")
    assert "not found" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError) as e:
        load_model(str(empty), device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "Qwen/Qwen3-4B-Instruct-2507" in msg


def test_alias_resolves_to_paper_model():
    assert generate.MODEL_ALIASES["Qwen/Qwen3-4B-Instruct"] == generate.PAPER_MODEL
