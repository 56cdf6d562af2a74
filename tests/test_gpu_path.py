"""The CUDA path on CPU (train.py --gpu-path): bf16 student and teacher, gradient checkpointing,
optim.AdamW's stochastic rounding and the hand-written chunked head backward, together, through
Phase 1, SRT, Phase 2 and a resume; and Phase 2 holding exactly student + teacher + one optimizer."""
import gc
import json

import pytest
import torch
from transformers import PreTrainedModel

import distill
import reward
import train
from distill import teacher_contexts
from generate import load_model, set_gradient_checkpointing
from revise import srt_backward, srt_example


def _write_math(path, n=24):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "question": f"What is {i}+{i + 1}?", "answer": str(2 * i + 1)}) + "\n")
    return str(path)


def _revisions(path, tiny_dir):
    """Phase 1's output format (revisions.jsonl), for --revisions: a random tiny model never writes
    an EOS within 8 tokens, so it would keep no verified revision of its own."""
    from generate import end_of_turn_id, prompt_ids
    from revise import P_CORRECT, P_WRONG
    tok = load_model(tiny_dir, device="cpu", quiet=True)[1]
    eot = end_of_turn_id(tok)
    with open(path, "w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt_ids": prompt_ids(tok, f"What is {i}+1?"), "reward_init": float(i % 2),
                                "phrase": P_CORRECT if i % 2 else P_WRONG,
                                "y_init_ids": tok(f"{i}+1={i}", add_special_tokens=False)["input_ids"] + [eot],
                                "y_rev_ids": tok(f"{i}+1={i + 1}", add_special_tokens=False)["input_ids"] + [eot]})
                    + "\n")
    return str(path)


def _args(tiny_dir, data, runs, name):
    return ["--revisions", _revisions(runs.parent / "revisions.jsonl", tiny_dir), "--model", tiny_dir,
            "--data", data, "--runs-dir", str(runs), "--run-name", name, "--quiet",
            "--threads", "1", "--max-new-tokens", "8", "--gen-batch", "8", "--micro-batch", "2",
            "--batch-questions", "4", "--lr", "1e-3", "--srt-lr", "1e-3", "--save-every", "1", "--no-eval",
            "--gpu-path", "--phase1-questions", "6", "--srt-steps", "2", "--srt-batch-size", "4",
            "--steps", "2"]


def _ours(tmp_path, tiny_dir):
    """Live HF models of this test's run (loaded from its folders), and live optimizers."""
    gc.collect()
    models = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)
              and str(getattr(o.config, "_name_or_path", "")).startswith((str(tmp_path), tiny_dir))]
    inner = {id(sub) for m in models for sub in m.modules() if sub is not m}
    models = [m for m in models if id(m) not in inner]     # Qwen3ForCausalLM, not its Qwen3Model
    params = {id(p) for m in models for p in m.parameters()}
    opts = [o for o in gc.get_objects() if isinstance(o, torch.optim.Optimizer)
            and any(id(p) in params for g in o.param_groups for p in g["params"])]
    return models, opts


@pytest.fixture()
def verifier_says_half(monkeypatch):
    """A random tiny model never solves anything; the verifier calls every other answer right, so
    Phase 1 keeps revisions and Phase 2's teacher reads both control phrases."""
    monkeypatch.setattr(reward, "math_reward_batch", lambda texts, answers, **kw: [float(i % 2 == 0)
                                                                                   for i in range(len(texts))])


def test_cuda_path_on_cpu_phase1_srt_phase2_and_resume(tmp_path, tiny_dir, monkeypatch, verifier_says_half):
    data, runs = _write_math(tmp_path / "math.jsonl"), tmp_path / "runs"
    seen, real_step = [], distill.phase2_step

    def spy(args, student, teacher, tok, items, fail_at=None, **kw):
        models, opts = _ours(tmp_path, tiny_dir)
        seen.append({"models": len(models), "opts": len(opts),
                     "dtypes": {p.dtype for m in models for p in m.parameters()},
                     "moments": {t.dtype for o in opts for st in o.state.values() for k, t in st.items()
                                 if k in ("m", "v")},
                     "ckpt": student.is_activation_checkpointing and not teacher.is_activation_checkpointing,
                     "student_in_models": any(m is student for m in models)})
        if fail_at is not None and len(seen) == fail_at:
            raise RuntimeError("killed mid Phase 2")
        return real_step(args, student, teacher, tok, items, **kw)

    monkeypatch.setattr(distill, "phase2_step", spy)
    assert train.main(_args(tiny_dir, data, runs, "ref")) == 0
    ref = [json.loads(line) for line in open(runs / "ref" / "metrics.jsonl")]
    # Phase 2 holds exactly two copies (student, teacher) and one optimizer: nothing from Phase 1.
    assert [s["models"] for s in seen] == [2, 2] and [s["opts"] for s in seen] == [1, 1]
    assert all(s["student_in_models"] and s["ckpt"] for s in seen)
    assert all(s["dtypes"] == {torch.bfloat16} for s in seen)
    assert seen[1]["moments"] == {torch.float32}, "AdamW's moments stay fp32 beside bf16 weights"
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in ref)
    assert [r["phase"] for r in ref] == ["srt", "srt", "distill", "distill"]

    # Killed inside Phase-2 step 2 (after step 1's checkpoint), then --resume: the same step 2.
    seen.clear()
    monkeypatch.setattr(distill, "phase2_step", lambda *a, **k: spy(*a, **k, fail_at=2))
    with pytest.raises(RuntimeError):
        train.main(_args(tiny_dir, data, runs, "cut"))
    seen.clear()
    monkeypatch.setattr(distill, "phase2_step", spy)
    assert train.main(_args(tiny_dir, data, runs, "cut") + ["--resume"]) == 0
    assert seen[0]["moments"] == {torch.float32}, "--resume puts the fp32 moments back as fp32"
    cut = [json.loads(line) for line in open(runs / "cut" / "metrics.jsonl")]
    assert [r["step"] for r in cut] == [1, 2, 1, 2]
    for a, b in zip(ref, cut):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["phase"] + str(a["step"])
    ck = torch.load(runs / "cut" / "checkpoint.pt", weights_only=False)
    assert {t.dtype for t in ck["model"].values() if t.is_floating_point()} == {torch.bfloat16}
    assert {st[k].dtype for st in ck["optimizer"]["state"].values() for k in ("m", "v")} == {torch.float32}


def _grads(model):
    return {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointed_and_plain_steps_give_the_same_gradients_in_bf16(tiny_dir):
    """Gradient checkpointing recomputes each layer in backward; the gradients must be the ones of
    the plain backward (to bf16 tolerance), for the SRT loss and for the Phase-2 loss."""
    torch.manual_seed(0)
    student = load_model(tiny_dir, device="cpu", dtype=torch.bfloat16, quiet=True)[0]
    teacher = load_model(tiny_dir, device="cpu", dtype=torch.bfloat16, quiet=True)[0].requires_grad_(False)
    student.train()
    V = student.config.vocab_size
    g = torch.Generator().manual_seed(0)
    x, yi, yr = (torch.randint(5, V, (m,), generator=g).tolist() for m in (12, 20, 24))
    srt_ex = srt_example(x, yi, [7, 8, 9], yr, {0})
    xs, ys = [x, x[:7]], [yi, yr]
    tcs = teacher_contexts(xs, ys, [[7, 8, 9]] * 2, {0})
    n = sum(map(len, ys))
    out = {}
    for ckpt in (False, True):
        set_gradient_checkpointing(student, ckpt)
        srt_backward(student, [srt_ex], "joint", 0, 1)
        gs = _grads(student)
        student.zero_grad(set_to_none=True)
        distill.distill_batch(student, teacher, xs, tcs, ys, 0, weights=torch.full((n,), 1.0 / n), micro_batch=2)
        out[ckpt] = (gs, _grads(student))
        student.zero_grad(set_to_none=True)
    for plain, ck in zip(out[False], out[True]):
        assert plain.keys() == ck.keys() and len(plain) == len(list(student.parameters()))
        for name in plain:
            scale = plain[name].abs().max().item() + 1e-12
            torch.testing.assert_close(ck[name], plain[name], rtol=1.6e-2, atol=1e-2 * scale, msg=name)
