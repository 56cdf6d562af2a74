"""bench/gpu.py — does Phase 2 of SD-Zero fit Qwen3-4B on one GPU? (`python -m bench gpu`)

A prepared check for the single-GPU claim in the README, with no download: it builds a model with
the public Qwen3-4B-Instruct-2507 architecture (V = 151,936, hidden 2,560, 36 layers, 32 query /
8 KV heads of 128, tied embeddings) and *random* bf16 weights, plus a frozen teacher copy, and runs
real Phase-2 steps through the project's own code path:

    rollouts (HF generate, exactly --response-tokens new tokens per sequence)
    -> revise.phase2_batch (X + Y' + S(P_r) + Y)  -> distill.distill_pair (teacher top-64 under
    no_grad, chunked student loss + backward)    -> plumbing.AdamW (bf16 + stochastic rounding)

with gradient checkpointing on. It reports peak GPU memory, step time and generation tokens/s as
JSON. `--small` runs the same code with a tiny config on CPU (what the tests use).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

import distill
from generate import set_gradient_checkpointing
from plumbing import AdamW
from revise import phase2_batch

QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0})
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
            rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def add_arguments(p):
    p.add_argument("--small", action="store_true", help="tiny config on CPU (mechanics only)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--sequences", type=int, default=2, help="responses per step")
    p.add_argument("--response-tokens", type=int, default=2048)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=1)
    return p


def bench_gpu(args) -> dict:

    cuda = torch.cuda.is_available() and not args.small
    dev = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = Qwen3Config(**(TINY if args.small else QWEN3_4B), pad_token_id=0, eos_token_id=2,
                      bos_token_id=None)
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device(dev):
        student = Qwen3ForCausalLM(cfg).to(dtype)
        teacher = Qwen3ForCausalLM(cfg).to(dtype)
    teacher.load_state_dict(student.state_dict())          # the frozen copy Phase 2 starts from
    teacher.eval().requires_grad_(False)
    set_gradient_checkpointing(student, True)
    build_s = time.time() - t0
    opt = AdamW([p for p in student.parameters()], lr=5e-6, betas=(0.9, 0.999), weight_decay=0.01)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    n_params = sum(p.numel() for p in student.parameters())
    V, T, B = cfg.vocab_size, args.response_tokens, args.sequences
    steps = []
    for step in range(args.steps):
        x = torch.randint(3, V, (B, args.prompt_tokens), device=dev)
        t_gen = time.time()
        student.eval()
        with torch.no_grad():
            seqs = student.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True,
                                    temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=T,
                                    min_new_tokens=T, pad_token_id=0, eos_token_id=2, use_cache=True)
        student.train()
        if cuda:
            torch.cuda.synchronize()
        gen_s = time.time() - t_gen
        xs = [r.tolist() for r in x.cpu()]
        ys = [r.tolist() for r in seqs[:, args.prompt_tokens:].cpu()]
        ss = [[11, 12, 13, 14, 15, 16, 17, 18, 11] for _ in ys]            # stands in for S(P_r)
        t_train = time.time()
        loss = 0.0
        n_all = sum(len(y) for y in ys)
        for s in range(0, B, args.micro_batch):
            sl = slice(s, s + args.micro_batch)
            b = phase2_batch(xs[sl], ys[sl], ss[sl], {2}, 0)
            n = len(b["student"]["targets"])
            out = distill.distill_pair(student, teacher, b["student"], b["teacher"],
                                       weights=torch.full((n,), 1.0 / n_all), k=64)
            loss += float(out["loss"])
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        train_s = time.time() - t_train
        steps.append({"step": step + 1, "loss": loss, "generate_s": round(gen_s, 2),
                      "gen_tokens_per_s": round(B * T / gen_s, 1), "train_s": round(train_s, 2),
                      "step_s": round(gen_s + train_s, 2)})
        print(json.dumps(steps[-1]), flush=True)
    res = {"benchmark": "gpu", "device": torch.cuda.get_device_name(0) if cuda else "cpu",
           "config": "tiny" if args.small else "Qwen3-4B architecture, random weights",
           "params": n_params, "dtype": str(dtype), "gradient_checkpointing": True,
           "sequences_per_step": B, "response_tokens": T, "prompt_tokens": args.prompt_tokens,
           "teacher_tokens_per_sequence": args.prompt_tokens + 2 * T + 9, "micro_batch": args.micro_batch,
           "build_s": round(build_s, 1), "steps": steps}
    if cuda:
        res["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        res["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 2)
        res["total_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 2)
    return res


if __name__ == "__main__":                      # python -m bench.gpu (or python -m bench gpu)
    a = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args()
    print(json.dumps(bench_gpu(a), indent=1))
