"""distill.py — the Phase 2 loss of SD-Zero: on-policy self-distillation from revision feedback.

SD-Zero (arXiv 2604.12002, §2.2, eq. 4) trains the generator (student, π_θ) to put, at every token
of its own sampled response y, the next-token distribution that the frozen reviser (teacher, π_SRT)
would put there after reading y and the control phrase P_r:

    L_SD(θ) = E_x E_{y~π_θ(·|x)} Σ_t KL( π_θ(·|x, y<t)  ‖  stopgrad π_SRT(·|x, y, P_r, y<t) )

The student comes first inside the KL: this is the *reverse* KL Σ_v p_s(v)(log p_s(v) − log p_t(v)),
mode-seeking. The official code defaults to a 50/50 mix of forward and reverse KL, computed on the
teacher's top-64 tokens with both sides renormalised on that support; both are options here.

What lives here (pure functions: no I/O, no model loading; torch only, plus two marked lines for
FSDP2 models under torchrun, see distributed.py):

* ``divergence``            — reverse / forward / mixed KL between two log-prob vectors, in fp32.
* ``token_weights``         — how per-token losses add up to the batch loss (token mean, eq. 4 sum).
* ``final_hidden``          — the transformer body without the LM head, exact under left padding.
* ``teacher_targets``       — the teacher's top-k logits + ids (and log p_t(y)) at N positions.
* ``chunked_head_backward`` — the memory trick: LM head + loss + backward, a chunk of rows at once.
* ``distill_loss_from_hidden`` — eq. 4 at the N scored positions, on a "topk", "full" or "sampled"
                              support (``distill_loss``: the same from input ids).
* ``distill_pair``          — one micro-batch: teacher targets, student rows, eq. 4, backward.
* ``reference_loss``        — eq. 4 the plain way on full [N, V] logits; tests and benchmarks
                              check the chunked path against it.

One Phase-2 step, from the loop to the loss: train.phase2 -> train.distill_step (rollouts, reward,
layouts) -> revise.distill_on_policy (micro-batches) -> distill_pair -> distill_loss_from_hidden.

Positions: ``rows, cols`` (LongTensor[N]) name the (batch row, position) whose next-token
distribution predicts ``targets`` (the sampled ids of y). revise.py builds them for the student
sequence X + Y and for the teacher sequence X + Y' + S(P_r) + Y; entry i of both is the same y_t.

Why so much care with memory: Qwen3's vocabulary is V = 151,936, so the fp32 logits
of one 4,096-token batch are 2.5 GB *per tensor*, and a log-softmax, its gradient and the teacher's
copy multiply that. We never build [B, L, V]: the LM head is applied only to the N scored rows, a
chunk of rows at a time, and each chunk's backward runs before the next chunk's logits exist.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

import distributed

KINDS = ("reverse", "forward", "mixed")
SUPPORTS = ("topk", "full", "sampled")
WEIGHT_MODES = ("token_mean", "seq_sum", "seq_mean")


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32; fp32 and fp64 stay as they are.

    Why: softmax normalisers and KL sums over 152K entries lose the signal in bf16 (identical
    logits gave a +0.025 "KL" floor in EasyDeL PR #267). fp64 is kept so that
    tests can compare against a float64 reference exactly.
    """
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# --------------------------------------------------------------------------------------------
# Divergences and weights
# --------------------------------------------------------------------------------------------
def divergence(s_logp: torch.Tensor, t_logp: torch.Tensor, kind: str = "reverse",
               mix: float = 0.5) -> torch.Tensor:
    """Per-position divergence between student and teacher log-probs on the same support.

    s_logp, t_logp: [..., K] normalised log-probs (log_softmax of finite logits) -> [...].
      reverse = KL(student ‖ teacher) = Σ p_s (log p_s − log p_t)   (eq. 4, the paper's loss)
      forward = KL(teacher ‖ student) = Σ p_t (log p_t − log p_s)
      mixed   = mix·forward + (1 − mix)·reverse                    (official code: mix = 0.5)
    Gradient flows into whichever argument requires it; the caller detaches the teacher.
    Log-space inputs (never probabilities as targets) keep tiny probabilities from turning into
    0·log 0 = NaN gradients, a failure reported by several distillation codebases; p = exp(log p) underflowing to 0 is harmless.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown divergence kind {kind!r}; expected one of {KINDS}")
    s, t = _upcast(s_logp), _upcast(t_logp)
    diff = s - t                                         # log p_s − log p_t, shared by both terms
    if kind == "reverse":
        return (s.exp() * diff).sum(-1)
    if kind == "forward":
        return -(t.exp() * diff).sum(-1)
    return mix * -(t.exp() * diff).sum(-1) + (1.0 - mix) * (s.exp() * diff).sum(-1)


def token_weights(seq_index: torch.Tensor, n_seqs: int, mode: str = "token_mean") -> torch.Tensor:
    """Weight w_i of scored token i so that Σ_i w_i · loss_i is the batch loss.

    seq_index: LongTensor[N], the sequence each scored token belongs to (0..n_seqs-1).
      token_mean — 1/N: mean over every response token of the batch (official code; long responses
                   weigh more). N is the GLOBAL count when a batch is split into micro-batches.
      seq_sum    — 1/n_seqs: Σ over t inside a sequence, mean over sequences (eq. 4 literally).
      seq_mean   — 1/(n_seqs·|y_seq|): mean over t, then over sequences (original GRPO style).
    Empty batches (N == 0) give an empty tensor, never a 0/0.
    """
    n = seq_index.numel()
    if mode == "token_mean":
        return torch.full((n,), 1.0 / max(n, 1), device=seq_index.device)
    if mode == "seq_sum":
        return torch.full((n,), 1.0 / max(n_seqs, 1), device=seq_index.device)
    if mode == "seq_mean":
        lengths = torch.bincount(seq_index, minlength=n_seqs).float()
        return 1.0 / (max(n_seqs, 1) * lengths[seq_index])
    raise ValueError(f"unknown weight mode {mode!r}; expected one of {WEIGHT_MODES}")


# --------------------------------------------------------------------------------------------
# Model plumbing: the body without its head, and the head alone
# --------------------------------------------------------------------------------------------
def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L, H] hidden states after the final norm — the LM head is NOT applied.

    Why skip the head: HF's ``model(...)`` returns [B, L, V] logits for every position, prompt
    included. We only need the N response positions, so the head runs later on gathered rows.
    Why explicit position ids: training batches are right-padded (generate.pad), where they change
    nothing, but a left-padded batch (the tests use one) must not count the pads before a real
    token (transformers#18388); cumsum of the mask − 1 gives 0 at the first real token either way.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if distributed.active() and distributed.sharded(model):   # distributed: via the FSDP root's hooks
        return distributed.body_forward(model, input_ids=input_ids, attention_mask=attention_mask,
                                        position_ids=position_ids, use_cache=False)
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
               use_cache=False)
    return out.last_hidden_state


def gather_rows(hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[B, L, H] -> [N, H]: the hidden states at the scored (row, position) pairs."""
    return hidden[rows, cols]


def _lm_head(model) -> torch.nn.Module:
    """The output projection of an HF causal LM, or the module itself if it is a bare head.

    With tied embeddings this is the embedding matrix, so its gradient simply adds to the input
    embedding's gradient. (Models with logit soft-capping or scaling would need that applied here;
    Qwen3 and Llama have none.)
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if head is not None else model


def _target_logp(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary log p(target) per row, without materialising a second [n, V] log-softmax."""
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


# --------------------------------------------------------------------------------------------
# Teacher side (no gradient)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def topk_from_hidden(head, hidden_rows: torch.Tensor, targets: torch.Tensor, k: int = 64,
                     chunk: int = 1024, temperature: float = 1.0) -> dict:
    """Apply ``head`` to [N, H] rows chunk by chunk; keep the top-k logits + ids and log p(target).

    Only k numbers per position survive the chunk, so a frozen teacher's scoring costs O(N·k)
    memory instead of O(N·V) (at Qwen3's V and k = 64: 6 MB instead of 5 GB for 4×2,048 tokens).
    """
    head = _lm_head(head)
    n, k = hidden_rows.shape[0], min(k, head.weight.shape[0])
    dtype = torch.promote_types(hidden_rows.dtype, torch.float32)
    out = {"topk_logits": hidden_rows.new_empty(n, k, dtype=dtype),
           "topk_ids": torch.empty(n, k, dtype=torch.long, device=hidden_rows.device),
           "target_logp": hidden_rows.new_empty(n, dtype=dtype)}
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        logits = _upcast(head(hidden_rows[sl]))
        top = logits.topk(k, dim=-1)
        out["topk_logits"][sl], out["topk_ids"][sl] = top.values, top.indices
        out["target_logp"][sl] = _target_logp(logits / temperature, targets[sl])
    return out


@torch.no_grad()
def teacher_targets(teacher, input_ids, attention_mask, rows, cols, targets, k: int = 64,
                    chunk: int = 1024, keep_hidden: bool = False, temperature: float = 1.0) -> dict:
    """The frozen teacher's view of the N scored tokens (stop-gradient side of eq. 4).

    Returns {"topk_logits": [N, k] fp32, "topk_ids": [N, k] long, "target_logp": [N] fp32 (full-
    vocab log p_t(y_t): the sampled-token estimator and the paper's token-level KL analysis need
    it), and "hidden": [N, H] if keep_hidden}. The raw logits are stored, not log-probs: the top-k
    loss renormalises within the k ids, which is shift-invariant. keep_hidden is for the full-vocab
    support, which recomputes teacher logits per chunk from these rows instead of storing N×V.
    """
    hidden = gather_rows(final_hidden(teacher, input_ids, attention_mask), rows, cols)
    out = topk_from_hidden(teacher, hidden, targets, k=k, chunk=chunk, temperature=temperature)
    if keep_hidden:
        out["hidden"] = hidden
    return out


# --------------------------------------------------------------------------------------------
# Student side: the chunked head + backward
# --------------------------------------------------------------------------------------------
def chunked_head_backward(model, hidden_rows: torch.Tensor,
                          loss_fn: Callable[[torch.Tensor, slice], torch.Tensor],
                          chunk: int = 1024, backward: bool = True) -> torch.Tensor:
    """Σ_chunks loss_fn(lm_head(hidden_rows[c]) in fp32, c), back-propagated one chunk at a time.

    hidden_rows: [N, H] final hidden states at the scored positions, still attached to the body's
    autograd graph. loss_fn(logits [n, V] fp32, slice) -> scalar, already weighted with the GLOBAL
    token weights, so the per-chunk gradients add up to the full-batch gradient exactly.

    How: cut the graph at the hidden rows. For each chunk, the head's logits z = h W^T (+ b) become
    a leaf; ``loss.backward()`` runs autograd through the loss only and frees that chunk's [n, V]
    tensors, leaving g = dL/dz. The head's backward is then done by hand: dL/dh = g W goes into an
    [N, H] buffer, and dL/dW = g^T h is added to W.grad in place (addmm_). Autograd would instead
    build a fresh [V, H] weight gradient per chunk before adding it (1.6 GB in fp32 at Qwen3-4B
    size). With tied embeddings W is the embedding matrix: the body's backward adds its part later.
    Finally one ``hidden_rows.backward(dL/dh)`` pushes the gradient through the transformer body.
    Peak vocab memory is one chunk's, not N's; the body runs backward once.
    Under FSDP2 (distributed.py) W is the full weight the root's forward gathered, and the W.grad
    written here is reduce-scattered with the rest when the body's backward ends (body_forward).

    backward=False just sums the chunk losses under no_grad (evaluation). Returns the total loss as
    a detached tensor. N == 0 returns 0 and leaves every .grad untouched (skip the optimiser step).
    """
    head = _lm_head(model)
    W, b = head.weight, getattr(head, "bias", None)       # an nn.Linear, as in every HF causal LM
    n = hidden_rows.shape[0]
    dtype = torch.promote_types(hidden_rows.dtype, torch.float32)
    total = torch.zeros((), dtype=dtype, device=hidden_rows.device)
    if not backward:
        with torch.no_grad():
            for start in range(0, n, chunk):
                sl = slice(start, start + chunk)
                total += loss_fn(_upcast(F.linear(hidden_rows[sl], W, b)), sl)
        return total

    grad_h = torch.zeros_like(hidden_rows)                # dL/dh for the body, [N, H]
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        h = hidden_rows[sl].detach().to(W.dtype)           # graph cut: the body is not re-run
        with torch.no_grad():
            logits = _upcast(F.linear(h, W, b))
        logits.requires_grad_(True)
        loss = loss_fn(logits, sl)
        loss.backward()                                    # autograd through the loss only
        total += loss.detach()
        with torch.no_grad():                              # W requires grad: stay off the graph
            g = logits.grad.to(W.dtype)                    # dL/dz, [n, V]
            grad_h[sl] = g @ W
            if W.requires_grad:
                W.grad = g.T @ h if W.grad is None else W.grad.addmm_(g.T, h)
            if b is not None and b.requires_grad:
                b.grad = g.sum(0) if b.grad is None else b.grad.add_(g.sum(0))
        del logits, loss, g                                # free this chunk before the next one
    # distributed: a sharded body must run its backward on every rank (its hooks reduce-scatter
    # the gradients, W.grad included), even on a rank with no scored token (N == 0); that rank
    # also needs a (zero) W.grad, or it would reduce one gradient fewer than the others (untied head).
    if (n > 0 or distributed.active()) and hidden_rows.requires_grad:
        for t in (W, b) if distributed.active() else ():
            if t is not None and t.requires_grad and t.grad is None:
                t.grad = torch.zeros_like(t)
        hidden_rows.backward(grad_h)                       # one backward through the body
    return total


def _check_loss_args(kind, support, teacher, teacher_head):
    if kind not in KINDS:
        raise ValueError(f"unknown divergence kind {kind!r}; expected one of {KINDS}")
    if support not in SUPPORTS:
        raise ValueError(f"unknown support {support!r}; expected one of {SUPPORTS}")
    if support == "sampled" and kind != "reverse":
        raise ValueError("the sampled-token estimator exists for the reverse KL only "
                         f"(got kind={kind!r}); use support='topk' or 'full'")
    if support == "full" and (teacher_head is None or "hidden" not in teacher):
        raise ValueError("support='full' needs teacher_targets(..., keep_hidden=True) and "
                         "teacher_head (the teacher model or its LM head)")


def distill_loss(student, input_ids, attention_mask, rows, cols, targets, teacher: dict, *,
                 weights: torch.Tensor, kind: str = "reverse", mix: float = 0.5,
                 support: str = "topk", teacher_head=None, chunk: int = 1024,
                 backward: bool = True, temperature: float = 1.0) -> dict:
    """Student side of eq. 4 at the N scored positions; runs backward itself when backward=True.

    input_ids/attention_mask are the student sequences X + Y; rows/cols/targets name the positions
    that predict y_t; ``teacher`` is teacher_targets(...) for the same N tokens in the same order.
    Loss = Σ_i weights[i] · per_token[i] (weights from token_weights, global over the batch).

    support:
      "topk"    — gather the student's logits at the teacher's top-k ids and log_softmax both sides
                  within those k ids (renormalised, no tail mass: SD-Zero official, k = 64).
      "full"    — full-vocab log_softmax on both sides; the teacher's logits are recomputed chunk
                  by chunk from teacher["hidden"] with ``teacher_head`` under no_grad.
      "sampled" — only the sampled token: kl = log p_s(y) − log p_t(y), whose expectation over
                  y ~ p_s is the reverse KL. The loss is built so that its value is kl and its
                  gradient is stopgrad(kl)·∇log p_s(y), the on-policy (score-function) estimator
                  of ∇ reverse KL. Reverse only: samples y ~ p_s give no such estimator of the
                  forward KL. The estimator is unbiased only if y was sampled from the p_s it
                  scores, so with sampling temperature T both sides use logits / T
                  (``temperature``; the teacher's log p_t(y) must come from
                  teacher_targets(..., temperature=T)). topk and full ignore it: they compare
                  the two T = 1 distributions exactly, as the paper does.
    Gradients flow through the student only (the teacher tensors carry none) and accumulate into
    .grad: the caller zeroes them, clips and steps.

    Returns {"loss": detached scalar, "per_token_kl": [N] detached (the divergence of ``kind``;
    for "sampled" the one-sample estimate kl), "student_target_logp": [N] detached full-vocab
    log p_s(y_t)} — fp32 (fp64 for a fp64 model). N == 0 gives loss 0, no NaN, no backward.
    """
    _check_loss_args(kind, support, teacher, teacher_head)       # fail before the forward pass
    if not (rows.numel() == cols.numel() == targets.numel()):
        raise ValueError("rows, cols and targets must all have N entries")
    with torch.set_grad_enabled(backward):              # evaluation builds no graph at all
        hidden_rows = gather_rows(final_hidden(student, input_ids, attention_mask), rows, cols)
    return distill_loss_from_hidden(student, hidden_rows, targets, teacher, weights=weights,
                                    kind=kind, mix=mix, support=support,
                                    teacher_head=teacher_head, chunk=chunk, backward=backward,
                                    temperature=temperature)


def distill_loss_from_hidden(student, hidden_rows: torch.Tensor, targets: torch.Tensor,
                             teacher: dict, *, weights: torch.Tensor, kind: str = "reverse",
                             mix: float = 0.5, support: str = "topk", teacher_head=None,
                             chunk: int = 1024, backward: bool = True,
                             temperature: float = 1.0) -> dict:
    """distill_loss from the student's [N, H] final hidden rows (student: the model or its head).

    distill_loss = final_hidden + gather_rows + this; bench_distill.py calls it with a bare head.
    """
    _check_loss_args(kind, support, teacher, teacher_head)
    n = hidden_rows.shape[0]
    if not (targets.numel() == weights.numel() == n):
        raise ValueError("hidden_rows, targets and weights must all have N entries")
    dtype = torch.promote_types(hidden_rows.dtype, torch.float32)
    per_token_kl = hidden_rows.new_zeros(n, dtype=dtype)
    student_lp = hidden_rows.new_zeros(n, dtype=dtype)
    t_head = _lm_head(teacher_head) if teacher_head is not None else None

    def loss_fn(logits: torch.Tensor, sl: slice) -> torch.Tensor:
        y = targets[sl]
        if support == "sampled":
            s_lp = _target_logp(logits / temperature, y)
            kl = s_lp.detach() - teacher["target_logp"][sl].to(dtype)
            # value kl, gradient kl·∇log p_s(y): the same gradient as the textbook surrogate
            # stopgrad(kl)·log p_s(y), but the logged number is a KL estimate, not a surrogate.
            per_token = kl * (1.0 + s_lp - s_lp.detach())
            per_token_kl[sl], student_lp[sl] = kl, s_lp.detach()
        elif support == "topk":
            s = F.log_softmax(logits.gather(-1, teacher["topk_ids"][sl]), dim=-1)
            t = F.log_softmax(_upcast(teacher["topk_logits"][sl]), dim=-1)
            per_token = divergence(s, t, kind, mix)
            with torch.no_grad():
                per_token_kl[sl], student_lp[sl] = per_token, _target_logp(logits, y)
        else:  # full
            s = F.log_softmax(logits, dim=-1)
            with torch.no_grad():
                t = F.log_softmax(_upcast(t_head(teacher["hidden"][sl])), dim=-1)
            per_token = divergence(s, t, kind, mix)
            with torch.no_grad():
                per_token_kl[sl] = per_token
                student_lp[sl] = s.gather(-1, y[:, None]).squeeze(-1)
        return (weights[sl].to(per_token.dtype) * per_token).sum()

    loss = chunked_head_backward(student, hidden_rows, loss_fn, chunk=chunk, backward=backward)
    return {"loss": loss, "per_token_kl": per_token_kl, "student_target_logp": student_lp}


def reference_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, targets: torch.Tensor,
                   weights: torch.Tensor, *, kind: str = "reverse", mix: float = 0.5,
                   support: str = "topk", k: int = 64, temperature: float = 1.0):
    """Eq. 4 the plain way, for tests and benchmarks: full [N, V] logits of both sides at the N
    scored positions, no chunks, no hand-written backward. Returns (loss, per-token values)."""
    s_logits, t_logits = _upcast(s_logits), _upcast(t_logits).detach()
    if support == "sampled":                   # value kl, gradient stopgrad(kl)·∇log p_s(y)
        s_lp = F.log_softmax(s_logits / temperature, -1).gather(-1, targets[:, None]).squeeze(-1)
        t_lp = F.log_softmax(t_logits / temperature, -1).gather(-1, targets[:, None]).squeeze(-1)
        value = s_lp.detach() - t_lp
        per_token = value * (1.0 + s_lp - s_lp.detach())
    else:
        if support == "topk":                  # both sides renormalised on the teacher's top-k ids
            ids = t_logits.topk(min(k, t_logits.shape[-1]), dim=-1).indices
            s_logits, t_logits = s_logits.gather(-1, ids), t_logits.gather(-1, ids)
        per_token = divergence(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), kind, mix)
        value = per_token
    return (weights.to(per_token.dtype) * per_token).sum(), value.detach()


def distill_pair(student, teacher, s: dict, t: dict, *, weights: torch.Tensor, k: int = 64,
                 kind: str = "reverse", mix: float = 0.5, support: str = "topk",
                 backward: bool = True, temperature: float = 1.0) -> dict:
    """One micro-batch of eq. 4: the teacher reads its sequences, the student its own, and the loss
    runs backward (this is the bottom of a Phase-2 step, see the module docstring).

    ``s`` and ``t`` are revise.scored_batch dicts (ids, mask, rows, cols, targets) that enumerate
    the same N target tokens in the same order. ``temperature`` is the sampling temperature of
    Y; only the "sampled" support uses it (see distill_loss).
    Returns distill_loss's dict plus the teacher's full-vocab ``teacher_target_logp``.
    """
    t_temp = temperature if support == "sampled" else 1.0
    dev = next(student.parameters()).device
    s, t = ({key: v.to(dev) for key, v in b.items()} for b in (s, t))
    t_out = teacher_targets(teacher, t["ids"], t["mask"], t["rows"], t["cols"], t["targets"], k=k,
                            keep_hidden=support == "full", temperature=t_temp)
    _check_loss_args(kind, support, t_out, teacher)
    with torch.set_grad_enabled(backward):              # evaluation builds no graph at all
        hidden_rows = gather_rows(final_hidden(student, s["ids"], s["mask"]), s["rows"], s["cols"])
    out = distill_loss_from_hidden(student, hidden_rows, s["targets"], t_out, weights=weights.to(dev),
                                   kind=kind, mix=mix, support=support, teacher_head=teacher,
                                   backward=backward, temperature=t_temp)
    out["teacher_target_logp"] = t_out["target_logp"]
    return out
