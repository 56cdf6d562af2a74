"""machinery/lm_head.py — token losses without [B, L, V] logits: the LM-head machinery of both phases.

Not the paper, but what lets its losses run on one GPU. SRT's cross-entropy (revise.py, eq. 1-3) and
Phase 2's KL (distill.py, eq. 4) both need the next-token distribution at a few chosen positions
only (the response tokens). Qwen3's vocabulary is V = 151,936, so fp32 logits for one 4,096-token
batch are 2.5 GB *per tensor*, and a log-softmax, its gradient and a teacher's copy multiply that.
So nothing here ever builds [B, L, V]:

* ``pad``                   — id lists -> [B, W] ids + attention mask, padded left or right.
* ``score_positions``       — the flat (row, col) pairs whose next-token distribution predicts a target.
* ``scored_batch``          — right-padded ``context + Y`` rows and the positions that predict Y.
* ``final_hidden``          — the transformer body without its LM head: [B, L, H].
* ``chunked_head_backward`` — LM head + loss + backward, a chunk of rows at a time.
* ``lm_head_of``, ``upcast``, ``target_logp`` — small helpers the losses share.

Under torchrun the body of an FSDP2 model runs through its root module, and every rank runs the
body's backward even with no scored token (distributed.py explains both); those are the only two
places where this file looks at ``distributed``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from machinery import distributed


def upcast(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32; fp32 and fp64 stay as they are.

    Why: softmax normalisers and KL sums over 152K entries lose the signal in bf16 (identical logits
    can show a "KL" floor of a few hundredths; docs/findings.md, "Where the code's choices come
    from"). fp64 is kept so that tests can compare against a float64 reference exactly.
    """
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def target_logp(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[n, V] logits, [n] ids -> [n] full-vocabulary log p(target), without a second [n, V] tensor."""
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def lm_head_of(model) -> torch.nn.Module:
    """The output projection of an HF causal LM, or the module itself if it is a bare head.

    With tied embeddings this is the embedding matrix, so its gradient simply adds to the input
    embedding's gradient. (Models with logit soft-capping or scaling would need that applied here;
    Qwen3 and Llama have none.)
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if head is not None else model


# --------------------------------------------------------------------------------------------
# Which positions are scored
# --------------------------------------------------------------------------------------------
def pad(seqs: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists -> (ids, attention mask), both [B, W], padded on the ``side`` given.

    "left" for generation: every prompt ends at the last column, where generation continues.
    "right" for scoring forwards: real tokens keep positions 0..L−1, so target columns are plain
    offsets, and causal attention never lets a real token see the padding after it.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, cols] = torch.tensor(s, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def score_positions(starts: list[int], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (row, col) pairs, each LongTensor[N], of the positions whose next-token distribution
    predicts a target.

    Row b has ``lengths[b]`` targets starting at token index ``starts[b]``; the logits that predict
    token j sit at column j − 1. A flat list (instead of a padded [B, T] mask) means padding can
    never leak into a loss: there is simply no entry for it.
    """
    rows = [b for b, n in enumerate(lengths) for _ in range(n)]
    cols = [s - 1 + t for s, n in zip(starts, lengths) for t in range(n)]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


def scored_batch(contexts: list[list[int]], ys: list[list[int]], pad_id: int) -> dict:
    """Right-padded ``context + Y`` rows and the positions that predict each Y token.

    Returns {"ids", "mask": [B, W]; "rows", "cols", "targets": [N]} with N = Σ|Y|, targets in the
    order of ``ys`` (row 0's tokens first), so two batches built from the same ``ys`` with different
    contexts enumerate the same N tokens in the same order.
    """
    ids, mask = pad([list(c) + list(y) for c, y in zip(contexts, ys)], pad_id, "right")
    rows, cols = score_positions([len(c) for c in contexts], [len(y) for y in ys])
    targets = torch.tensor([t for y in ys for t in y], dtype=torch.long)
    return {"ids": ids, "mask": mask, "rows": rows, "cols": cols, "targets": targets}


# --------------------------------------------------------------------------------------------
# The body without its head, and the head alone
# --------------------------------------------------------------------------------------------
def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] ids -> [B, L, H] hidden states after the final norm; the LM head is NOT applied.

    Why skip the head: HF's ``model(...)`` returns [B, L, V] logits for every position, prompt
    included. We need only the N response positions, so the head runs later on gathered rows.
    Why explicit position ids: training batches are right-padded, where they change nothing, but a
    left-padded batch (the tests use one) must not count the pads before a real token; cumsum of
    the mask − 1 gives 0 at the first real token either way.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if distributed.sharded(model):          # FSDP2: through the root's hooks (distributed.body_forward)
        return distributed.body_forward(model, input_ids=input_ids, attention_mask=attention_mask,
                                        position_ids=position_ids, use_cache=False)
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
               use_cache=False)
    return out.last_hidden_state


def hidden_rows(model, batch: dict) -> torch.Tensor:
    """A scored_batch through the body: [N, H], the hidden states at its (row, col) positions."""
    return final_hidden(model, batch["ids"], batch["mask"])[batch["rows"], batch["cols"]]


def chunked_head_backward(model, hidden: torch.Tensor,
                          loss_fn: Callable[[torch.Tensor, slice], torch.Tensor],
                          chunk: int = 1024, backward: bool = True) -> torch.Tensor:
    """Σ_chunks loss_fn(lm_head(hidden[c]) in fp32, c), back-propagated one chunk at a time.

    hidden: [N, H] final hidden states at the scored positions, still attached to the body's
    autograd graph. loss_fn(logits [n, V] fp32, slice) -> scalar, already weighted with the GLOBAL
    token weights, so the per-chunk gradients add up to the full-batch gradient exactly.

    How: cut the graph at the hidden rows. For each chunk, the head's logits z = h W^T (+ b) become
    a leaf; ``loss.backward()`` runs autograd through the loss only and frees that chunk's [n, V]
    tensors, leaving g = dL/dz. The head's backward is then done by hand: dL/dh = g W goes into an
    [N, H] buffer, and dL/dW = g^T h is added to W.grad in place (addmm_). Autograd would instead
    build a fresh [V, H] weight gradient per chunk before adding it (1.6 GB in fp32 at Qwen3-4B
    size). With tied embeddings W is the embedding matrix: the body's backward adds its part later.
    Finally one ``hidden.backward(dL/dh)`` pushes the gradient through the transformer body.
    Peak vocab memory is one chunk's, not N's; the body runs backward once.

    backward=False just sums the chunk losses under no_grad (evaluation). Returns the total loss as
    a detached tensor. N == 0 returns 0 and leaves every .grad untouched (skip the optimiser step).
    """
    head = lm_head_of(model)
    W, b = head.weight, getattr(head, "bias", None)       # an nn.Linear, as in every HF causal LM
    n = hidden.shape[0]
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    total = torch.zeros((), dtype=dtype, device=hidden.device)
    if not backward:
        with torch.no_grad():
            for start in range(0, n, chunk):
                sl = slice(start, start + chunk)
                total += loss_fn(upcast(F.linear(hidden[sl], W, b)), sl)
        return total

    grad_h = torch.zeros_like(hidden)                      # dL/dh for the body, [N, H]
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        h = hidden[sl].detach().to(W.dtype)                # graph cut: the body is not re-run
        with torch.no_grad():
            logits = upcast(F.linear(h, W, b))
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
    if hidden.requires_grad and (n > 0 or distributed.sharded(model)):
        distributed.zero_head_grads(model, W, b)           # FSDP2: every rank reduces the same grads
        hidden.backward(grad_h)                            # one backward through the body
    return total
