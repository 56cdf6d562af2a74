"""machinery/distributed.py — train.py on several GPUs: torchrun processes, FSDP2 shards, DCP checkpoints.

    torchrun --nproc_per_node=4 train.py --model Qwen/Qwen3-4B-Instruct-2507     # docs/scaling.md: "Several GPUs"

Why: one GPU holds a 4B model, its teacher and its AdamW state, but not an 8B one, and 16K-token
rollouts make generation the bottleneck. More GPUs help both if the work is split the plain
data-parallel way, with PyTorch's own machinery and no communication layer of our own:

* ``torchrun`` starts one process per GPU and sets RANK / WORLD_SIZE / LOCAL_RANK; ``setup`` joins
  them in a process group (NCCL on GPUs, gloo on CPU, which is what the tests use).
* FSDP2 (``torch.distributed.fsdp.fully_shard``) shards weights, gradients and optimizer state:
  every parameter becomes a DTensor of which each rank holds 1/N; each decoder layer is gathered
  just before its forward/backward and freed after (``shard``). The frozen teacher is sharded the
  same way and has no optimizer state at all.
* ``torch.distributed.checkpoint`` (DCP) writes each rank's shards in parallel (``save``/``restore``);
  the Hugging Face folders are gathered to full tensors and written by rank 0 (``save_hf``).

What each rank does: revise.py and distill.py are single-process code; train.py's loops, in lines
marked ``# distributed:``, hand them this rank's share of each batch (``split``) and a counter that
turns a local token count into the GLOBAL one (``all_sum``), so every rank back-propagates its tokens
weighted by 1/(global token count); FSDP2 then SUMS the gradients over ranks (``shard`` sets the
divide factor to 1), so N ranks apply the update one process would on the same global batch, up to
the order of float sums (tests/test_distributed.py checks weights and loss). The LM head, whose
gradient lm_head.py writes by hand, is kept correct by running the body through the FSDP root
(``body_forward``, ``zero_head_grads``). Rollouts stay HF generate, one per rank (docs/scaling.md:
what does not scale). Metrics and generation budgets are combined over ranks (``reduce_metrics``,
``gather_examples``), and only rank 0 writes logs, tables and HF folders (``on_main``, ``main_first``).

Floor: this file imports torch and nothing of ours. What it needs from the run machinery it is
handed: the run folder object (for its paths and its checkpoint writer) and this rank's RNG state.

Without torchrun (WORLD_SIZE unset or 1) ``active()`` is False, every function here is the
identity or is never called, and the single-process path runs exactly as before.
"""
from __future__ import annotations

import datetime
import os
import shutil
import warnings

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

# Non-zero ranks wait at the next collective while rank 0 alone evaluates the held-out table
# (docs/scaling.md: what does not scale), so the default 10-30 minute timeout would kill a real run.
TIMEOUT = datetime.timedelta(hours=6)


# --------------------------------------------------------------------------------------------
# Who am I
# --------------------------------------------------------------------------------------------
def active() -> bool:
    """True under torchrun with more than one process (and after ``setup``)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 writes metrics, tables, checkpoints' metadata and HF folders; the others only compute."""
    return rank() == 0


def setup() -> None:
    """Join the torchrun process group (no-op without torchrun). Called first thing in train.main."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        # "cuda" without an index then means this rank's GPU everywhere (load_model, .to("cuda")).
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)


def barrier() -> None:
    if active():
        dist.barrier()


def on_main(fn) -> None:
    """fn() on rank 0 alone (writing a file every rank reads next); the others wait until it is done."""
    if is_main():
        fn()
    barrier()


def main_first(fn):
    """fn() on rank 0, then on every other rank: rank 0 builds and caches (the toy world), the
    others then find the cache instead of building it N times at once. Returns fn()'s value."""
    out = None
    for turn in (True, False):
        if is_main() == turn:
            out = fn()
        barrier()
    return out


# --------------------------------------------------------------------------------------------
# Splitting work and adding up what came back
# --------------------------------------------------------------------------------------------
def split(items: list, what: str = "batch") -> list:
    """This rank's share of a batch: items rank, rank + N, rank + 2N, ...

    Sharded forwards are collectives, so every rank must run the same number of micro-batches and
    generate() calls: training batches must split evenly. Phase 1 and RFT collection generate with
    the unsharded model, so any split will do there (what=None).
    """
    if not active():
        return items
    if what and len(items) % world():
        raise SystemExit(f"error: the {what} of {len(items)} does not split over {world()} ranks; "
                         f"make it a multiple of {world()}")
    return items[rank()::world()]


def all_sum(values):
    """Sum a number (or a list of numbers) over ranks; float64 so token counts stay exact."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t)                                  # (NCCL reduces GPU tensors only)
    out = t.tolist()
    return type(values)(out) if isinstance(values, list) else (int(out) if isinstance(values, int) else out)


def all_gather(obj) -> list:
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


# How each per-step number of a rank combines with the others' (distill/generate/train metrics).
SUMMED = ("loss", "new_generations", "new_tokens", "scored_tokens")      # parts of a global total
PER_ROLLOUT = ("reward", "truncated", "response_tokens", "keyword_rate")  # means over rollouts
PER_TOKEN = ("kl_per_token",)                                            # means over scored tokens


def reduce_metrics(m: dict) -> dict:
    """One step's metrics as one process would have logged them for the whole global batch."""
    if not active():
        return m
    parts = all_gather(m)
    out = dict(m)
    for key in SUMMED:
        if key in m:
            out[key] = sum(p[key] for p in parts)
    n_roll = [p["new_generations"] for p in parts]
    for key in PER_ROLLOUT:
        if key in m:
            out[key] = sum(p[key] * n for p, n in zip(parts, n_roll)) / max(sum(n_roll), 1)
    n_tok = [p.get("scored_tokens", p["new_tokens"]) for p in parts]
    for key in PER_TOKEN:
        if m.get(key) is not None:
            out[key] = sum(p[key] * n for p, n in zip(parts, n_tok)) / max(sum(n_tok), 1)
    return out


def gather_examples(rows: list, stats: dict) -> tuple[list, dict]:
    """Every rank's collected rows (in rank order) and the sum of every count, on every rank."""
    if not active():
        return rows, stats
    parts = all_gather((rows, stats))
    return [r for p, _ in parts for r in p], {k: sum(s[k] for _, s in parts) for k in stats}



# --------------------------------------------------------------------------------------------
# FSDP2
# --------------------------------------------------------------------------------------------
def sharded(model) -> bool:
    """True for a model that ``shard`` wrapped (only ever under torchrun)."""
    return active() and isinstance(model, FSDPModule)


def shard(model):
    """fully_shard each decoder layer, then the whole model (the root: embeddings, final norm, LM
    head, tied or not). In place; returns the model. Identity without torchrun.

    Gradients: FSDP2's reduce-scatter divides by N by default (an average). Our per-token weights
    are already global (train.py passes global token counts), so the ranks' gradients must be
    SUMMED: divide factor 1, sent as ReduceOp.SUM (torch 2.13 would otherwise use NCCL's
    PREMUL_SUM). The optimizer built after this sees only DTensor shards (optim.AdamW works on the
    local shard: its update is elementwise).
    """
    if not active() or sharded(model):
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (world(),))
    layers = model.get_decoder().layers
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for m in [*layers, model]:
        m.set_gradient_divide_factor(1.0)             # sum, not mean, over ranks
        m.set_force_sum_reduction_for_comms(True)     # as a plain SUM (gloo has no PREMUL_SUM)
    return model


def local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (a view: in-place ops on it update the DTensor), else t itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def body_forward(model, **kwargs) -> torch.Tensor:
    """lm_head.final_hidden for an FSDP2 model: go through the ROOT module's forward.

    Calling the backbone directly (model.model) would skip the root's hooks: its parameters
    (embeddings, norm, LM head) would stay sharded and their gradients would never be reduced.
    Through the root, they are gathered for the forward and kept (FSDP2 does not reshard the root
    after forward), so the LM head that lm_head.chunked_head_backward multiplies by hand is the full
    weight, and the gradient it writes into W.grad is reduce-scattered with the embedding gradient
    when the body's backward ends. logits_to_keep=1 keeps HF from computing [B, L, V] logits.
    """
    with warnings.catch_warnings():
        # FSDP2 warns that an output is a view (in-place ops on it would skip its hooks); we only
        # index it, which copies.
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
        out = model(**kwargs, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1]                      # = last_hidden_state, after the final norm


def zero_head_grads(model, *params) -> None:
    """A sharded body must run its backward on every rank (its hooks reduce-scatter the gradients,
    the hand-written LM-head gradient included), even on a rank with no scored token; that rank
    also needs a (zero) gradient for an untied head, or it would reduce one gradient fewer than the
    others and the collectives would hang. Identity for an unsharded model."""
    if not sharded(model):
        return
    for t in params:
        if t is not None and t.requires_grad and t.grad is None:
            t.grad = torch.zeros_like(t)


# --------------------------------------------------------------------------------------------
# Checkpoints: DCP for the shards, checkpoint.pt (rank 0) for everything else
# --------------------------------------------------------------------------------------------
def _state(model, opt):
    from torch.distributed.checkpoint.state_dict import get_state_dict
    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "optimizer": osd}


def save(run, phase: str, step: int, model, opt, sched, last: dict, extra: dict, rng: dict) -> None:
    """Run.save under torchrun. Each rank writes its shards into checkpoint.dcp/<phase>-<step>/;
    then rank 0 atomically replaces checkpoint.pt (``run.write_checkpoint``), which names that
    folder and holds the schedule, every rank's RNG state (``rng`` is this rank's) and the metrics
    record. A kill -9 at any moment leaves checkpoint.pt pointing at a complete folder (the
    previous one is deleted only after the switch)."""
    import torch.distributed.checkpoint as dcp

    name = os.path.join("checkpoint.dcp", f"{phase}-{step:07d}")
    if is_main():
        shutil.rmtree(run.path(name), ignore_errors=True)     # a half-written one from a killed run
    barrier()
    state = _state(model, opt)
    shards = ["teacher"] if "teacher" in extra else []    # the synced teacher's weights (other extras are plain)
    dcp.save({**state, **{k: extra[k] for k in shards}}, checkpoint_id=run.path(name))
    rngs = all_gather(rng)
    if is_main():
        plain = {k: v for k, v in extra.items() if k not in shards}
        run.write_checkpoint({"phase": phase, "step": step, "dcp": name, "dcp_extra": shards, "world": world(),
                              "scheduler": sched.state_dict(), "rng": rngs, "last": last, **plain})
        for old in os.listdir(run.path("checkpoint.dcp")):
            if os.path.join("checkpoint.dcp", old) != name:
                shutil.rmtree(run.path(os.path.join("checkpoint.dcp", old)), ignore_errors=True)
    barrier()


def restore(run, phase: str, model, opt, sched) -> dict:
    """Run.restore under torchrun: shards back from DCP. Returns the checkpoint with "rng" set to
    this rank's RNG state, which Run.restore puts back last."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    saved = run.ckpt
    if saved.get("world", 1) != world() or "dcp" not in saved:
        raise SystemExit(f"error: {run.path('checkpoint.pt')} was written by {saved.get('world', 1)} "
                         f"process(es); resume it with the same number (now {world()})")
    state = _state(model, opt)
    for key in saved["dcp_extra"]:                   # the teacher has the student's layout
        state[key] = {k: torch.empty_like(v) for k, v in state["model"].items()}
    dcp.load(state, checkpoint_id=run.path(saved["dcp"]))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    return {**saved, "rng": saved["rng"][rank()], **{k: state[k] for k in saved["dcp_extra"]}}


def save_hf(run, model, tok, name: str) -> str:
    """Run.save_hf under torchrun: gather full tensors to CPU (a collective), rank 0 writes."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    path = run.path(name)
    if is_main():
        tmp = path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=sd)
        tok.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    barrier()                          # every rank may load the folder next (Phase 2 starts from srt/)
    return path
