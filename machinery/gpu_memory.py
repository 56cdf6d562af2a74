"""machinery/gpu_memory.py — for train.py: will this run fit the GPU? Memory model, precision, fit check.

SD-Zero (arXiv 2604.12002) holds, during Phase 2 (§2.2, eq. 4), the student (generator) with its
gradients and AdamW state, the frozen teacher (the SRT weights, acting as reviser), and at any moment
one of three transients: the rollout KV cache, one micro-batch's training activations, or the
optimizer's fp32 temporaries. Phase 1's SRT (§2.1, eq. 3) holds the same without the teacher. This
file writes that arithmetic down as functions of the model config and the run's knobs, so that

* ``phase_peaks`` predicts each phase's peak in bytes, term by term (one owner for the figures the
  docs quote: docs/gpu.md is filled from ``python -m machinery.gpu_memory``);
* ``fit_check`` / ``check_fits`` stop a CUDA run *before anything is loaded* when the peak cannot fit
  the card, in one line that names the flag to change;
* ``train_precision`` — a training run's weight dtype and gradient checkpointing (bf16 + checkpointing
  on CUDA; ``--gpu-path`` runs the same on CPU so that tests cover it);
* ``free_device_memory`` ends a phase: nothing of it stays referenced, and the caching allocator
  gives its blocks back (review note: a 32 GB SRT optimizer freed by Python is still reserved by
  PyTorch, and the next phase's very different shapes can fragment around it).

Every term counts live tensors (what ``torch.cuda.max_memory_allocated`` measures). The CUDA context
and allocator fragmentation are not tensors; ``HEADROOM`` keeps a margin for them.
"""
from __future__ import annotations

import gc
import math
import os

import torch
from transformers import AutoConfig

from machinery import distributed

GIB = 2 ** 30
HEADROOM = 0.92          # plan for at most this fraction of the card (context + fragmentation)
HEAD_CHUNK = 1024        # rows per chunk of lm_head.chunked_head_backward / distill.teacher_topk


def shape(config) -> dict:
    """The sizes the arithmetic needs, from an HF config (object or dict) of a Llama/Qwen-style LM."""
    get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else \
        (lambda k, d=None: getattr(config, k, d))
    heads = get("num_attention_heads")
    hd = get("head_dim") or get("hidden_size") // heads
    return {"V": get("vocab_size"), "H": get("hidden_size"), "I": get("intermediate_size"),
            "L": get("num_hidden_layers"), "q": heads * hd, "kv": get("num_key_value_heads", heads) * hd,
            "hd": hd, "tied": bool(get("tie_word_embeddings", False))}


def n_params(s: dict) -> int:
    """Parameters of the decoder: embeddings, per layer q/k/v/o + gated MLP + norms, head if untied."""
    layer = s["H"] * (s["q"] + 2 * s["kv"]) + s["q"] * s["H"] + 3 * s["H"] * s["I"] + 2 * s["H"] + 2 * s["hd"]
    return s["V"] * s["H"] * (1 if s["tied"] else 2) + s["L"] * layer + s["H"]


def kv_bytes_per_token(s: dict, w: int = 2) -> int:
    """K and V of every layer for one token (Qwen3-4B in bf16: 144 KiB)."""
    return 2 * s["L"] * s["kv"] * w


def layer_activation_bytes(s: dict, tokens: int, w: int) -> int:
    """What one decoder layer keeps for its backward, per sequence of ``tokens``: norm outputs and
    residuals (6·H), q/k/v before and after norm + RoPE, the attention output (3·q + 4·kv), and the
    gated MLP's gate, up, act(gate), act·up (4·I). Attention itself is the fused SDPA kernel: O(T)."""
    return tokens * (6 * s["H"] + 3 * s["q"] + 4 * s["kv"] + 4 * s["I"]) * w


def head_chunk_bytes(s: dict, w: int) -> int:
    """One chunk of the hand-written LM-head backward: fp32 logits, their gradient and the
    log-softmax's buffer ([chunk, V] each), plus dL/dz cast to the weight dtype."""
    return HEAD_CHUNK * s["V"] * (3 * 4 + w)


def train_micro_batch_bytes(s: dict, seq: int, w: int, teacher_seq: int = 0) -> int:
    """Transient peak of one micro-batch (gradient checkpointing on): the teacher's no-grad forward of
    ``teacher_seq`` tokens (one layer's working set) comes first and is gone before the student's
    forward, which keeps every layer's input (L·T·H), then adds the larger of the head chunk and one
    layer's recompute (its activations and their gradients: 2×)."""
    keep = s["L"] * seq * s["H"] * w + 3 * seq * s["H"] * w          # checkpoints + final hidden + dL/dh
    student = keep + max(head_chunk_bytes(s, w), 2 * layer_activation_bytes(s, seq, w))
    teacher = layer_activation_bytes(s, teacher_seq, w) + head_chunk_bytes(s, w) // 2
    return max(student, teacher)


def optimizer_step_bytes(s: dict, w: int) -> int:
    """optim.AdamW's temporaries for its largest parameter (the V×H embedding): g, w, m̂, v̂ in
    fp32, then stochastic rounding's noise and the rounded bits (int32): six fp32-sized copies."""
    largest = max(s["V"] * s["H"], s["H"] * s["I"])
    return 6 * 4 * largest + largest * w


def phase_peaks(config, *, bf16: bool, max_new_tokens: int, prompt_tokens: int, gen_batch: int,
                micro_batch: int, max_teacher_tokens: int, phrase_tokens: int = 16) -> dict:
    """Predicted peak bytes of Phase 1 (collection, SRT) and Phase 2, with every term.

    Phase 2: student + teacher + fp32 moments always; then the largest of
      rollouts  — KV cache of ``gen_batch`` sequences of prompt + max_new_tokens (grads are None);
      training  — gradients + one micro-batch (student X+Y, teacher X+Y'+S+Y ≤ max_teacher_tokens);
      step      — gradients + the optimizer's temporaries.
    Phase 1 (SRT): the same without the teacher, on SRT sequences X+Y_init+S+Y_rev.
    """
    s, w = shape(config), (2 if bf16 else 4)
    P = n_params(s)
    weights, moments = P * w, 2 * 4 * P
    y = max_new_tokens
    teacher_seq = min(prompt_tokens + 2 * y + phrase_tokens, max_teacher_tokens)
    rollout = kv_bytes_per_token(s, w) * gen_batch * (prompt_tokens + y)
    p2_train = weights + micro_batch * train_micro_batch_bytes(s, prompt_tokens + y, w, teacher_seq)
    p2 = {"student": weights, "teacher": weights, "moments": moments,
          "rollout_kv": rollout, "training": p2_train, "optimizer_step": weights + optimizer_step_bytes(s, w)}
    srt = micro_batch * train_micro_batch_bytes(s, teacher_seq, w)
    p1 = {"model": weights, "moments": moments, "rollout_kv": rollout, "training": weights + srt,
          "optimizer_step": p2["optimizer_step"]}
    for d, static in ((p2, ("student", "teacher", "moments")), (p1, ("model", "moments"))):
        transient = {k: d[k] for k in ("rollout_kv", "training", "optimizer_step")}
        d["peak_term"] = max(transient, key=transient.get)
        d["peak"] = sum(d[k] for k in static) + transient[d["peak_term"]]
    return {"params": P, "phase1": p1, "phase2": p2, "micro_batch": micro_batch,
            "kv_bytes_per_sequence": kv_bytes_per_token(s, w) * (prompt_tokens + y)}


def rollout_capacity(peaks: dict, card_bytes: int) -> int:
    """How many sequences can decode together in Phase 2 beside student, teacher and moments."""
    p2 = peaks["phase2"]
    free = card_bytes * HEADROOM - (p2["student"] + p2["teacher"] + p2["moments"])
    return max(0, math.floor(free / peaks["kv_bytes_per_sequence"]))


MORE_GPUS = "more GPUs (torchrun train.py: distributed.py shards the weights)"


def check_fits(peaks: dict, card_bytes: int) -> None:
    """SystemExit with one line naming the flag to change when a phase's peak exceeds the card."""
    budget = card_bytes * HEADROOM
    for phase in ("phase2", "phase1"):
        d = peaks[phase]
        if d["peak"] > budget:
            static = d["peak"] - d[d["peak_term"]]
            flag = {"rollout_kv": "lower --gen-batch", "optimizer_step": "use " + MORE_GPUS,
                    "training": "lower --micro-batch" if peaks["micro_batch"] > 1 else
                    "lower --max-new-tokens / --max-teacher-tokens"}[d["peak_term"]]
            raise SystemExit(f"error: {phase} needs {d['peak'] / GIB:.1f} GiB (peak at {d['peak_term']}), "
                             f"over the {budget / GIB:.1f} GiB usable of this {card_bytes / GIB:.0f} GiB "
                             f"card; {'use ' + MORE_GPUS if static > budget else flag}")


def free_device_memory() -> None:
    """End of a phase: collect what the phase left unreferenced (cycles in HF modules included) and
    hand the caching allocator's free blocks back, so the next phase starts unfragmented."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_precision(gpu_path: bool, no_grad_ckpt: bool) -> tuple[torch.dtype | None, bool]:
    """(weight dtype, gradient checkpointing) of a training run: what CUDA gets, and with
    ``gpu_path`` the same on CPU — bf16 student and teacher, checkpointing, optim.AdamW's
    stochastic rounding — so a CPU test runs every line a GPU run runs. None = load_model's
    default (fp32 on CPU: the toy run's path, unchanged).
    """
    real = torch.cuda.is_available() or gpu_path
    return (torch.bfloat16 if gpu_path else None), real and not no_grad_ckpt


def use_expandable_segments() -> None:
    """On CUDA, ask the caching allocator for expandable segments, before its first allocation (the
    variable is read then): phases of very different shapes (32K-token teacher forwards, 16K-step KV
    caches, the 32 GB of moments) then grow and shrink segments instead of fragmenting fixed blocks.
    A value the user set is kept; on a CPU this does nothing."""
    if torch.cuda.is_available():
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


# The prompt length the fit check plans with (an assumption, not measured: a chat-templated math
# question is a few hundred tokens; 256 is small beside 16K new tokens, so the error is too).
PROMPT_TOKENS = 256


def fit_check(args, name_or_path: str, card_bytes: int | None = None) -> None:
    """Before any weight is loaded: does this run's peak (``phase_peaks``) fit the card?

    Runs on CUDA only (or when a test passes ``card_bytes``); reads just config.json. An
    unreadable config is left to load_model, which says why in one line. ``name_or_path`` is a
    resolved id or folder (generate.MODEL_ALIASES already applied).
    """
    if card_bytes is None:
        if not torch.cuda.is_available() or distributed.active():   # sharded runs divide it by N
            return
        card_bytes = torch.cuda.get_device_properties(0).total_memory
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError):
        return
    peaks = phase_peaks(config, bf16=True, max_new_tokens=args.max_new_tokens, prompt_tokens=PROMPT_TOKENS,
                        gen_batch=args.gen_batch, micro_batch=args.micro_batch,
                        max_teacher_tokens=args.max_teacher_tokens)
    check_fits(peaks, card_bytes)


def paper_preset(**over) -> dict:
    """The paper's run (Qwen3-4B-Instruct-2507 in bf16, 16K new tokens, 32K teacher cap, train.py's
    defaults --gen-batch 4 --micro-batch 1; a ~256-token chat prompt) through ``phase_peaks``."""
    knobs = dict(bf16=True, max_new_tokens=16384, prompt_tokens=256, gen_batch=4, micro_batch=1,
                 max_teacher_tokens=32768) | over
    return phase_peaks(QWEN3_4B, **knobs)


# The public Qwen3-4B-Instruct-2507 architecture (its config.json), so that the figures and the
# device check (bench/gpu.py builds it with random weights) need no download.
QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                max_position_embeddings=262144, rms_norm_eps=1e-6, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0})


if __name__ == "__main__":          # python -m machinery.gpu_memory: the paper preset's figures
    pk = paper_preset()
    print(f"params {pk['params'] / 1e9:.3f} B; KV cache per 16K sequence "
          f"{pk['kv_bytes_per_sequence'] / GIB:.2f} GiB")
    for ph in ("phase1", "phase2"):
        print(ph, {k: (round(v / GIB, 2) if isinstance(v, int) else v) for k, v in pk[ph].items()})
    for name, gib in (("H100 80 GB", 79.6), ("H200", 139.0)):        # total_memory as torch reports it
        print(f"{name} ({gib} GiB): {rollout_capacity(pk, int(gib * GIB))} sequences of 16K decode together "
              f"in Phase 2; usable {HEADROOM * gib:.1f} GiB")
