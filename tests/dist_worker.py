"""Phase-2 steps (LM head tied and untied) and an SRT step on a fixed global batch, with or without torchrun.

    python tests/dist_worker.py MODEL_DIR OUT.pt                                 # 1 process: the reference
    python -m torch.distributed.run --nproc_per_node=2 tests/dist_worker.py MODEL_DIR OUT.pt   # 2 ranks

Both go through the code train.py runs: distill.distill_batch with the whole batch's token weights
(distill.batch_token_weights counted with distributed.all_sum) / revise.srt_backward with the whole
batch's token counts, each on this rank's share (distributed.split), optim.step_optimizer, and,
under torchrun, FSDP2 shards (distributed.shard). Rank 0 (or the single process) saves losses,
gradient norms, the full updated
weights and the combined rollout metrics to OUT.pt; tests/test_distributed.py compares the two.
"""
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(1)

from distill import batch_token_weights, distill_batch  # noqa: E402
from generate import Rollout, eos_ids, load_model, rollout_metrics  # noqa: E402
from machinery import distributed  # noqa: E402
from machinery.optim import make_optimizer, step_optimizer  # noqa: E402
from revise import Phrases, phrase_ids, reviser_prompt, srt_backward, srt_example, srt_token_counts  # noqa: E402


def batch(tok, eos, n=8, seed=0):
    """n (X, Y, S) triples of varied lengths; Y number 3 is empty (a rank may hold no token)."""
    rng = random.Random(seed)
    ids = lambda k: [rng.randrange(10, len(tok)) for _ in range(k)]  # noqa: E731
    xs = [ids(rng.randint(3, 9)) for _ in range(n)]
    ys = [ids(0 if i == 3 else rng.randint(2, 12)) + [sorted(eos)[0]] * (i != 3) for i in range(n)]
    ss = [phrase_ids(tok, Phrases().pick(i % 2)) for i in range(n)]
    return xs, ys, ss


def full_weights(model) -> dict:
    if not distributed.active():
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def largest_change(before: dict, after: dict) -> float:
    """max |w_after - w_before| over all weights (0 on ranks > 0, which hold no full dict)."""
    return max((float((after[k] - before[k]).abs().max()) for k in before), default=0.0)


def untie(model):
    """Give the LM head a weight of its own (Qwen3-8B's layout; the tiny model, like Qwen3-4B, ties
    it to the embedding), so both layouts of the hand-written head gradient are checked."""
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    return model


def phase2_step(model_dir: str, tied: bool) -> dict:
    """Student = the tiny model, teacher = the same weights nudged (a frozen, different reviser)."""
    student, tok = load_model(model_dir, device="cpu", quiet=True)
    teacher, _ = load_model(model_dir, device="cpu", quiet=True)
    if not tied:
        student, teacher = untie(student), untie(teacher)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    teacher.eval().requires_grad_(False)
    eos = eos_ids(student, tok)
    xs, ys, ss = batch(tok, eos)
    ts = [reviser_prompt(x, y, s, eos) for x, y, s in zip(xs, ys, ss)]
    distributed.shard(teacher)
    student.train()
    distributed.shard(student)
    opt = make_optimizer(student, 1e-3, 0.01, (0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    w0 = full_weights(student)
    mine = distributed.split(list(range(len(ys))), "batch")
    my_ys = [ys[i] for i in mine]
    out = distill_batch(student, teacher, [xs[i] for i in mine], [ts[i] for i in mine], my_ys, tok.pad_token_id,
                        weights=batch_token_weights(my_ys, "token_mean", distributed.all_sum), micro_batch=1, k=16)
    m = {"loss": out["loss"], "kl_per_token": float(out["per_token_kl"].mean()) if len(out["per_token_kl"]) else 0.0}
    # the per-step metrics as distill.phase2_step builds them, combined over ranks as train.phase2 does
    rolls = [Rollout(i, xs[i], ys[i], "", i % 3 != 0) for i in mine]
    m = distributed.reduce_metrics({**m, **rollout_metrics(rolls, [float(i % 2) for i in mine]),
                                    "scored_tokens": sum(len(ys[i]) for i in mine)})
    norm, ok = step_optimizer(student, opt, sched, clip=0.5)
    out = {"loss": m["loss"], "metrics": m, "grad_norm": norm, "ok": ok, "weights": full_weights(student)}
    out["moved"] = largest_change(w0, out["weights"])
    return out


def srt_step(model_dir: str) -> dict:
    """One joint L_rev + L_gen step on the same ids laid out as revision examples."""
    model, tok = load_model(model_dir, device="cpu", quiet=True)
    eos = eos_ids(model, tok)
    xs, ys, ss = batch(tok, eos)
    model.train()
    distributed.shard(model)
    opt = make_optimizer(model, 1e-3, 1e-4, (0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    w0 = full_weights(model)
    examples = [srt_example(x, y or [sorted(eos)[0]], s, list(reversed(y)), eos)
                for x, y, s in zip(xs, ys, ss)]
    share = distributed.split(examples, "SRT batch")           # as train.srt_loop does
    counts = distributed.all_sum(srt_token_counts(share))
    loss = distributed.all_sum(srt_backward(model, share, "joint", tok.pad_token_id, 1, counts))
    norm, ok = step_optimizer(model, opt, sched, clip=0.5)
    out = {"loss": loss, "grad_norm": norm, "ok": ok, "weights": full_weights(model)}
    out["moved"] = largest_change(w0, out["weights"])
    return out


def run(model_dir: str) -> dict:
    distributed.setup()
    return {"phase2": phase2_step(model_dir, tied=True), "phase2_untied": phase2_step(model_dir, tied=False),
            "srt": srt_step(model_dir)}


if __name__ == "__main__":
    result = run(sys.argv[1])
    if distributed.is_main():
        torch.save(result, sys.argv[2])
    distributed.barrier()
