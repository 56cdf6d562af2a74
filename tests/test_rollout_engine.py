"""generate.rollout(engine="continuous"): transformers' continuous batching returns what the plain
path returns — the same greedy ids, EOS included, truncation flagged — and samples from the same
distribution (temperature and top-k honoured). Slow on CPU (seconds per decode step), so small."""
import torch

from generate import eos_ids, load_model, rollout


def _ends_sometimes(model, eos: int, bias: float):
    """A hook that raises the EOS logit, so a random tiny model ends some answers early."""
    def hook(_m, _i, out):
        out[..., eos] += bias
        return out
    return model.lm_head.register_forward_hook(hook)


def test_greedy_continuous_equals_plain_with_eos_and_truncation(tiny_dir):
    model, tok = load_model(tiny_dir, device="cpu", quiet=True)
    eos = eos_ids(model, tok)[0]
    prompts = [tok(q, add_special_tokens=False)["input_ids"] for q in ("What is 1+2?", "12+3*4", "def f(x):")]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompts[0]])).logits[0, -1]
    h = _ends_sometimes(model, eos, float(logits.max() - logits[eos]) * 0.9)   # EOS near the top
    try:
        plain = rollout(model, tok, prompts, greedy=True, max_new_tokens=10, batch_size=3)
        cont = rollout(model, tok, prompts, greedy=True, max_new_tokens=10, batch_size=3, engine="continuous")
    finally:
        h.remove()
    assert [r.completion_ids for r in cont] == [r.completion_ids for r in plain]
    assert [(r.index, r.finished, r.text, r.prompt_ids) for r in cont] == \
        [(r.index, r.finished, r.text, r.prompt_ids) for r in plain]
    assert any(r.finished and r.completion_ids[-1] == eos for r in plain), "an answer ends with its EOS"
    assert any(not r.finished and r.num_tokens == 10 for r in plain), "an answer is cut at max_new_tokens"


def test_sampled_continuous_follows_the_same_distribution(tiny_dir):
    """First-token frequencies of 120 samples at T = 0.7, top-k 3: both engines stay on the top 3 and
    each is close (total variation) to the exact renormalised softmax."""
    model, tok = load_model(tiny_dir, device="cpu", quiet=True)
    p = tok("What is 1+2?", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        z = model(input_ids=torch.tensor([p])).logits[0, -1].float() / 0.7
    top = z.topk(3)
    exact = dict(zip(top.indices.tolist(), torch.softmax(top.values, -1).tolist()))
    n = 120
    for engine in ("plain", "continuous"):
        rolls = rollout(model, tok, [p], n=n, temperature=0.7, top_p=1.0, top_k=3, max_new_tokens=1,
                        batch_size=n, seed=0, engine=engine)
        first = [r.completion_ids[0] for r in rolls]
        assert set(first) <= set(exact), (engine, set(first) - set(exact))
        tv = 0.5 * sum(abs(first.count(t) / n - q) for t, q in exact.items())
        assert tv < 0.15, (engine, tv, exact)
