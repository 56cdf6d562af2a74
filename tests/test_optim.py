"""machinery/optim.py's AdamW: textbook AdamW on fp32 weights; unbiased stochastic rounding on bf16 weights."""
import pytest
import torch

from machinery.optim import AdamW, stochastic_round_bf16


def test_matches_torch_adamw_on_fp32():
    torch.manual_seed(0)
    a = torch.nn.Linear(7, 5)
    b = torch.nn.Linear(7, 5)
    b.load_state_dict(a.state_dict())
    oa = AdamW(a.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(5):
        x = torch.randn(3, 7)
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            (m(x) ** 2).sum().backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=1e-5)


def test_stochastic_rounding_is_unbiased_and_brackets():
    x = torch.full((200_000,), 1.0 + 2 ** -10, dtype=torch.float32)   # 1/8 of a bf16 step above 1
    r = stochastic_round_bf16(x).float()
    lo, hi = 1.0, 1.0 + 2 ** -7
    assert set(r.unique().tolist()) <= {lo, hi}
    assert abs(r.mean().item() - x[0].item()) < 2e-4


def test_bf16_weights_learn_tiny_updates_that_plain_rounding_loses():
    torch.manual_seed(0)
    w0 = torch.full((20_000,), 0.02)
    p = torch.nn.Parameter(w0.clone().to(torch.bfloat16))
    opt = AdamW([p], lr=5e-6)
    for _ in range(20):
        p.grad = torch.ones_like(p)
        opt.step()
    expected = 0.02 - 20 * 5e-6                     # Adam's step is ≈ lr per step for a constant grad
    assert abs(p.float().mean().item() - expected) < 2e-5
    q = torch.nn.Parameter(w0.clone().to(torch.bfloat16))
    plain = torch.optim.AdamW([q], lr=5e-6, weight_decay=0.0)
    for _ in range(20):
        q.grad = torch.ones_like(q)
        plain.step()
    assert q.float().mean().item() == torch.tensor(0.02).to(torch.bfloat16).float().item()


def test_nonfinite_gradient_skips_the_step_and_repeated_ones_stop_the_run():
    from machinery.optim import BadSteps, cosine_schedule, step_optimizer
    m = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in m.parameters()]
    opt = AdamW(m.parameters(), lr=0.1)
    sched = cosine_schedule(opt, 10, 0)
    (m(torch.tensor([[float("nan"), 1.0, 1.0]])).sum()).backward()
    norm, ok = step_optimizer(m, opt, sched, 1.0)
    assert not ok
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters())), "weights must not move"
    assert all(p.grad is None for p in m.parameters()), "the bad gradient must be dropped"
    bad = BadSteps(limit=2)
    bad.update(False, "step 1")
    bad.update(True, "step 2")                    # a good step resets the run of bad ones
    bad.update(False, "step 3")
    with pytest.raises(SystemExit) as e:
        bad.update(False, "step 4")
    assert "consecutive non-finite" in str(e.value) and bad.total == 3


def test_resume_keeps_fp32_moments_on_bf16_weights():
    """torch's Optimizer.load_state_dict casts state to the parameter dtype; a bf16 run resumed
    from a checkpoint must still hold fp32 m and v and continue exactly as if never stopped."""
    def run(steps, opt_state=None, weights=None):
        torch.manual_seed(1)
        p = torch.nn.Parameter(torch.randn(64).to(torch.bfloat16))
        if weights is not None:
            p.data.copy_(weights)
        opt = AdamW([p], lr=1e-3, weight_decay=0.01)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for s in range(steps):
            torch.manual_seed(100 + s + (0 if opt_state is None else 3))
            p.grad = torch.randn(64).to(torch.bfloat16) * 1e-3
            opt.step()
        return p, opt

    straight, _ = run(5)
    first, opt = run(3)
    state = {k: v for k, v in opt.state_dict().items()}
    saved = torch.load(_roundtrip(state), weights_only=False)
    resumed, opt2 = run(2, opt_state=saved, weights=first.detach().clone())
    st = opt2.state[opt2.param_groups[0]["params"][0]]
    assert st["m"].dtype == torch.float32 and st["v"].dtype == torch.float32
    assert st["step"] == 5
    assert torch.equal(resumed.detach(), straight.detach())


def _roundtrip(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


# --------------------------------------------------------------------------------------------
# Teacher sync on a plateau (train.plateau_reached) against a slow, obviously correct reference
# --------------------------------------------------------------------------------------------
def _plateau_reference(rewards, patience, max_syncs, delta=0.01):
    """Steps (1-based) at which to sync, recomputed from the whole history at every step: after the
    last sync, take the trailing means of `patience` rewards; the best one so far (improving only by
    more than delta); sync when the best is `patience` or more steps old."""
    syncs, since = [], 0            # rewards before index `since` belong to an earlier round
    for t in range(1, len(rewards) + 1):
        if len(syncs) == max_syncs:
            break
        means = {s: sum(rewards[s - patience:s]) / patience for s in range(since + patience, t + 1)}
        best, best_step = None, None
        for s in sorted(means):
            if best is None or means[s] > best + delta:
                best, best_step = means[s], s
        if best is not None and t - best_step >= patience:
            syncs.append(t)
            since = t
    return syncs


def _plateau_fast(rewards, patience, max_syncs):
    from train import plateau_reached
    state, syncs = {}, []
    for t, r in enumerate(rewards, 1):
        if len(syncs) < max_syncs and plateau_reached(state, r, t, patience):
            syncs.append(t)
    return syncs


def test_plateau_rule_matches_reference():
    import random
    rng = random.Random(0)
    for trial in range(300):
        n, patience, max_syncs = rng.randint(1, 120), rng.randint(1, 12), rng.randint(0, 3)
        # a rising-then-flat curve with noise, like a Phase-2 reward
        rise = rng.randint(0, n)
        rewards = [min(t, rise) / max(n, 1) + rng.gauss(0, rng.choice([0, 0.005, 0.05])) for t in range(n)]
        assert _plateau_fast(rewards, patience, max_syncs) == _plateau_reference(rewards, patience, max_syncs), trial


def test_plateau_rule_by_hand():
    # rises for 10 steps, then flat: the trailing mean of 3 lags, reaching 1.0 at step 12, so the
    # first sync is at 15; the second needs a fresh full window (16..18, best at 18) and 3 more steps.
    rewards = [0.1 * t for t in range(1, 11)] + [1.0] * 20
    assert _plateau_fast(rewards, 3, 1) == [15]
    assert _plateau_fast(rewards, 3, 2) == [15, 21]
    assert _plateau_fast([0.5] * 5, 3, 1) == [], "no sync before a full window has been stale for P steps"
