"""machinery/ — what the six files of SD-Zero need to run for real, and none of it is the paper.

A reader of the paper can skip this folder: generate.py, revise.py, reward.py, distill.py, train.py
and evaluate.py (with config.py, data.py, toy.py and baselines.py beside them) are the method.
What is here keeps a run correct, fast and safe:

    repro.py        the CPU-kernel pin that makes the toy table the same on every x86-64 machine, and
                    OpenMP threads that sleep rather than spin when cores are shared
    lm_head.py      token losses without [B, L, V] logits: the LM head at chosen rows, chunk by chunk
    run.py          the run folder: config, metrics, checkpoints, exact resume, RNG state
    optim.py        AdamW that trains bf16 weights, the schedules, gradient clipping, bad-step guard
    gpu_memory.py   the memory model of a run and the fit check before anything is loaded
    distributed.py  torchrun: FSDP2 shards, splitting batches, global token counts, DCP checkpoints
    report.py       report.html (training curves) and the self-localisation heat map
    tracking.py     live curves: --report-to trackio / wandb / tensorboard, each optional

This file imports nothing, so ``from machinery import repro`` can run before torch is imported.
"""
