"""Tests for distill.py against a slow, obviously correct float64 reference.

The reference materialises the full [B, L, V] logits with ``model(...).logits`` and writes every KL
from its textbook definition Σ p·log(p/q), one token at a time. The implementation under test never
builds [B, L, V] and back-propagates in chunks; both must give the same values and gradients.
"""
import copy
import math

import pytest
import torch

import distill
from distill import KINDS, divergence, teacher_targets, token_weights
from machinery.lm_head import chunked_head_backward, final_hidden, hidden_rows

V = 50


def tiny_qwen3(seed):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                      max_position_embeddings=128, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(cfg).eval()
    # Random init gives nearly uniform rows (tiny KLs). Sharpen them so KLs are O(0.1-1), but not
    # to near one-hot: with p = 1 - 1e-7, fp32 gradients are pure rounding noise.
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def models():
    student, teacher = tiny_qwen3(0), tiny_qwen3(1)
    return {"student": student, "teacher": teacher,
            "student64": copy.deepcopy(student).double(),
            "teacher64": copy.deepcopy(teacher).double()}


def left_pad(seqs, pad=0):
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for b, s in enumerate(seqs):
        if s:
            ids[b, L - len(s):] = torch.tensor(s)
            mask[b, L - len(s):] = 1
    return ids, mask


def make_batch(resp_lens=(5, 3, 0, 4), seed=0):
    """Student X + Y and teacher X + Y + S + Y (different lengths => different columns)."""
    g = torch.Generator().manual_seed(seed)
    def rnd(n):
        return torch.randint(3, V, (n,), generator=g).tolist()
    s_seqs, t_seqs, meta = [], [], []
    for b, r in enumerate(resp_lens):
        x, y, s = rnd(3 + b), rnd(r), rnd(2 + (b % 2))
        s_seqs.append(x + y)
        t_seqs.append(x + y + s + y)
        meta.append((len(x), y, len(x) + len(y) + len(s)))
    s_ids, s_mask = left_pad(s_seqs)
    t_ids, t_mask = left_pad(t_seqs)
    rows, s_cols, t_cols, targets = [], [], [], []
    for b, (px, y, pt) in enumerate(meta):
        s_off, t_off = s_ids.shape[1] - len(s_seqs[b]), t_ids.shape[1] - len(t_seqs[b])
        for j, tok in enumerate(y):      # position p predicts the token at p + 1
            rows.append(b)
            s_cols.append(s_off + px + j - 1)
            t_cols.append(t_off + pt + j - 1)
            targets.append(tok)
    def ll(v):
        return torch.tensor(v, dtype=torch.long)
    batch = dict(s_ids=s_ids, s_mask=s_mask, t_ids=t_ids, t_mask=t_mask, rows=ll(rows),
                 s_cols=ll(s_cols), t_cols=ll(t_cols), targets=ll(targets), n_seqs=len(resp_lens))
    assert (batch["s_ids"][batch["rows"], batch["s_cols"] + 1] == batch["targets"]).all()
    assert (batch["t_ids"][batch["rows"], batch["t_cols"] + 1] == batch["targets"]).all()
    return batch


# ---------------------------------------------------------------- float64 textbook reference
def ref_logits(model, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.double()


def kl_textbook(p, q):
    """KL(p ‖ q) = Σ_v p_v log(p_v / q_v), from probabilities, one vector at a time."""
    return sum(p[v] * torch.log(p[v] / q[v]) for v in range(len(p)))


def ref_per_token(s_row, t_row, y, kind, mix, support, k):
    if support == "sampled":
        kl = torch.log_softmax(s_row, -1)[y] - torch.log_softmax(t_row, -1)[y]
        return kl.detach() * torch.log_softmax(s_row, -1)[y], kl.detach()   # (surrogate, value)
    if support == "topk":
        ids = t_row.topk(k).indices
        s_row, t_row = s_row[ids], t_row[ids]
    p, q = torch.softmax(s_row, -1), torch.softmax(t_row, -1)
    val = {"reverse": kl_textbook(p, q), "forward": kl_textbook(q, p),
           "mixed": mix * kl_textbook(q, p) + (1 - mix) * kl_textbook(p, q)}[kind]
    return val, val


def reference_loss(student64, teacher64, b, weights, kind="reverse", mix=0.5, support="topk", k=8):
    """distill.reference_loss on float64 full logits; returns (loss value, per-token values) and
    leaves float64 grads on student64. (test_reference_loss_is_the_textbook_kl checks the
    reference itself against the one-token-at-a-time textbook definition.)"""
    s_all = ref_logits(student64, b["s_ids"], b["s_mask"])                 # [B, L, V]
    with torch.no_grad():
        t_all = ref_logits(teacher64, b["t_ids"], b["t_mask"])
    s_rows, t_rows = s_all[b["rows"], b["s_cols"]], t_all[b["rows"], b["t_cols"]]
    loss, per_tok = distill.reference_loss(s_rows, t_rows, b["targets"], weights.double(), kind=kind,
                                           mix=mix, support=support, k=k)
    if len(b["rows"]):
        loss.backward()
    return float(loss.detach()), per_tok


def test_reference_loss_is_the_textbook_kl(models):
    """distill.reference_loss (vectorised) equals Σ p·log(p/q) written one token at a time, in value
    and in gradient, for every support and kind."""
    torch.manual_seed(3)
    s = torch.randn(5, V, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, V, dtype=torch.float64)
    y = torch.randint(0, V, (5,))
    w = torch.rand(5, dtype=torch.float64)
    for support, kind in CASES:
        loss, per_tok = distill.reference_loss(s, t, y, w, kind=kind, mix=0.3, support=support, k=8)
        (g_ref,) = torch.autograd.grad(loss, s)
        sur_sum, vals = 0.0, []
        for i in range(5):
            sur, val = ref_per_token(s[i], t[i], y[i], kind, 0.3, support, 8)
            sur_sum = sur_sum + w[i] * sur
            vals.append(val.detach())
        (g_txt,) = torch.autograd.grad(sur_sum, s)
        torch.testing.assert_close(per_tok, torch.stack(vals), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_ref, g_txt, rtol=1e-9, atol=1e-12)


def S(b, targets=None):
    """The student's scored batch (ids, mask, rows, cols, targets), as lm_head.scored_batch builds it."""
    return {"ids": b["s_ids"], "mask": b["s_mask"], "rows": b["rows"], "cols": b["s_cols"],
            "targets": b["targets"] if targets is None else targets}


def T(b):
    """The teacher's scored batch."""
    return {"ids": b["t_ids"], "mask": b["t_mask"], "rows": b["rows"], "cols": b["t_cols"], "targets": b["targets"]}


def distill_loss(student, sb, teacher, *, backward=True, **kw):
    """distill.distill_loss from a scored batch: the student's hidden rows, then eq. 4 (as distill_batch does)."""
    with torch.set_grad_enabled(backward):
        hidden = hidden_rows(student, sb)
    return distill.distill_loss(student, hidden, sb["targets"], teacher, backward=backward, **kw)


def run_impl(models, b, weights, kind="reverse", mix=0.5, support="topk", k=8, chunk=4,
             dtype64=False):
    student = models["student64" if dtype64 else "student"]
    teacher = models["teacher64" if dtype64 else "teacher"]
    tt = teacher_targets(teacher, T(b), k=k, chunk=chunk, keep_hidden=(support == "full"))
    return distill_loss(student, S(b), tt, weights=weights, kind=kind, mix=mix, support=support,
                        teacher_head=teacher if support == "full" else None, chunk=chunk)


def grads(model):
    return {n: p.grad.detach().double().clone() for n, p in model.named_parameters()
            if p.grad is not None}


def assert_grads_close(g, g_ref, rtol):
    assert g.keys() == g_ref.keys() and g
    for name in g_ref:
        err = (g[name] - g_ref[name]).norm() / g_ref[name].norm().clamp(min=1e-30)
        assert err < rtol, f"{name}: relative gradient error {err:.2e}"


# ---------------------------------------------------------------- pure divergences
def test_divergence_matches_textbook():
    torch.manual_seed(0)
    s, t = 2 * torch.randn(3, 4, 11).double(), torch.randn(3, 4, 11).double()
    sl, tl = s.log_softmax(-1), t.log_softmax(-1)
    for kind in KINDS:
        got = divergence(sl, tl, kind, mix=0.3)
        for i in range(3):
            for j in range(4):
                _, want = ref_per_token(s[i, j], t[i, j], 0, kind, 0.3, "full", None)
                assert math.isclose(got[i, j].item(), want.item(), rel_tol=1e-12)


def test_divergence_direction_hand_computed():
    # student p = (0.9, 0.1), teacher q = (0.5, 0.5): KL(p‖q) != KL(q‖p), so a swap would fail.
    p, q = torch.tensor([0.9, 0.1]).log(), torch.tensor([0.5, 0.5]).log()
    kl_pq = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)      # 0.368064
    kl_qp = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)      # 0.510826
    assert math.isclose(divergence(p, q, "reverse").item(), kl_pq, rel_tol=1e-6)
    assert math.isclose(divergence(p, q, "forward").item(), kl_qp, rel_tol=1e-6)
    assert math.isclose(divergence(p, q, "mixed", mix=0.25).item(), 0.25 * kl_qp + 0.75 * kl_pq,
                        rel_tol=1e-6)
    assert torch.equal(divergence(p, q, "mixed", mix=0.0), divergence(p, q, "reverse"))
    with pytest.raises(ValueError):
        divergence(p, q, "jsd")


def test_divergence_zero_for_equal_nonnegative_and_fp32():
    torch.manual_seed(0)
    a = torch.randn(64, 1000).log_softmax(-1)
    for kind in KINDS:
        assert divergence(a, a, kind).abs().max() == 0
        b = (torch.randn(64, 1000) * 3).log_softmax(-1)
        assert (divergence(a, b, kind) >= -1e-6).all()
    # bf16 inputs: the arithmetic is fp32 and equals the fp64 value of the same rounded numbers.
    s16 = (torch.randn(8, 5000) * 4).log_softmax(-1).bfloat16()
    t16 = torch.randn(8, 5000).log_softmax(-1).bfloat16()
    got = divergence(s16, t16, "reverse")
    assert got.dtype == torch.float32
    want = divergence(s16.double(), t16.double(), "reverse")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_token_weights():
    seq = torch.tensor([0, 0, 0, 2, 2])                    # sequence 1 has no response tokens
    assert torch.allclose(token_weights(seq, 3, "token_mean"), torch.full((5,), 0.2))
    assert torch.allclose(token_weights(seq, 3, "seq_sum"), torch.full((5,), 1 / 3))
    sm = token_weights(seq, 3, "seq_mean")
    assert torch.allclose(sm, torch.tensor([1 / 9] * 3 + [1 / 6] * 2))
    for mode in distill.WEIGHT_MODES:
        w = token_weights(torch.zeros(0, dtype=torch.long), 2, mode)
        assert w.shape == (0,) and not torch.isnan(w.sum())
    with pytest.raises(ValueError):
        token_weights(seq, 3, "mean")


# ---------------------------------------------------------------- chunked head backward
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_chunked_head_backward_equals_full_batch(chunk):
    torch.manual_seed(0)
    n, h, v = 13, 6, 17
    body, head = torch.nn.Linear(5, h).double(), torch.nn.Linear(h, v).double()   # with bias
    x = torch.randn(n, 5, dtype=torch.float64)
    t_logp = torch.randn(n, v, dtype=torch.float64).log_softmax(-1)
    w = torch.rand(n, dtype=torch.float64)

    def loss_fn(logits, sl):
        return (w[sl] * divergence(logits.log_softmax(-1), t_logp[sl], "mixed", 0.3)).sum()

    def run(c):
        body.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        if c is None:                                            # plain autograd, whole batch
            total = loss_fn(head(body(x)), slice(None))
            total.backward()
        else:
            total = chunked_head_backward(head, body(x), loss_fn, chunk=c)
        return total.detach(), [p.grad.clone() for p in (*body.parameters(), *head.parameters())]

    total, g = run(chunk)
    total_ref, g_ref = run(None)
    assert not total.requires_grad and math.isclose(total.item(), total_ref.item(), rel_tol=1e-12)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # gradients accumulate into existing .grad (micro-batches), as autograd's would
    chunked_head_backward(head, body(x), loss_fn, chunk=chunk)
    for a, b in zip((*body.parameters(), *head.parameters()), g_ref):
        torch.testing.assert_close(a.grad, 2 * b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        evaluated = chunked_head_backward(head, body(x), loss_fn, chunk, backward=False)
    assert math.isclose(evaluated.item(), total_ref.item(), rel_tol=1e-12)


# ---------------------------------------------------------------- model-level
def test_final_hidden_left_padding_equals_unpadded(models):
    m = models["student64"]
    ids = torch.randint(3, V, (7,))
    padded = torch.cat([torch.zeros(4, dtype=torch.long), ids])[None]
    mask = (torch.arange(11) >= 4).long()[None]
    with torch.no_grad():
        h_pad = final_hidden(m, padded, mask)[0, 4:]
        h_ref = final_hidden(m, ids[None], torch.ones(1, 7, dtype=torch.long))[0]
        logits = m(input_ids=ids[None]).logits[0]
    torch.testing.assert_close(h_pad, h_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m.get_output_embeddings()(h_ref), logits)   # the head is not applied


@pytest.mark.parametrize("k,chunk", [(8, 3), (V + 10, 100)])
def test_teacher_targets_match_full_logits(models, k, chunk):
    b, teacher = make_batch(), models["teacher"]
    tt = teacher_targets(teacher, T(b), k=k, chunk=chunk, keep_hidden=True)
    with torch.no_grad():
        full = ref_logits(teacher, b["t_ids"], b["t_mask"])[b["rows"], b["t_cols"]]
    k = min(k, V)
    assert tt["topk_logits"].shape == (len(b["rows"]), k)
    assert tt["topk_logits"].dtype == torch.float32
    top = full.topk(k, dim=-1)
    assert torch.equal(tt["topk_ids"], top.indices)
    torch.testing.assert_close(tt["topk_logits"].double(), top.values, rtol=1e-5, atol=1e-5)
    want = full.log_softmax(-1).gather(-1, b["targets"][:, None]).squeeze(-1)
    torch.testing.assert_close(tt["target_logp"].double(), want, rtol=1e-5, atol=1e-5)
    assert tt["hidden"].shape == (len(b["rows"]), 32)


CASES = [(s, kind) for s in ("topk", "full") for kind in KINDS] + [("sampled", "reverse")]


@pytest.mark.parametrize("support,kind", CASES)
def test_distill_loss_matches_reference(models, support, kind):
    b = make_batch()
    seq = b["rows"]
    for mode in ("token_mean", "seq_sum"):
        w = token_weights(seq, b["n_seqs"], mode)
        models["student64"].zero_grad(set_to_none=True)
        models["student"].zero_grad(set_to_none=True)
        ref_val, ref_tok = reference_loss(models["student64"], models["teacher64"], b, w, kind, 0.3,
                                          support)
        out = run_impl(models, b, w, kind, 0.3, support)
        assert out["loss"].dtype == torch.float32 and not out["loss"].requires_grad
        assert math.isclose(out["loss"].item(), ref_val, rel_tol=1e-5)
        torch.testing.assert_close(out["per_token_kl"].double(), ref_tok, rtol=1e-5, atol=1e-6)
        assert_grads_close(grads(models["student"]), grads(models["student64"]), rtol=1e-5)
    # seq_sum is Σ_t per sequence, mean over sequences (eq. 4 literally); token_mean the plain mean.
    per_seq = torch.zeros(b["n_seqs"], dtype=torch.float64).index_add_(0, seq, ref_tok)
    assert math.isclose(ref_val, per_seq.mean().item(), rel_tol=1e-12)
    assert out["per_token_kl"].shape == seq.shape


def test_float64_model_is_exact(models):
    b = make_batch()
    w = token_weights(b["rows"], b["n_seqs"])
    ref64 = copy.deepcopy(models["student64"])
    ref_val, _ = reference_loss(ref64, models["teacher64"], b, w, "mixed", 0.5, "full")
    models["student64"].zero_grad(set_to_none=True)
    out = run_impl(models, b, w, "mixed", 0.5, "full", dtype64=True)
    assert out["loss"].dtype == torch.float64
    assert math.isclose(out["loss"].item(), ref_val, rel_tol=1e-10)
    assert_grads_close(grads(models["student64"]), grads(ref64), rtol=1e-10)


def test_topk_with_k_equal_vocab_equals_full(models):
    b = make_batch()
    w = token_weights(b["rows"], b["n_seqs"])
    for kind in KINDS:
        models["student"].zero_grad(set_to_none=True)
        full = run_impl(models, b, w, kind, support="full", k=V)
        g_full = grads(models["student"])
        models["student"].zero_grad(set_to_none=True)
        topk = run_impl(models, b, w, kind, support="topk", k=V)
        assert math.isclose(topk["loss"].item(), full["loss"].item(), rel_tol=1e-5)
        assert_grads_close(grads(models["student"]), g_full, rtol=1e-5)


@pytest.mark.parametrize("support", ["topk", "full", "sampled"])
def test_empty_batch_gives_zero_and_no_nan(models, support):
    b = make_batch(resp_lens=(0, 0))
    assert len(b["rows"]) == 0
    models["student"].zero_grad(set_to_none=True)
    out = run_impl(models, b, token_weights(b["rows"], 2), support=support)
    assert out["loss"].item() == 0 and not torch.isnan(out["loss"])
    assert out["per_token_kl"].shape == (0,) and out["student_target_logp"].shape == (0,)
    assert all(p.grad is None for p in models["student"].parameters())


def test_bf16_model_reduces_in_fp32(models):
    student = copy.deepcopy(models["student"]).bfloat16()
    teacher = copy.deepcopy(models["teacher"]).bfloat16()
    b = make_batch()
    w = token_weights(b["rows"], b["n_seqs"])
    tt = teacher_targets(teacher, T(b), k=8, keep_hidden=True)
    assert tt["topk_logits"].dtype == torch.float32 and tt["target_logp"].dtype == torch.float32
    for support in ("topk", "full"):
        out = distill_loss(student, S(b), tt, weights=w, support=support, teacher_head=teacher,
                           backward=False)
        assert out["loss"].dtype == torch.float32 and out["per_token_kl"].dtype == torch.float32
        # fp64 reference from the very same bf16-rounded logits (same bf16 matmul shapes).
        with torch.no_grad():
            hs = final_hidden(student, b["s_ids"], b["s_mask"])[b["rows"], b["s_cols"]]
            s_logits = student.get_output_embeddings()(hs).double()
            t_logits = teacher.get_output_embeddings()(tt["hidden"]).double()
        ref = 0.0
        for i in range(len(b["rows"])):
            _, val = ref_per_token(s_logits[i], t_logits[i], b["targets"][i], "reverse", 0.5,
                                   support, 8)
            ref += w[i].item() * val.item()
        assert math.isclose(out["loss"].item(), ref, rel_tol=1e-5)


def test_sampled_estimator_is_unbiased_by_enumeration(models):
    """E_{y~p_s}[∇ sampled loss] = ∇ reverse KL, exactly, by summing over all V values of y."""
    b = make_batch()
    n, w = len(b["rows"]), token_weights(b["rows"], b["n_seqs"])
    student, teacher = models["student64"], models["teacher64"]
    tt = teacher_targets(teacher, T(b), k=V, keep_hidden=True)
    student.zero_grad(set_to_none=True)
    exact = distill_loss(student, S(b), tt, weights=w, support="full", teacher_head=teacher)
    g_exact = grads(student)
    with torch.no_grad():
        s_logp = ref_logits(student, b["s_ids"], b["s_mask"])[b["rows"], b["s_cols"]].log_softmax(-1)
        t_logp = ref_logits(teacher, b["t_ids"], b["t_mask"])[b["rows"], b["t_cols"]].log_softmax(-1)
    student.zero_grad(set_to_none=True)
    expected_value = 0.0
    for y in range(V):                       # weight each outcome y by its probability p_s(y)
        ys = torch.full((n,), y, dtype=torch.long)
        out = distill_loss(student, S(b, ys),
                           {"target_logp": t_logp[:, y]}, weights=w * s_logp[:, y].exp(),
                           support="sampled")
        expected_value += out["loss"].item()
    assert math.isclose(expected_value, exact["loss"].item(), rel_tol=1e-10)
    # 1e-6, not 1e-12: Qwen3's RMSNorm computes in fp32 even in a float64 model, so V separate
    # backward passes through the body do not sum bit-exactly to one.
    assert_grads_close(grads(student), g_exact, rtol=1e-6)


def test_sampled_rejects_non_reverse_and_full_needs_teacher_head(models):
    b = make_batch()
    w = token_weights(b["rows"], b["n_seqs"])
    for kind in ("forward", "mixed"):
        with pytest.raises(ValueError):
            run_impl(models, b, w, kind, support="sampled")
    tt = {"topk_logits": None, "topk_ids": None, "target_logp": None}
    with pytest.raises(ValueError):
        distill_loss(models["student"], S(b), tt, weights=w, support="full")


def test_backward_false_gives_same_loss_and_no_grads(models):
    b = make_batch()
    w = token_weights(b["rows"], b["n_seqs"])
    models["student"].zero_grad(set_to_none=True)
    with_bwd = run_impl(models, b, w, "mixed", support="topk")
    models["student"].zero_grad(set_to_none=True)
    tt = teacher_targets(models["teacher"], T(b), k=8)
    no_bwd = distill_loss(models["student"], S(b), tt, weights=w, kind="mixed", backward=False)
    assert math.isclose(no_bwd["loss"].item(), with_bwd["loss"].item(), rel_tol=1e-6)
    torch.testing.assert_close(no_bwd["student_target_logp"], with_bwd["student_target_logp"])
    assert all(p.grad is None for p in models["student"].parameters())
    # student_target_logp is the full-vocab log p_s(y_t)
    with torch.no_grad():
        logp = ref_logits(models["student"], b["s_ids"], b["s_mask"])[b["rows"], b["s_cols"]].log_softmax(-1)
    want = logp.gather(-1, b["targets"][:, None]).squeeze(-1)
    torch.testing.assert_close(no_bwd["student_target_logp"].double(), want, rtol=1e-5, atol=1e-5)


def test_sampled_estimator_at_sampling_temperature(models):
    """With y sampled at temperature T, the sampled support must score log p_s at T: then
    E_{y~p_s^T}[∇ loss] = ∇ KL(p_s^T ‖ p_t^T), checked by enumerating every y. (Scoring at T = 1
    while sampling at T was the GRPO / --support sampled defect.)"""
    temp = 0.7
    b = make_batch()
    n, w = len(b["rows"]), token_weights(b["rows"], b["n_seqs"])
    student, teacher = models["student64"], models["teacher64"]
    with torch.no_grad():
        t_logp = (ref_logits(teacher, b["t_ids"], b["t_mask"])[b["rows"], b["t_cols"]] / temp).log_softmax(-1)
    student.zero_grad(set_to_none=True)
    s_logp = (ref_logits(student, b["s_ids"], b["s_mask"])[b["rows"], b["s_cols"]] / temp).log_softmax(-1)
    exact = (w.double() * (s_logp.exp() * (s_logp - t_logp)).sum(-1)).sum()   # textbook KL at T
    exact.backward()
    g_exact = grads(student)
    p_sample = s_logp.detach().exp()
    student.zero_grad(set_to_none=True)
    expected_value = 0.0
    for y in range(V):
        ys = torch.full((n,), y, dtype=torch.long)
        out = distill_loss(student, S(b, ys),
                           {"target_logp": t_logp[:, y]}, weights=w * p_sample[:, y],
                           support="sampled", temperature=temp)
        expected_value += out["loss"].item()
    assert math.isclose(expected_value, exact.item(), rel_tol=1e-10)
    assert_grads_close(grads(student), g_exact, rtol=1e-6)
    # and the teacher side: teacher_targets(temperature=T) gives the tempered log p_t(y)
    tt = teacher_targets(teacher, T(b), k=4, temperature=temp)
    assert torch.allclose(tt["target_logp"], t_logp.gather(-1, b["targets"][:, None]).squeeze(-1))


@pytest.mark.parametrize("support", ["topk", "full"])
def test_kl_temperature_scales_both_sides_as_the_textbook_says(models, support):
    """--kl-temperature T: the chunked loss equals the textbook KL between softmax(s / T) and
    softmax(t / T) (on the teacher's top-k for "topk"), in value and in gradient; T = 1 is the default."""
    b, temp = make_batch(), 0.7
    w = token_weights(b["rows"], b["n_seqs"])
    student, teacher = models["student"], models["teacher"]
    student.zero_grad(set_to_none=True)
    tt = teacher_targets(teacher, T(b), k=8, keep_hidden=support == "full")
    out = distill_loss(student, S(b), tt, weights=w, kind="mixed", mix=0.3, support=support,
                       teacher_head=teacher if support == "full" else None, kl_temperature=temp)
    got = grads(student)
    s_all = ref_logits(models["student64"], b["s_ids"], b["s_mask"])[b["rows"], b["s_cols"]]
    with torch.no_grad():
        t_all = ref_logits(models["teacher64"], b["t_ids"], b["t_mask"])[b["rows"], b["t_cols"]]
    models["student64"].zero_grad(set_to_none=True)
    total, vals = 0.0, []
    for i in range(len(b["rows"])):
        s_row, t_row = s_all[i], t_all[i]
        if support == "topk":                       # the top-k ids do not depend on T
            ids = t_row.topk(8).indices
            s_row, t_row = s_row[ids], t_row[ids]
        p, q = torch.softmax(s_row / temp, -1), torch.softmax(t_row / temp, -1)
        val = 0.3 * kl_textbook(q, p) + 0.7 * kl_textbook(p, q)
        total = total + w[i].double() * val
        vals.append(val.detach())
    total.backward()
    assert math.isclose(out["loss"].item(), float(total), rel_tol=1e-5)
    torch.testing.assert_close(out["per_token_kl"].double(), torch.stack(vals), rtol=1e-5, atol=1e-6)
    assert_grads_close(got, grads(models["student64"]), rtol=1e-5)
