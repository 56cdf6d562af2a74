"""bench/gpu.py — the prepared device check: does SD-Zero's 4B run fit one GPU, and how long does it
take? (`python -m bench gpu` -> bench/results/gpu.json; `--small`: every part on CPU, for the tests)

SD-Zero (arXiv 2604.12002) runs Phase 1 (§2.1: rollouts, then SRT, eq. 3) and Phase 2 (§2.2, eq. 4:
on-policy rollouts, the frozen teacher's top-64 at a 32K-token reviser sequence, the student's loss
and backward). With no download, this builds the public Qwen3-4B-Instruct-2507 architecture
(gpu_memory.QWEN3_4B) with *random* bf16 weights and measures, through the project's own code:

1. rollouts  — `generate.rollout` at --gen-batch 4, 16 and 64, and transformers' continuous batching
   (`model.generate_batch`), on the same prompts, with responses of mixed lengths: a hook on the LM
   head gives EOS a constant per-step probability 1/mean, so lengths are geometric (mean
   --gen-mean, capped at --gen-tokens), as real answers end at different times;
2. a Phase-2 step at the paper's lengths — a --response-tokens (16K) response, its 2×16K teacher
   sequence, --micro-batch 1 — through revise.phase2_batch, distill.distill_pair (chunked head
   backward) and plumbing.AdamW (bf16 + stochastic rounding), gradient checkpointing on;
3. an SRT step on one sequence of the same teacher length (revise.srt_backward);
4. gpu_memory's predicted peak beside the measured one (CUDA: max_memory_allocated; CPU: the
   process's peak resident memory minus what it held before the models, see ``cpu_peak``);
5. the paper's run in hours on this card, from these per-token costs and the budget arithmetic
   (``estimate_hours``; the mean response length is an assumption, stated in the output).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import time

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

import distill
from distill import phase2_batch
from generate import rollout, set_gradient_checkpointing
from machinery import gpu_memory
from machinery.optim import AdamW
from revise import srt_backward, srt_example

TINY = dict(vocab_size=8192, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=8192,
            rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
PAD, EOS = 0, 2
PHRASE = [11, 12, 13, 14, 15, 16, 17, 18, 11]          # stands in for S(P_r): 9 tokens
# The paper's budget (README "The budget, by the paper's count"; data.planned_budget at the defaults)
PHASE1_GENERATIONS, PHASE2_GENERATIONS, SRT_EXAMPLES = 24_000, 9_088, 6_000 * 3   # 6K traces × 3 epochs
EVAL_GENERATIONS = 3 * 500 * 3       # base, SRT, SD-Zero × 500 questions × (answer, revision, pool revision)


def add_arguments(p):
    p.add_argument("--small", action="store_true", help="tiny config on CPU: every part, mechanics only")
    p.add_argument("--response-tokens", type=int, default=None, help="Phase-2 response length [16384; small 1536]")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--gen-batches", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--gen-tokens", type=int, default=None, help="max new tokens per rollout [768; small 16]")
    p.add_argument("--gen-mean", type=int, default=None, help="mean rollout length [384; small 8]")
    p.add_argument("--mean-length", type=int, default=3700,
                   help="mean response length the hour estimate assumes (paper-scale answers: ~3.7K)")
    p.add_argument("--no-continuous", action="store_true", help="skip model.generate_batch")
    return p


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A real tokenizer with the model's vocabulary size (one word per id), so rollout can decode."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {f"w{i}": i for i in range(vocab_size)} | {"<pad>": PAD, "<eos>": EOS}
    del vocab[f"w{PAD}"], vocab[f"w{EOS}"]
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w1"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def build(cfg: Qwen3Config, dev, dtype, seed: int = 0):
    torch.manual_seed(seed)
    with torch.device(dev):
        model = Qwen3ForCausalLM(cfg).to(dtype)
    model.generation_config = GenerationConfig(eos_token_id=EOS, pad_token_id=PAD)
    return model


@contextlib.contextmanager
def eos_hazard(model, mean: int, temperature: float):
    """Make every sampled step end the answer with probability 1/mean (after temperature): the EOS
    logit is set to τ·(logsumexp(z/τ) − log(mean − 1)), so p(EOS) = 1/mean whatever the others."""
    def hook(_mod, _inp, out):
        z = out.float() / temperature
        out[..., EOS] = (temperature * (z.logsumexp(-1) - math.log(mean - 1))).to(out.dtype)
        return out
    h = model.lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def sync(cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    return time.time()


def rollout_rates(model, tok, args, cuda: bool) -> dict:
    """Generated tokens per second of each engine on the same prompts (mixed lengths)."""
    V, n = model.config.vocab_size, max(args.gen_batches)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(20, V, (args.prompt_tokens,), generator=g).tolist() for _ in range(n)]
    out = {}
    with eos_hazard(model, args.gen_mean, 0.7):
        for b in args.gen_batches:
            ps = prompts[:max(b, 8)]
            t0 = sync(cuda)
            rolls = rollout(model, tok, ps, temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=args.gen_tokens,
                            batch_size=b, seed=b)
            s = sync(cuda) - t0
            toks = sum(r.num_tokens for r in rolls)
            out[f"rollout_b{b}"] = {"prompts": len(ps), "tokens": toks, "seconds": round(s, 2),
                                    "tokens_per_s": round(toks / s, 1),
                                    "mean_len": round(toks / len(ps), 1),
                                    "truncated": sum(not r.finished for r in rolls)}
        if not args.no_continuous:
            gc = GenerationConfig(do_sample=True, temperature=0.7, top_p=1.0, top_k=0, eos_token_id=[EOS],
                                  pad_token_id=PAD, max_new_tokens=args.gen_tokens)
            try:
                model.eval()
                t0 = sync(cuda)
                ps = prompts if cuda else prompts[:4]    # CPU: seconds per step of fixed overhead
                with torch.no_grad():
                    res = model.generate_batch(ps, generation_config=gc, max_new_tokens=args.gen_tokens,
                                               warmup=cuda)          # warm-up captures CUDA graphs
                s = sync(cuda) - t0
                toks = sum(len(r.generated_tokens) for r in res.values())
                out["continuous"] = {"prompts": len(ps), "tokens": toks, "seconds": round(s, 2),
                                     "tokens_per_s": round(toks / s, 1), "mean_len": round(toks / len(ps), 1)}
            except Exception as e:             # a device check reports what failed and carries on
                out["continuous"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return out


def kv_per_token(model, args, cuda: bool) -> float | None:
    """Measured KV-cache bytes per token (CUDA): peak during a fixed-length greedy decode of
    gen-batch 4 minus the memory before, over the tokens held (prompt + new)."""
    if not cuda:
        return None
    x = torch.randint(20, model.config.vocab_size, (4, args.prompt_tokens), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=512,
                       min_new_tokens=512, pad_token_id=PAD, eos_token_id=EOS, use_cache=True)
    return (torch.cuda.max_memory_allocated() - before) / (4 * (args.prompt_tokens + 512))


def phase2_step(student, teacher, opt, args, seed: int) -> dict:
    """One Phase-2 step on a given 16K response: the teacher reads X + Y' + S + Y (≈ 32K tokens)."""
    V, T, g = student.config.vocab_size, args.response_tokens, torch.Generator().manual_seed(seed)
    xs = [torch.randint(20, V, (args.prompt_tokens,), generator=g).tolist() for _ in range(args.micro_batch)]
    ys = [torch.randint(20, V, (T - 1,), generator=g).tolist() + [EOS] for _ in xs]
    b = phase2_batch(xs, ys, [PHRASE] * len(xs), {EOS}, PAD)
    n = len(b["student"]["targets"])
    t0 = sync(args.cuda)
    out = distill.distill_pair(student, teacher, b["student"], b["teacher"], weights=torch.full((n,), 1.0 / n),
                               k=64)
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": float(out["loss"]), "seconds": round(sync(args.cuda) - t0, 2), "scored_tokens": n,
            "teacher_tokens": b["teacher"]["ids"].shape[1]}


def srt_step(model, opt, args, seed: int) -> dict:
    """One SRT step on X + Y_init + S(P_r) + Y_rev of the teacher's length (eq. 3, L_rev + L_gen)."""
    V, T, g = model.config.vocab_size, args.response_tokens, torch.Generator().manual_seed(seed)
    x, yi, yr = (torch.randint(20, V, (m,), generator=g).tolist() for m in (args.prompt_tokens, T - 1, T - 1))
    ex = srt_example(x, yi + [EOS], PHRASE, yr + [EOS], {EOS})
    t0 = sync(args.cuda)
    loss = srt_backward(model, [ex], "joint", PAD, 1)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": loss, "seconds": round(sync(args.cuda) - t0, 2), "tokens": len(ex["input_ids"])}


def cpu_rss() -> tuple[int, int]:
    """(current, peak) resident bytes of this process (Linux /proc)."""
    st = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return tuple(int(st[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))


def reset_cpu_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak-RSS counter to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def estimate_hours(rates: dict, p2: dict, srt: dict, args) -> dict:
    """Hours of the paper's run on this card (computed from measured per-token costs).

      generation  = generations × mean_length / tokens_per_s(engine)
      Phase-2 training = 9,088 × mean_length × (Phase-2 step s / scored token at 16K)
      SRT = 18,000 examples × (prompt + 2·mean_length) × (SRT step s / token at 32K)
    Per-token costs measured at 16K/32K include attention's quadratic part, so at a 3.7K mean they
    are an upper bound on training time. Rollouts at the run's --gen-batch 4 use rollout_b4's rate.
    """
    L = args.mean_length
    out = {"mean_length_assumed": L}
    s_p2 = p2["seconds"] / p2["scored_tokens"]
    s_srt = srt["seconds"] / srt["tokens"]
    for name, r in rates.items():
        if "tokens_per_s" not in r:
            continue
        gen = lambda n: n * L / r["tokens_per_s"] / 3600        # noqa: E731
        p1 = gen(PHASE1_GENERATIONS) + SRT_EXAMPLES * (args.prompt_tokens + 2 * L) * s_srt / 3600
        p2h = gen(PHASE2_GENERATIONS) + PHASE2_GENERATIONS * L * s_p2 / 3600
        out[name] = {"phase1_h": round(p1, 1), "phase2_h": round(p2h, 1), "eval_h": round(gen(EVAL_GENERATIONS), 1),
                     "total_h": round(p1 + p2h + gen(EVAL_GENERATIONS), 1)}
    return out


def bench_gpu(args) -> dict:
    small = args.small
    args.response_tokens = args.response_tokens or (1536 if small else 16384)
    args.gen_tokens = args.gen_tokens or (16 if small else 768)
    args.gen_mean = args.gen_mean or (8 if small else 384)
    if small:
        args.gen_batches = [b for b in args.gen_batches if b <= 16] or [4]
    args.cuda = cuda = torch.cuda.is_available() and not small
    dev, dtype = torch.device("cuda" if cuda else "cpu"), torch.bfloat16
    arch = TINY if small else gpu_memory.QWEN3_4B
    cfg = Qwen3Config(**arch, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None)
    res = {"benchmark": "gpu", "device": torch.cuda.get_device_name(0) if cuda else "cpu",
           "config": "tiny" if small else "Qwen3-4B-Instruct-2507 architecture, random weights",
           "dtype": "bfloat16", "gradient_checkpointing": True, "response_tokens": args.response_tokens,
           "prompt_tokens": args.prompt_tokens, "micro_batch": args.micro_batch}
    t0 = time.time()
    student = build(cfg, dev, dtype)
    tok = word_tokenizer(cfg.vocab_size)
    res["rollouts"] = rollout_rates(student, tok, args, cuda)      # Phase 1: nothing else in memory
    res["kv_bytes_per_token_measured"] = kv_per_token(student, args, cuda)
    # Phase 2: student + teacher + optimizer, one step at the paper's lengths
    teacher = build(cfg, dev, dtype)
    teacher.load_state_dict(student.state_dict())
    teacher.eval().requires_grad_(False)
    student.train()
    set_gradient_checkpointing(student, True)
    opt = AdamW(list(student.parameters()), lr=5e-6, betas=(0.9, 0.999), weight_decay=0.01)
    gpu_memory.free_device_memory()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:       # what the process holds besides the two models' tensors: libraries, Python objects
        reset_cpu_peak()
        base_rss = cpu_rss()[0] - sum(t.numel() * t.element_size() for m in (student, teacher)
                                      for t in [*m.parameters(), *m.buffers()])
    res["phase2_steps"] = [phase2_step(student, teacher, opt, args, seed=s) for s in (1, 2)]
    measured = torch.cuda.max_memory_allocated() if cuda else cpu_rss()[1] - base_rss
    peaks = gpu_memory.phase_peaks(cfg, bf16=True, max_new_tokens=args.response_tokens,
                                   prompt_tokens=args.prompt_tokens, gen_batch=0, micro_batch=args.micro_batch,
                                   max_teacher_tokens=args.prompt_tokens + 2 * args.response_tokens + len(PHRASE),
                                   phrase_tokens=len(PHRASE))
    res["phase2_peak"] = {"predicted_bytes": peaks["phase2"]["peak"], "measured_bytes": measured,
                          "ratio": round(measured / peaks["phase2"]["peak"], 3),
                          "predicted_terms_gib": {k: round(v / 2 ** 30, 3) for k, v in peaks["phase2"].items()
                                                  if isinstance(v, int)},
                          "how": "max_memory_allocated" if cuda else "peak RSS - (RSS before the step - the "
                          "models' tensors) (exact only with MALLOC_MMAP_THRESHOLD_=65536: freed tensors go back "
                          "to the OS)",
                          "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}
    del teacher
    gpu_memory.free_device_memory()
    res["srt_step"] = srt_step(student, opt, args, seed=3)
    res["kv_bytes_per_token_predicted"] = gpu_memory.kv_bytes_per_token(gpu_memory.shape(cfg))
    res["hours"] = estimate_hours(res["rollouts"], res["phase2_steps"][-1], res["srt_step"], args)
    res["paper_preset_predicted_gib"] = {ph: round(gpu_memory.paper_preset()[ph]["peak"] / 2 ** 30, 2)
                                         for ph in ("phase1", "phase2")}
    if cuda:
        card = torch.cuda.get_device_properties(0).total_memory
        res["total_memory_gib"] = round(card / 2 ** 30, 2)
        res["rollout_capacity_16k"] = gpu_memory.rollout_capacity(gpu_memory.paper_preset(), card)
    res["wall_s"] = round(time.time() - t0, 1)
    return res


if __name__ == "__main__":                      # python -m bench.gpu (or python -m bench gpu)
    import json
    a = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args()
    print(json.dumps(bench_gpu(a), indent=1))
