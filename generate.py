"""generate.py — the generator: load a model, build its prompt, sample rollouts as token ids.

SD-Zero (arXiv 2604.12002) uses one set of weights in two roles. This file is the *generator* role
(paper §1: "sees only x, writes a full response"): loading, prompts, sampling, grading the samples:

* ``load_model``      — any Hugging Face causal LM id or local folder; bf16 on CUDA, fp32 on CPU.
* ``prompt_ids``      — X, the chat-templated prompt ending in the assistant-start marker.
* ``rollout``         — batched, left-padded HF ``generate`` that returns the completion **ids as
                         sampled** (Y), never a re-tokenisation of decoded text, plus finished/truncated.
                         ``engine="continuous"``: the same through transformers' continuous
                         batching (``generate_batch``), for rollouts with nothing else in memory.
* ``sample_and_grade``— x -> y ~ π(·|x) -> r(y, a) (reward.py grades): the first step of both phases.

Why ids and not text: Phase 2 scores the *same tokens* the student sampled under the teacher's
context (paper eq. 4). Decoding and re-encoding can merge or split tokens at the boundary, which
silently misaligns the teacher with the student (e.g. "\n\n" merges with the token before it in
Qwen's BPE). Every sequence built downstream (revise.py, distill.py) is therefore an id concatenation.

Why the completion mask comes from the EOS position and not from ``ids != pad``: many chat models use
the same id for pad and end-of-turn, so a pad-based mask deletes the EOS token from the loss and the
model never learns to stop (a bug other trainers have had: docs/findings.md, "Where the code's
choices come from").
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.utils import logging as hf_logging

import reward
from machinery.lm_head import pad

PAPER_MODEL = "Qwen/Qwen3-4B-Instruct-2507"
# The user-facing name "Qwen/Qwen3-4B-Instruct" is not a hub id; the paper's model is the 2507 one.
MODEL_ALIASES = {"Qwen/Qwen3-4B-Instruct": PAPER_MODEL}


class ModelLoadError(RuntimeError):
    """A one-line, user-facing reason why a model could not be loaded."""


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------
def build_messages(question: str, task: str = "math") -> list[dict]:
    """The chat for question x: one user turn, question first, then the task's instruction
    (reward.TASKS: the paper's math instruction for "math").

    No system prompt and no thinking flags: Qwen3-4B-Instruct-2507 is non-thinking only, and its
    template has no thinking switch, so ``enable_thinking`` is never passed.
    """
    return [{"role": "user", "content": f"{question}\n\n{reward.get_task(task).instruction}"}]


def prompt_text(tokenizer, question: str, task: str = "math") -> str:
    """X as text: the chat template applied with the assistant-start marker appended."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelLoadError("this tokenizer has no chat template; SD-Zero needs a chat model "
                             f"(the paper uses {PAPER_MODEL})")
    return tokenizer.apply_chat_template(build_messages(question, task), tokenize=False,
                                         add_generation_prompt=True)


def prompt_ids(tokenizer, question: str, task: str = "math") -> list[int]:
    """X as ids. The template already contains any special tokens, so none are added again."""
    return tokenizer(prompt_text(tokenizer, question, task), add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_gradient_checkpointing(model, enabled: bool) -> None:
    """Recompute activations in backward instead of storing them (the 4B run needs it on one GPU).

    transformers 5 renamed the switch (``activation_checkpointing_enable``); the old name still works
    there with a deprecation warning and is the only one in transformers 4, so try the new one first.
    ``use_reentrant=False`` is the variant that works with inputs that do not require grad.
    """
    kwargs = {"use_reentrant": False}
    if enabled:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        if hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        elif hasattr(model, "gradient_checkpointing_disable"):
            model.gradient_checkpointing_disable()


def load_model(name_or_path: str, *, device: str | None = None, dtype: torch.dtype | None = None,
               gradient_checkpointing: bool = False, attn_implementation: str | None = None,
               quiet: bool = False):
    """Load (model, tokenizer) from a Hugging Face id or a local folder.

    bf16 weights on CUDA (what the paper trained in), fp32 on CPU (bf16 AdamW states are not a
    training recipe, and for models this small fp32 runs as fast as bf16 autocast on a CPU).
    Any failure to find the files becomes one readable line instead of a stack trace.
    """
    if name_or_path in MODEL_ALIASES:
        if not quiet:
            print(f"note: {name_or_path!r} is not a hub id; using the paper's model "
                  f"{MODEL_ALIASES[name_or_path]!r}")
        name_or_path = MODEL_ALIASES[name_or_path]
    device = device or default_device()
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if quiet:
        hf_logging.disable_progress_bar()

    local = os.path.isdir(name_or_path)
    if not local and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise ModelLoadError(f"model folder not found: {name_or_path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        kwargs = {"dtype": dtype}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, ImportError) as e:
        where = "local folder" if local else "Hugging Face id"
        hint = ("" if local else " (no network or HF_HUB_OFFLINE set? download it first with "
                "`huggingface-cli download`)")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"could not load {where} {name_or_path!r}: {first}{hint}. "
                             f"The paper's model is {PAPER_MODEL}.") from None
    # Generation needs left padding; a missing pad token falls back to EOS, which is safe here
    # because completion masks come from the EOS *position* (see rollout), not from ids != pad.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    set_gradient_checkpointing(model, gradient_checkpointing)
    return model, tokenizer


def eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends the assistant turn: the tokenizer's EOS plus the generation config's.

    Qwen3-Instruct-2507 lists both <|im_end|> and <|endoftext|>; stopping on either is "finished".
    """
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    if not ids:
        raise ModelLoadError("the tokenizer has no EOS token; cannot tell finished from truncated")
    return sorted(ids)


def end_of_turn_id(tokenizer) -> int:
    """The token the chat template closes an assistant turn with (Qwen3, SmolLM2: <|im_end|>).

    Used wherever an answer's end has to be *written* rather than sampled (a cleaned revision that
    was re-encoded). Any of ``eos_ids`` stops generation, but only this one is what the model
    emits at the end of a turn: Qwen3's generation config lists <|endoftext|> first (sorted), and
    teaching SRT to end with it would teach the wrong stop token. Found by rendering a two-turn
    chat and taking the first special token after the assistant's text.
    """
    marker = "SDZERO_END_MARKER"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:                  # no template or a template that rejects this chat
        text = ""
    if marker in text:
        tail = tokenizer(text[text.rindex(marker) + len(marker):], add_special_tokens=False)["input_ids"]
        special = set(tokenizer.all_special_ids)
        for i in tail:
            if i in special:
                return int(i)
    if tokenizer.eos_token_id is None:
        raise ModelLoadError("the tokenizer has no EOS token; cannot tell finished from truncated")
    return int(tokenizer.eos_token_id)


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """One sampled completion. ``completion_ids`` is Y exactly as sampled (incl. EOS if finished)."""
    index: int                 # which prompt (position in the list given to ``rollout``)
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str                  # decoded completion, special tokens removed
    finished: bool             # True: emitted EOS / end-of-turn; False: hit max_new_tokens

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)


@contextlib.contextmanager
def inference_mode(model):
    """eval() + use_cache for generation, then restore train() if the model was training.

    Dropout off and a KV cache on is what sampling should see; forgetting to switch back silently
    trains a model in eval mode, so the restore is in a ``finally``.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def sampling(temperature: float, top_p: float, max_new_tokens: int, batch_size: int) -> dict:
    """The sampling arguments of ``rollout``, built in one place (training, baselines, evaluation).

    top_k = 0 switches top-k off explicitly (see ``rollout`` for why nothing is left to defaults).
    """
    return {"temperature": temperature, "top_p": top_p, "top_k": 0, "max_new_tokens": max_new_tokens,
            "batch_size": batch_size}


def training_sampling(args, on_policy: bool = False, synced_gpus: bool = False) -> dict:
    """The sampling of every training rollout, from train.py's knobs (paper: T = 0.7, top-p 1.0,
    16K new tokens): Phase 1, Phase 2, the baselines and the held-out table all use it.

    ``on_policy``: rollouts taken while an optimizer (and a teacher) sit in memory — Phase 2, GRPO,
    SDFT — always use the plain engine; --rollout-engine applies where nothing else is loaded.
    """
    engine = "plain" if on_policy else getattr(args, "rollout_engine", "plain")
    extra = {"synced_gpus": True} if synced_gpus else {}        # see rollout
    return sampling(args.temperature, args.top_p, args.max_new_tokens, args.gen_batch) | {"engine": engine} | extra


ENGINES = ("plain", "continuous")   # --rollout-engine (config.py)


def cut_at_eos(new_ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    """Keep tokens up to and including the first EOS. Whatever follows it is padding.

    This is the only place finished/truncated is decided, and it looks at the EOS *position*:
    with pad == eos a pad-based mask would delete the real EOS as well.
    """
    for i, t in enumerate(new_ids):
        if t in eos:
            return new_ids[: i + 1], True
    return new_ids, False


def rollout(model, tokenizer, prompts: list[list[int]], *, n: int = 1, temperature: float = 0.7,
            top_p: float = 1.0, top_k: int = 0, max_new_tokens: int = 1024, batch_size: int = 32,
            greedy: bool = False, seed: int | None = None, progress: bool = False,
            desc: str = "rollouts", engine: str = "plain", synced_gpus: bool = False) -> list[Rollout]:
    """Sample ``n`` completions for each prompt (prompts given as id lists: X, or X + Y' + S(P_r)).

    Every sampling setting is passed explicitly: otherwise transformers' global ``top_k=50`` and a
    checkpoint's generation_config.json (Qwen ships top_k=20, top_p=0.8) would quietly change the
    distribution we call "on-policy".
    Returns rollouts grouped by prompt: prompt 0's n samples first, then prompt 1's, and so on.
    ``synced_gpus``: under torchrun with an FSDP2 model every forward is a collective, so a rank whose
    samples all ended keeps stepping until every rank's have (HF's synced_gpus, as for ZeRO-3);
    train.py sets it for on-policy rollouts of a sharded model.
    """
    if seed is not None:
        torch.manual_seed(seed)
    eos = set(eos_ids(model, tokenizer))
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    jobs = [(i, p) for i, p in enumerate(prompts) for _ in range(n)]
    sample_kwargs = ({"do_sample": False} if greedy or temperature == 0 else
                     {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p),
                      "top_k": int(top_k)})
    if synced_gpus:
        sample_kwargs["synced_gpus"] = True
    if greedy or temperature == 0:
        # Neutral values so a checkpoint's sampling defaults do not trigger "unused flag" warnings.
        sample_kwargs.update({"temperature": None, "top_p": None, "top_k": None})
    if engine == "continuous":
        return _rollout_continuous(model, tokenizer, jobs, sample_kwargs, max_new_tokens, eos, pad_id)
    if engine != "plain":
        raise ValueError(f"unknown rollout engine {engine!r} (expected one of {ENGINES})")
    out: list[Rollout] = []
    bar = _progress(len(jobs), desc) if progress else None
    with inference_mode(model):
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            ids, mask = (t.to(device) for t in pad([p for _, p in chunk], pad_id, "left"))
            seqs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                  eos_token_id=sorted(eos), pad_token_id=pad_id, use_cache=True,
                                  **sample_kwargs)
            new = seqs[:, ids.shape[1]:].tolist()
            for (i, p), row in zip(chunk, new):
                comp, finished = cut_at_eos(row, eos)
                text = tokenizer.decode(comp, skip_special_tokens=True)
                out.append(Rollout(i, list(p), comp, text, finished))
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return out


def _rollout_continuous(model, tokenizer, jobs, sample_kwargs, max_new_tokens, eos, pad_id) -> list[Rollout]:
    """``rollout`` through transformers' continuous batching: one request per job, scheduled onto a
    paged KV cache, so a finished answer frees its slot for the next prompt at once instead of
    waiting for the longest answer of a static batch. Every sampling setting is written into the
    GenerationConfig (nothing from the checkpoint's), max_new_tokens passed explicitly; ids come back
    as sampled and are cut at the first EOS exactly as the plain path cuts them."""
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=sorted(eos), pad_token_id=pad_id,
                           **{k: v for k, v in sample_kwargs.items() if k != "synced_gpus"})
    if "synced_gpus" in sample_kwargs:
        raise ValueError("--rollout-engine continuous runs on one unsharded model (use plain under torchrun)")
    with inference_mode(model):
        res = model.generate_batch([list(p) for _, p in jobs], generation_config=cfg,
                                   max_new_tokens=max_new_tokens, warmup=torch.cuda.is_available())
    outs = list(res.values())                         # in the order of the inputs (generate_batch reorders)
    if len(outs) != len(jobs) or any(o.error for o in outs):
        raise RuntimeError(f"continuous batching returned {len(outs)} of {len(jobs)} rollouts")
    rolls = []
    for (i, p), o in zip(jobs, outs):
        comp, finished = cut_at_eos(list(o.generated_tokens)[:max_new_tokens], eos)
        rolls.append(Rollout(i, list(p), comp, tokenizer.decode(comp, skip_special_tokens=True), finished))
    return rolls


def sample_and_grade(model, tok, items: list[dict], *, task: str = "math", n: int = 1,
                     phrases=(reward.P_CORRECT, reward.P_WRONG), gen: dict | None = None,
                     progress: bool = False, desc: str = "rollouts"):
    """x -> n rollouts y ~ π(·|x) -> r(y, a): the generator and the verifier, written once for
    Phase 1, Phase 2, the baselines and evaluation. ``phrases``: the control phrases P_r, after the
    last of which reward.py grades.

    Returns (rollouts, rewards), grouped by question (question 0's n samples first).
    """
    xs = [prompt_ids(tok, it["question"], task) for it in items]
    rolls = rollout(model, tok, xs, n=n, progress=progress, desc=desc, **(gen or {}))
    return rolls, reward.grade(task, [r.text for r in rolls], [items[r.index] for r in rolls], phrases)


# Explicit self-revision phrases (Fig. 3, 6): SRT teaches the model to revise inside its answer, and
# Phase 2 should internalise that, so their rate is tracked during training and at evaluation.
DEFAULT_KEYWORDS = ("wait", "let me start over", "let me correct", "let me rephrase",
                    "let me re-check", "let me recheck", "this is wrong", "not correct")

def keyword_rate(texts: list[str], keywords=DEFAULT_KEYWORDS) -> float:
    """Share of responses containing at least one explicit self-revision phrase (case-insensitive,
    whole words, so "awaited" does not count as "wait")."""
    if not texts:
        return 0.0
    pats = [re.compile(r"\b" + re.escape(k.lower()) + r"\b") for k in keywords]
    return sum(any(p.search(t.lower()) for p in pats) for t in texts) / len(texts)


def rollout_metrics(rolls: list[Rollout], rewards: list[float]) -> dict:
    """The per-step numbers every on-policy method logs, counted the same way (paper App. C.2:
    one generated response = one generation); response length and keyword rate are Fig. 6's curves."""
    n_tok = sum(r.num_tokens for r in rolls)
    return {"reward": sum(rewards) / max(len(rewards), 1),
            "response_tokens": n_tok / max(len(rolls), 1),
            "keyword_rate": keyword_rate([r.text for r in rolls]),
            "truncated": sum(not r.finished for r in rolls) / max(len(rolls), 1),
            "new_generations": len(rolls), "new_tokens": n_tok}


def _progress(total: int, desc: str):
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
