"""baselines.py: GRPO advantages and clipping vs slow references, RFT filtering, equal budget
accounting across methods, and one tiny end-to-end run per method."""
import json
import math

import pytest
import torch

import baselines
import config
import data
import generate
import reward
from generate import Rollout
from revise import Phrases


def slow_advantages(rewards, n, eps=1e-6):
    out = []
    for g in range(0, len(rewards), n):
        grp = rewards[g:g + n]
        mean = sum(grp) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in grp) / (n - 1)) if n > 1 else 0.0
        out += [(r - mean) / (std + eps) for r in grp]
    return out


@pytest.mark.parametrize("rewards,n", [([1, 0, 0, 1, 1, 1, 1, 1], 4), ([0, 1, 0, 0, 0, 0], 3),
                                        ([1, 0], 2), ([1, 1, 0, 0, 1, 0], 1)])
def test_group_advantages_match_slow_reference(rewards, n):
    got = baselines.group_advantages(torch.tensor(rewards, dtype=torch.float32), n).tolist()
    assert got == pytest.approx(slow_advantages(rewards, n), abs=1e-5)


def test_constant_group_gets_zero_advantage():
    assert baselines.group_advantages(torch.tensor([1.0, 1, 1, 1]), 4).abs().max() == 0


def test_clipped_surrogate_matches_definition():
    torch.manual_seed(0)
    logp, old = torch.randn(50) * 0.3, torch.randn(50) * 0.3
    adv = torch.randn(50)
    got = baselines.clipped_pg_loss(logp, old, adv)
    for i in range(50):
        r = math.exp(logp[i] - old[i])
        clipped = min(max(r, 0.8), 1.28)
        want = -min(r * adv[i].item(), clipped * adv[i].item())
        assert got[i].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    # On-policy (old = logp detached): value is −A, gradient is −A·∇logp (the policy gradient).
    lp = torch.randn(5, requires_grad=True)
    a = torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0])
    baselines.clipped_pg_loss(lp, lp.detach(), a).sum().backward()
    assert torch.allclose(lp.grad, -a)


def test_rft_keeps_only_verified_unique_responses(tiny, monkeypatch):
    model, tok = tiny
    items = [{"question": "What is 1+1?", "answer": "2"}, {"question": "What is 2+2?", "answer": "4"}]
    texts = {0: ["\\boxed{2}", "\\boxed{2}", "\\boxed{3}"], 1: ["\\boxed{5}", "\\boxed{4}", "\\boxed{6}"]}

    def fake_rollout(m, t, prompts, *, n=1, **kw):
        out = []
        for i, p in enumerate(prompts):
            for x in texts[i][:n]:
                out.append(Rollout(i, list(p), t(x, add_special_tokens=False)["input_ids"] + [t.eos_token_id],
                                   x, True))
        return out

    monkeypatch.setattr(generate, "rollout", fake_rollout)
    ex, st = baselines.rft_collect(model, tok, items, n=3)
    assert st["samples"] == 6 and st["correct"] == 3 and st["kept"] == 2     # duplicate dropped
    for e in ex:
        assert e["gen_mask"].index(1) == len(e["input_ids"]) - sum(e["gen_mask"])
        assert e["input_ids"][-1] == tok.eos_token_id


def test_sdft_teacher_sees_demo_student_does_not(tiny):
    _, tok = tiny
    ids = baselines.sdft_teacher_prompt(tok, "What is 2+3?", "2+3=5 \\boxed{5}")
    text = tok.decode(ids)
    assert "\\boxed{5}" in text and "What is 2+3?" in text and text.endswith("assistant\n")
    ids = baselines.sdft_teacher_prompt(tok, "What is 2+3?", "2+3=5 \\boxed{5}", context="assistant")
    text = tok.decode(ids)
    assert text.endswith("assistant\n2+3=5 \\boxed{5}\n\nLet me rephrase the above solution.\n\n")
    with pytest.raises(ValueError):
        baselines.sdft_teacher_prompt(tok, "q", "d", context="system")


def _data(tmp_path, n=16):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": str(i + 1),
                                     "solution": f"{i}+1={i + 1} \\boxed{{{i + 1}}}"}) + "\n"
                         for i in range(n)))
    return str(p)


@pytest.mark.parametrize("method", ["rft", "grpo", "sdft", "sft"])
def test_each_method_runs_and_accounts_budget(method, tiny_dir, tmp_path, monkeypatch):
    """Same budget in, same accounting out: every method logs generations == budget spent (SFT: none).
    GRPO runs 2 policy updates per rollout batch through train.phase2 (4 optimizer steps in all)."""
    if method == "rft":
        # A random tiny model never answers right; let one sample per question "pass" so the SFT
        # step runs (the verifier itself is tested in test_reward_*).
        monkeypatch.setattr(reward, "grade", lambda task, texts, items, *a, **kw: [1.0] * len(texts))
    budget = 32
    args = ["--model", tiny_dir, "--data", _data(tmp_path), "--runs-dir", str(tmp_path / "runs"),
            "--quiet", "--threads", "1", "--max-new-tokens", "6", "--batch-questions", "4",
            "--micro-batch", "4", "--no-eval", "--budget", str(budget),
            "--grpo-n", "2", "--grpo-batch-questions", "4", "--grpo-updates", "2", "--srt-steps", "2",
            "--srt-batch-size", "4", "--demo", "solution", "--run-name", method]
    steps = []
    if method == "grpo":
        import machinery.optim
        import train
        real = machinery.optim.step_optimizer
        monkeypatch.setattr(train, "step_optimizer", lambda *a, **kw: steps.append(1) or real(*a, **kw))
    assert baselines.main([method] + args) == 0
    recs = [json.loads(line) for line in open(tmp_path / "runs" / method / "metrics.jsonl")]
    assert recs and all(r["method"] == method for r in recs)
    assert recs[-1]["generations"] == (0 if method == "sft" else budget)
    assert (recs[-1]["generated_tokens"] > 0) == (method != "sft")
    assert (tmp_path / "runs" / method / "final" / "config.json").exists()
    if method == "grpo":      # 2 rollout batches of 8 questions x 2 rollouts, each 2 updates
        assert len(recs) == 2 and len(steps) == 4 and all(math.isfinite(r["loss"]) for r in recs)


def test_sft_examples_learn_the_demonstration_only(tiny):
    _, tok = tiny
    rows = [{"question": "What is 2+3?", "answer": "5", "solution": "2+3=5 \\boxed{5}"}]
    (e,) = baselines.sft_examples(tok, rows, lambda item: item["solution"], "math")
    n = sum(e["gen_mask"])
    assert e["gen_mask"] == e["rev_mask"] and e["gen_mask"][-n:] == [1] * n and sum(e["gen_mask"][:-n]) == 0
    assert tok.decode(e["input_ids"][-n:]).startswith("2+3=5 \\boxed{5}")
    assert e["input_ids"][-1] == generate.end_of_turn_id(tok)


def test_demo_flag_picks_r1_solution_or_answer():
    """--demo r1 (paper Table 1: the R1 trace data.paper_math picked), solution, answer (Table 8)."""
    item = {"id": "q", "question": "What is 2+3?", "answer": "5", "solution": "sol", "r1": "<think>..</think> 5"}
    real = config.parse(["--model", "x"])
    assert real.demo == "r1" and baselines.demo_function(real)(item) == item["r1"]
    assert baselines.demo_function(config.parse(["--model", "x", "--demo", "solution"]))(item) == "sol"
    answer = baselines.demo_function(config.parse(["--model", "x", "--demo", "answer"]))(item)
    assert answer == "The final answer is \\boxed{5}." and reward.grade("math", [answer], [item])[0] == 1.0
    with pytest.raises(SystemExit, match="--demo r1"):
        baselines.demo_function(real)({**item, "r1": ""})
    import toy  # the toy: a worked solution stands in for R1's
    q = data.read_jsonl(toy.build_toy(quiet=True)["train"])[0]
    assert baselines.demo_function(config.parse([]))(q) == toy.solve(q["question"])
    assert reward.grade("math", [toy.solve(q["question"])], [q])[0] == 1.0


@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_toy_sft_and_sdft_run_as_bench_table_runs_them(method, tmp_path):
    """bench/table.py's rows SFT and SDFT on the toy world, the way it calls them, at a tiny budget."""
    runs = tmp_path / "runs"
    args = [method, "--runs-dir", str(runs), "--run-name", method, "--quiet", "--eval-k", "1", "--threads", "1",
            "--seed", "0", "--budget", "16", "--limit", "16", "--srt-steps", "2", "--srt-batch-size", "8",
            "--batch-questions", "8", "--eval-questions", "8"]
    assert baselines.main(args) == 0
    ev = json.load(open(runs / method / "eval.json"))
    assert method.upper() in ev and "avg@1" in ev[method.upper()]
    recs = [json.loads(line) for line in open(runs / method / "metrics.jsonl")]
    assert recs[-1]["generations"] == (0 if method == "sft" else 16)


def test_planned_budget_counts_phase1_and_phase2():
    a = config.parse(["--model", "x", "--phase1-questions", "10", "--n-rev", "3", "--steps", "5",
                      "--batch-questions", "4"])
    assert data.planned_budget(a, 30) == 10 * (1 + 3) + 5 * 4


def scripted_rollouts(monkeypatch, answers: list[str]) -> list:
    """generate.rollout replaced by one that answers ``answers`` in order (question-major, n per
    question, each finished with EOS); returns the list the rollouts are appended to."""
    rolls = []

    def fake_rollout(m, t, prompts, *, n=1, **kw):
        for i, p in enumerate(prompts):
            for j in range(n):
                x = answers[i * n + j]
                rolls.append(Rollout(i, list(p), t(x, add_special_tokens=False)["input_ids"] + [t.eos_token_id],
                                     x, True))
        return rolls

    monkeypatch.setattr(generate, "rollout", fake_rollout)
    return rolls


def test_grpo_step_gradient_is_the_naive_policy_gradient(tiny, monkeypatch):
    """grpo_step (micro-batches, chunked head, clipped surrogate) must produce exactly the gradient
    of the textbook on-policy loss −Σ_i A_i Σ_t log p_T(y_i,t) / (total tokens), computed here one
    sequence at a time with a plain forward pass, where p_T is the policy that sampled
    (temperature T = 0.7, as in training)."""
    import types
    model, tok = tiny
    model.train()
    items = [{"question": "What is 1+1?", "answer": "2"}, {"question": "What is 2+2?", "answer": "4"}]
    rolls = scripted_rollouts(monkeypatch, ["\\boxed{2}", "1+1=3 \\boxed{3}", "\\boxed{5}", "2+2=4 \\boxed{4}",
                                            "\\boxed{4}", ""])
    args = types.SimpleNamespace(grpo_n=3, grpo_updates=1, task="math", temperature=0.7, top_p=1.0,
                                 max_new_tokens=8, gen_batch=8, micro_batch=4)   # 4 does not divide 6: 2 micro-batches
    model.zero_grad()
    out = baselines.grpo_step(args, model, None, tok, items, phrases=Phrases(), eos=None,
                              gen=generate.training_sampling(args, on_policy=True))
    assert len(out["updates"]) == 1
    out["loss"] = out["updates"][0]()           # what train.phase2 runs before its optimizer step
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert out["reward"] == pytest.approx(3 / 6)

    rewards = torch.tensor([1.0, 0, 0, 1, 1, 0])
    adv = slow_advantages(rewards.tolist(), 3)
    n_tok = sum(len(r.completion_ids) for r in rolls)
    model.zero_grad()
    loss = 0.0
    for r, a in zip(rolls, adv):
        ids = torch.tensor([r.prompt_ids + r.completion_ids])
        # The sampling policy is softmax(logits / T): its log-probs define the policy gradient.
        logp = torch.log_softmax(model(ids).logits[0].float() / args.temperature, -1)
        P = len(r.prompt_ids)
        tok_logp = logp[P - 1:-1].gather(-1, torch.tensor(r.completion_ids)[:, None]).squeeze(-1)
        loss = loss - a * tok_logp.sum() / n_tok
    loss.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    num = sum(float((got[n] - want[n]).pow(2).sum()) for n in want) ** 0.5
    den = sum(float(want[n].pow(2).sum()) for n in want) ** 0.5
    assert den > 0 and num / den < 1e-4


def test_grpo_later_updates_clip_against_the_sampling_policy(tiny, monkeypatch):
    """--grpo-updates 2: the rollout batch is scored once by the policy that sampled (old log-probs);
    the second mini-batch's update, after the weights have moved, must equal the textbook clipped
    surrogate −Σ_t min(ρA, clip(ρ, 0.8, 1.28)A) / (its tokens), ρ = π_θ / π_old, computed here one
    sequence at a time with plain forward passes; and the tokens whose ratio left the clip range on
    the clipped side contribute no gradient at all."""
    import types
    model, tok = tiny
    model.train()
    items = [{"question": "What is 1+1?", "answer": "2"}, {"question": "What is 2+2?", "answer": "4"}]
    rolls = scripted_rollouts(monkeypatch, ["\\boxed{2}", "1+1=3 \\boxed{3}", "\\boxed{5}", "2+2=4 \\boxed{4}",
                                            "\\boxed{4}", "2+2=5"])
    args = types.SimpleNamespace(grpo_n=3, grpo_updates=2, task="math", temperature=0.7, top_p=1.0,
                                 max_new_tokens=8, gen_batch=8, micro_batch=2)
    T = args.temperature

    def seq_logp(r):            # log π_T(y_t | x, y<t) of one rollout, plain full-logits forward
        logits = model(torch.tensor([r.prompt_ids + r.completion_ids])).logits[0].float() / T
        P = len(r.prompt_ids)
        return torch.log_softmax(logits, -1)[P - 1:-1].gather(-1, torch.tensor(r.completion_ids)[:, None]).squeeze(-1)

    out = baselines.grpo_step(args, model, None, tok, items, phrases=Phrases(), eos=None,
                              gen=generate.training_sampling(args, on_policy=True))
    assert len(out["updates"]) == 2                          # question 0's group, then question 1's
    with torch.no_grad():
        old = [seq_logp(r) for r in rolls]                   # the sampling policy, before any update
    model.zero_grad()
    out["updates"][0]()
    torch.manual_seed(0)
    with torch.no_grad():                                    # the weights move, as an optimizer step would
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.zero_grad()
    out["updates"][1]()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    adv = slow_advantages([1.0, 0, 0, 1, 1, 0], 3)[3:]       # mini-batch 2: question 1's three rollouts
    second = rolls[3:]
    n_tok = sum(len(r.completion_ids) for r in second)
    model.zero_grad()
    loss, clipped, moved = 0.0, 0, 0
    for r, a, o in zip(second, adv, old[3:]):
        logp = seq_logp(r)
        ratio = torch.exp(logp - o)
        lo, hi = 1 - baselines.DAPO_CLIP[0], 1 + baselines.DAPO_CLIP[1]
        loss = loss - torch.minimum(ratio * a, ratio.clamp(lo, hi) * a).sum() / n_tok
        clipped += int(((ratio > hi) & (a > 0)).sum() + ((ratio < lo) & (a < 0)).sum())
        moved += int(((ratio - 1).abs() > 1e-3).sum())
    loss.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert moved > 0 and clipped > 0                       # the clip acts on this batch
    num = sum(float((got[n] - want[n]).pow(2).sum()) for n in want) ** 0.5
    den = sum(float(want[n].pow(2).sum()) for n in want) ** 0.5
    assert den > 0 and num / den < 1e-4

    # Token by token: the clipped side of the surrogate has zero gradient, the rest −A·ρ.
    o = old[3][:8]
    lp = (o + torch.tensor([0.5, -0.5, 0.1, 0.4, -0.4, 0.0, 0.2, -0.3][:len(o)])).requires_grad_(True)
    for a in (1.0, -1.0):
        lp.grad = None
        baselines.clipped_pg_loss(lp, o, torch.full_like(lp, a)).sum().backward()
        ratio = torch.exp(lp - o).detach()
        dead = (ratio > 1.28) if a > 0 else (ratio < 0.8)
        assert dead.any() and (lp.grad[dead] == 0).all()
        assert torch.allclose(lp.grad[~dead], -a * ratio[~dead])
