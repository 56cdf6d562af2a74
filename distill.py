"""distill.py — Phase 2 of SD-Zero: on-policy self-distillation from the reviser, paper §2.2, eq. 4.

After Phase 1 (revise.py) the model is a good reviser. Phase 2 trains the generator (student, π_θ)
to put, at every token of its own sampled response y, the next-token distribution that the frozen
reviser (teacher, π_SRT) puts there after reading y and the control phrase P_r:

    L_SD(θ) = E_x E_{y~π_θ(·|x)} Σ_t KL( π_θ(·|x, y<t)  ‖  stopgrad π_SRT(·|x, y, P_r, y<t) )     (eq. 4)

The student comes first inside the KL: the *reverse* KL Σ_v p_s(v)(log p_s(v) − log p_t(v)),
mode-seeking. The official code defaults to a 50/50 mix of forward and reverse KL, computed on the
teacher's top-64 tokens with both sides renormalised on that support; both are options here.

One Phase-2 step, in the order this file reads (``phase2_step`` is the whole of it):

    1. sample y ~ π_θ(·|x) and grade it         generate.sample_and_grade (reward.py grades)
    2. pick P_r by the reward and build the      teacher_contexts: X + Y' + S(P_r)  (revise.py's
       teacher sequence X + Y' + S(P_r) + Y                       reviser prompt), then + Y
    3. score the positions of the second Y       phase2_batch (the one way to build a batch)
    4. the teacher's top-k at those positions    teacher_targets (no gradient)
    5. the student's loss and its backward       distill_loss (eq. 4); reference_loss beside it
    6. micro-batch by micro-batch                distill_batch

train.py's ``phase2`` loop then clips, steps the optimizer and, if asked, re-syncs the teacher.
The memory tricks (the LM head applied only at scored rows, chunk by chunk) are machinery/lm_head.py.

Positions: ``rows, cols`` (LongTensor[N]) name the (batch row, position) whose next-token
distribution predicts ``targets`` (the sampled ids of y). phase2_batch builds them for the student
sequence X + Y and for the teacher sequence X + Y' + S(P_r) + Y; entry i of both is the same y_t.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from generate import rollout_metrics, sample_and_grade
from machinery.lm_head import chunked_head_backward, hidden_rows, lm_head_of, scored_batch, target_logp, upcast
from revise import reviser_prompt

KINDS = ("reverse", "forward", "mixed")
SUPPORTS = ("topk", "full", "sampled")
WEIGHT_MODES = ("token_mean", "seq_sum", "seq_mean")


def count_local(counts: list[int]) -> list[int]:
    """One process: the batch is all here, so its counts are the batch's (see phase2_step)."""
    return counts


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------
def phase2_step(args, student, teacher, tok, items: list[dict], *, phrases, eos, gen: dict,
                count_all=count_local) -> dict:
    """One Phase-2 step on a batch of fresh questions: rollouts, reward, P_r, eq. 4, backward.

    Gradients accumulate into the student's .grad; the caller clips and steps. ``args`` carries
    the knobs of config.py (task, rollouts_per_question, max_teacher_tokens, micro_batch, norm,
    topk, kl, mix, support, temperature). ``count_all`` turns this process's [tokens, sequences]
    into the whole batch's: the identity here, a sum over ranks under torchrun (train.py), so that
    a token mean divides by every rank's tokens. Returns the step's metrics.
    """
    # 1. the generator answers, the verifier grades
    rolls, rewards = sample_and_grade(student, tok, items, task=args.task, n=args.rollouts_per_question,
                                      phrases=phrases, gen=gen)
    # 2. P_r by the reward; Y cut so that the teacher's |X| + 2|Y| + |S| fits its budget
    s_ids = phrases.ids(tok)
    xs = [r.prompt_ids for r in rolls]
    ss = [s_ids[phrases.pick(rw)] for rw in rewards]
    ys = [fit_teacher_budget(len(x), r.completion_ids, len(s), args.max_teacher_tokens)
          for x, r, s in zip(xs, rolls, ss)]
    # 3–6. the teacher reads X + Y' + S(P_r) and scores the same Y the student sampled (eq. 4)
    weights = batch_token_weights(ys, args.norm, count_all)
    out = distill_batch(student, teacher, xs, teacher_contexts(xs, ys, ss, eos), ys, tok.pad_token_id,
                        weights=weights, micro_batch=args.micro_batch, k=args.topk, kind=args.kl,
                        mix=args.mix, support=args.support, temperature=args.temperature,
                        kl_temperature=args.kl_temperature)
    kl = out["per_token_kl"]
    return {"loss": out["loss"], "kl_per_token": float(kl.mean()) if len(kl) else 0.0,
            **rollout_metrics(rolls, rewards), "scored_tokens": sum(len(y) for y in ys)}


# --------------------------------------------------------------------------------------------
# 2–3. The teacher sequence and the batch both sides score
# --------------------------------------------------------------------------------------------
def fit_teacher_budget(x_len: int, y: list[int], s_len: int, max_teacher_tokens: int) -> list[int]:
    """The teacher reads |X| + 2|Y| + |S| tokens. When that exceeds the cap, truncate Y (for the
    student too) to ⌊(cap − |X| − |S|)/2⌋ tokens, as the official code does."""
    room = (max_teacher_tokens - x_len - s_len) // 2
    return list(y) if len(y) <= room else list(y[:max(room, 0)])


def teacher_contexts(xs, ys, ss, eos) -> list[list[int]]:
    """X + Y' + S(P_r) per rollout: the reviser prompt of Phase 1, read here by the frozen teacher."""
    return [reviser_prompt(x, y, s, eos) for x, y, s in zip(xs, ys, ss)]


def teacher_sequence(x, y, s, eos) -> tuple[list[int], int]:
    """X + Y' + S(P_r) + Y, and the index where the second copy of Y starts (the layout, spelt out)."""
    head = reviser_prompt(x, y, s, eos)
    return head + list(y), len(head)


def phase2_batch(student_contexts, teacher_contexts_, ys, pad_id) -> dict:
    """Student and teacher inputs for Phase 2, aligned token for token — the one way to build them.

    student: context + Y (SD-Zero: X + Y), targets Y;
    teacher: context + Y (SD-Zero: X + Y' + S(P_r) + Y; SDFT: X + demonstration + Y), targets the
    last Y. Both lists of (row, col) enumerate the same N targets in the same order, so entry i of
    the teacher's top-k belongs to entry i of the student's logits.
    """
    return {"student": scored_batch(student_contexts, ys, pad_id),
            "teacher": scored_batch(teacher_contexts_, ys, pad_id)}


# --------------------------------------------------------------------------------------------
# 4. The teacher's view (no gradient)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_topk(head, hidden: torch.Tensor, targets: torch.Tensor, k: int = 64, chunk: int = 1024,
                 temperature: float = 1.0) -> dict:
    """Apply ``head`` to [N, H] rows chunk by chunk; keep the top-k logits + ids and log p(target).

    Only k numbers per position survive the chunk, so a frozen teacher's scoring costs O(N·k)
    memory instead of O(N·V) (at Qwen3's V and k = 64: 6 MB instead of 5 GB for 4×2,048 tokens).
    """
    head = lm_head_of(head)
    n, k = hidden.shape[0], min(k, head.weight.shape[0])
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    out = {"topk_logits": hidden.new_empty(n, k, dtype=dtype),
           "topk_ids": torch.empty(n, k, dtype=torch.long, device=hidden.device),
           "target_logp": hidden.new_empty(n, dtype=dtype)}
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        logits = upcast(head(hidden[sl]))                                  # [n, V]
        top = logits.topk(k, dim=-1)
        out["topk_logits"][sl], out["topk_ids"][sl] = top.values, top.indices
        out["target_logp"][sl] = target_logp(logits / temperature, targets[sl])
    return out


@torch.no_grad()
def teacher_targets(teacher, batch: dict, k: int = 64, keep_hidden: bool = False,
                    temperature: float = 1.0, chunk: int = 1024) -> dict:
    """The frozen teacher's view of a scored_batch's N tokens (the stop-gradient side of eq. 4).

    Returns {"topk_logits": [N, k] fp32, "topk_ids": [N, k] long, "target_logp": [N] fp32 (full-
    vocab log p_t(y_t): the sampled-token estimator and the token-level KL analysis need it), and
    "hidden": [N, H] if keep_hidden}. The raw logits are stored, not log-probs: the top-k loss
    renormalises within the k ids, which is shift-invariant. keep_hidden is for the full-vocab
    support, which recomputes teacher logits per chunk from these rows instead of storing N×V.
    """
    hidden = hidden_rows(teacher, batch)
    out = teacher_topk(teacher, hidden, batch["targets"], k=k, chunk=chunk, temperature=temperature)
    if keep_hidden:
        out["hidden"] = hidden
    return out


# --------------------------------------------------------------------------------------------
# 5. Eq. 4: divergences, token weights, the loss
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
    0·log 0 = NaN gradients; p = exp(log p) underflowing to 0 is harmless.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown divergence kind {kind!r}; expected one of {KINDS}")
    s, t = upcast(s_logp), upcast(t_logp)
    diff = s - t                                         # log p_s − log p_t, shared by both terms
    if kind == "reverse":
        return (s.exp() * diff).sum(-1)
    if kind == "forward":
        return -(t.exp() * diff).sum(-1)
    return mix * -(t.exp() * diff).sum(-1) + (1.0 - mix) * (s.exp() * diff).sum(-1)


def token_weights(seq_index: torch.Tensor, n_seqs: int, mode: str = "token_mean",
                  n_tokens: int | None = None) -> torch.Tensor:
    """Weight w_i of scored token i so that Σ_i w_i · loss_i is the batch loss (``--norm``).

    seq_index: LongTensor[N], the sequence each scored token belongs to.
      token_mean — 1/n_tokens: mean over every response token of the batch (official code; long
                   responses weigh more).
      seq_sum    — 1/n_seqs: Σ over t inside a sequence, mean over sequences (eq. 4 literally).
      seq_mean   — 1/(n_seqs·|y_seq|): mean over t, then over sequences (original GRPO style).
    n_tokens (default N) and n_seqs count the WHOLE batch, which is more than these N tokens when
    a batch is split into micro-batches or over ranks. Empty batches give an empty tensor, no 0/0.
    """
    n = seq_index.numel()
    if mode == "token_mean":
        return torch.full((n,), 1.0 / max(n if n_tokens is None else n_tokens, 1), device=seq_index.device)
    if mode == "seq_sum":
        return torch.full((n,), 1.0 / max(n_seqs, 1), device=seq_index.device)
    if mode == "seq_mean":
        lengths = torch.bincount(seq_index).float()          # |y| of each sequence
        return 1.0 / (max(n_seqs, 1) * lengths[seq_index])
    raise ValueError(f"unknown weight mode {mode!r}; expected one of {WEIGHT_MODES}")


def batch_token_weights(ys: list[list[int]], mode: str, count_all=count_local) -> torch.Tensor:
    """token_weights for a batch of responses Y, counted over the whole batch (see phase2_step)."""
    seq_of_token = torch.tensor([b for b, y in enumerate(ys) for _ in y], dtype=torch.long)
    n_tokens, n_seqs = count_all([len(seq_of_token), len(ys)])
    return token_weights(seq_of_token, n_seqs, mode, n_tokens)


def check_loss_options(kind: str, support: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown divergence kind {kind!r}; expected one of {KINDS}")
    if support not in SUPPORTS:
        raise ValueError(f"unknown support {support!r}; expected one of {SUPPORTS}")
    if support == "sampled" and kind != "reverse":
        raise ValueError("the sampled-token estimator exists for the reverse KL only "
                         f"(got kind={kind!r}); use support='topk' or 'full'")


def distill_loss(student, hidden: torch.Tensor, targets: torch.Tensor, teacher: dict, *,
                 weights: torch.Tensor, kind: str = "reverse", mix: float = 0.5, support: str = "topk",
                 teacher_head=None, chunk: int = 1024, backward: bool = True,
                 temperature: float = 1.0, kl_temperature: float = 1.0) -> dict:
    """Eq. 4 at the N scored positions: the student's side, with its backward (backward=True).

    hidden: [N, H] the student's final hidden states at the positions that predict ``targets``
    ([N], the sampled y_t), still attached to the body's graph (lm_head.hidden_rows); ``student``
    is the model or its bare LM head. ``teacher`` is teacher_targets(...) for the same N tokens in
    the same order. Loss = Σ_i weights[i] · per_token[i] (weights: token_weights, over the batch).
    The options:
      kind     reverse (eq. 4), forward, mixed (``mix`` of forward; official code 0.5).
      support  "topk"    — gather the student's logits at the teacher's top-k ids and log_softmax
                           both sides within those k ids (renormalised, no tail mass: official, k = 64).
               "full"    — full-vocab log_softmax on both sides; the teacher's logits are recomputed
                           chunk by chunk from teacher["hidden"] with ``teacher_head`` under no_grad.
               "sampled" — only the sampled token: kl = log p_s(y) − log p_t(y), whose expectation
                           over y ~ p_s is the reverse KL. Its value is kl and its gradient
                           stopgrad(kl)·∇log p_s(y), the on-policy (score-function) estimator of
                           ∇ reverse KL; reverse only. It is unbiased only if y was sampled from the
                           p_s it scores, so with sampling temperature T both sides use logits / T
                           (``temperature``; the teacher's log p_t(y) must come from
                           teacher_targets(..., temperature=T)). topk and full ignore it: they
                           compare softmax(logits / ``kl_temperature``) of both sides (default 1,
                           the two models as they are).
      norm     is in ``weights`` (token_weights' mode): under micro-batching the weights must be
               computed once for the whole batch, so they come in ready.
    Gradients flow through the student only and accumulate into .grad.

    Returns {"loss": detached scalar, "per_token_kl": [N] detached (the divergence of ``kind``;
    for "sampled" the one-sample estimate), "student_target_logp": [N] detached full-vocab
    log p_s(y_t)} — fp32 (fp64 for a fp64 model). N == 0 gives loss 0, no NaN, no backward.
    """
    check_loss_options(kind, support)
    if support == "full" and (teacher_head is None or "hidden" not in teacher):
        raise ValueError("support='full' needs teacher_targets(..., keep_hidden=True) and "
                         "teacher_head (the teacher model or its LM head)")
    n = hidden.shape[0]
    if not (targets.numel() == weights.numel() == n):
        raise ValueError("hidden, targets and weights must all have N entries")
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    per_token_kl = hidden.new_zeros(n, dtype=dtype)
    student_lp = hidden.new_zeros(n, dtype=dtype)
    t_head = lm_head_of(teacher_head) if teacher_head is not None else None

    def scale(logits):                                   # --kl-temperature (1: untouched, bit for bit)
        return logits if kl_temperature == 1.0 else logits / kl_temperature

    def loss_fn(logits: torch.Tensor, sl: slice) -> torch.Tensor:      # logits: [n, V] fp32
        y = targets[sl]
        if support == "sampled":
            s_lp = target_logp(logits / temperature, y)
            kl = s_lp.detach() - teacher["target_logp"][sl].to(dtype)
            # value kl, gradient kl·∇log p_s(y): the same gradient as the textbook surrogate
            # stopgrad(kl)·log p_s(y), but the logged number is a KL estimate, not a surrogate.
            per_token = kl * (1.0 + s_lp - s_lp.detach())
            per_token_kl[sl], student_lp[sl] = kl, s_lp.detach()
        elif support == "topk":
            s = F.log_softmax(scale(logits.gather(-1, teacher["topk_ids"][sl])), dim=-1)       # [n, k]
            t = F.log_softmax(scale(upcast(teacher["topk_logits"][sl])), dim=-1)              # [n, k]
            per_token = divergence(s, t, kind, mix)
            with torch.no_grad():
                per_token_kl[sl], student_lp[sl] = per_token, target_logp(logits, y)
        else:  # full
            s = F.log_softmax(scale(logits), dim=-1)
            with torch.no_grad():
                t = F.log_softmax(scale(upcast(t_head(teacher["hidden"][sl]))), dim=-1)
            per_token = divergence(s, t, kind, mix)
            with torch.no_grad():
                per_token_kl[sl] = per_token
                student_lp[sl] = target_logp(logits, y)
        return (weights[sl].to(per_token.dtype) * per_token).sum()

    loss = chunked_head_backward(student, hidden, loss_fn, chunk=chunk, backward=backward)
    return {"loss": loss, "per_token_kl": per_token_kl, "student_target_logp": student_lp}


def reference_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, targets: torch.Tensor,
                   weights: torch.Tensor, *, kind: str = "reverse", mix: float = 0.5,
                   support: str = "topk", k: int = 64, temperature: float = 1.0, kl_temperature: float = 1.0):
    """Eq. 4 the plain way, for tests and benchmarks: full [N, V] logits of both sides at the N
    scored positions, no chunks, no hand-written backward. Returns (loss, per-token values [N])."""
    s_logits, t_logits = upcast(s_logits), upcast(t_logits).detach()
    if support == "sampled":                   # value kl, gradient stopgrad(kl)·∇log p_s(y)
        s_lp = F.log_softmax(s_logits / temperature, -1).gather(-1, targets[:, None]).squeeze(-1)
        t_lp = F.log_softmax(t_logits / temperature, -1).gather(-1, targets[:, None]).squeeze(-1)
        value = s_lp.detach() - t_lp
        per_token = value * (1.0 + s_lp - s_lp.detach())
    else:
        if support == "topk":                  # both sides renormalised on the teacher's top-k ids
            ids = t_logits.topk(min(k, t_logits.shape[-1]), dim=-1).indices
            s_logits, t_logits = s_logits.gather(-1, ids), t_logits.gather(-1, ids)
        s_logits, t_logits = s_logits / kl_temperature, t_logits / kl_temperature
        per_token = divergence(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), kind, mix)
        value = per_token
    return (weights.to(per_token.dtype) * per_token).sum(), value.detach()


# --------------------------------------------------------------------------------------------
# 6. Micro-batches
# --------------------------------------------------------------------------------------------
def distill_batch(student, teacher, student_contexts, teacher_contexts_, ys, pad_id, *,
                  weights: torch.Tensor, micro_batch: int, k: int = 64, kind: str = "reverse",
                  mix: float = 0.5, support: str = "topk", temperature: float = 1.0,
                  kl_temperature: float = 1.0, backward: bool = True) -> dict:
    """Eq. 4 over a batch of responses Y, micro-batch by micro-batch (gradients accumulate).

    The student scores Y after its own context, the teacher the same Y after its context (SD-Zero:
    X + Y' + S(P_r); SDFT: X + demonstration). ``weights`` ([N], token_weights over the whole
    batch) make the micro-batch gradients add up to the full-batch gradient. ``temperature`` is Y's
    sampling temperature; only the "sampled" support uses it (see distill_loss).
    Every micro-batch runs, even one without a scored token: under torchrun every rank must run the
    same number of forwards, and in one process it costs a forward and changes nothing.

    Returns {"loss": float, the summed loss; "per_token_kl", "student_target_logp",
    "teacher_target_logp": [N] each, detached, in the order of ``ys``}.
    """
    t_temp = temperature if support == "sampled" else 1.0
    check_loss_options(kind, support)                    # fail before any forward pass
    dev = next(student.parameters()).device
    loss, parts, offset = 0.0, {"per_token_kl": [], "student_target_logp": [], "teacher_target_logp": []}, 0
    for s in range(0, len(ys), micro_batch):
        sl = slice(s, s + micro_batch)
        b = phase2_batch(student_contexts[sl], teacher_contexts_[sl], ys[sl], pad_id)
        student_side, teacher_side = ({key: v.to(dev) for key, v in half.items()} for half in b.values())
        n = len(student_side["targets"])
        t_out = teacher_targets(teacher, teacher_side, k=k, keep_hidden=support == "full", temperature=t_temp)
        with torch.set_grad_enabled(backward):           # evaluation builds no graph at all
            hidden = hidden_rows(student, student_side)  # [n, H]
        out = distill_loss(student, hidden, student_side["targets"], t_out, weights=weights[offset:offset + n].to(dev),
                           kind=kind, mix=mix, support=support, teacher_head=teacher, backward=backward,
                           temperature=t_temp, kl_temperature=kl_temperature)
        offset += n
        loss += float(out["loss"])
        for key, v in (("per_token_kl", out["per_token_kl"]), ("student_target_logp", out["student_target_logp"]),
                       ("teacher_target_logp", t_out["target_logp"])):
            parts[key].append(v.float().cpu())
    return {"loss": loss, **{key: torch.cat(v) if v else torch.zeros(0) for key, v in parts.items()}}
