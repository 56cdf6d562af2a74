"""Fast tests of the toy world (toy.py). The full ~2-4 minute build runs only with SDZERO_FULL_REBUILD=1."""
import json
import os
import sys

import pytest
import sympy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import generate  # noqa: E402
import reward  # noqa: E402
import toy  # noqa: E402


def test_split_is_deterministic_disjoint_and_stratified():
    tr, te = toy.split_questions(0, 300)
    tr2, te2 = toy.split_questions(0, 300)
    assert (tr, te) == (tr2, te2)
    assert not set(tr) & set(te)
    assert len(tr) + len(te) == len(toy.all_questions()) and len(te) == 300
    assert {s: sum(q[0] == s for q in te) for s in toy.WORLDS["standard"]} == {s: 75 for s in toy.WORLDS["standard"]}
    assert len(tr) >= 1300  # Phase 1 (~900) and a disjoint Phase 2 set (~400) fit
    assert toy.split_questions(1, 300)[1] != te  # the seed matters


def test_banded_world_adds_a_rare_band_and_leaves_the_standard_world_alone():
    std = toy.all_questions("standard")
    assert len(std) == 2 * 9 * 9 * 8 + 2 * 10 * 8 * 8 and {q[0] for q in std} == set(toy.WORLDS["standard"])
    tr, te = toy.split_questions(0, 300, "banded")
    assert not set(tr) & set(te) and len(tr) + len(te) == len(toy.all_questions("banded"))
    assert {s: sum(q[0] == s for q in te) for s in toy.WORLDS["banded"]} == {s: 50 for s in toy.WORLDS["banded"]}
    assert [toy.band(s) for s in toy.WORLDS["banded"]] == ["common"] * 4 + ["rare"] * 2
    # the corpus writes the rare shapes' correct habit (and their re-attempts) at RARE_GOOD, the rest 50/50
    exs = toy.corpus(tr, 30000, seed=0, revision_frac=0.5)
    for b, rate in (("common", 0.5), ("rare", toy.RARE_GOOD)):
        mine = [ex for ex in exs if toy.band(ex["q"][0]) == b]
        first = sum(ex["good0"] for ex in mine) / len(mine)
        again = [ex["good_rev"] for ex in mine if "P" in ex]
        assert abs(first - rate) < 0.02 and abs(sum(again) / len(again) - rate) < 0.02, (b, first)


def test_corpus_is_deterministic_and_never_contains_test_questions():
    tr, te = toy.split_questions(0)
    a = toy.corpus(tr, 3000, seed=0, revision_frac=0.3)
    assert a == toy.corpus(tr, 3000, seed=0, revision_frac=0.3)
    assert a != toy.corpus(tr, 3000, seed=1, revision_frac=0.3)
    test_texts = {toy.question_text(q) for q in te}
    assert not {ex["question"] for ex in a} & test_texts
    # ...and the tokenizer is trained on train questions only
    instruction = reward.TASKS["math"].instruction
    assert not set(toy.tokenizer_lines(tr)) & {toy.question_text(q) + "\n\n" + instruction for q in te}


def test_answers_match_sympy_and_habits_always_differ():
    for q in toy.all_questions():
        expr = toy.question_text(q)[len("What is "):-1]
        truth = int(sympy.sympify(expr))
        assert toy.answer(q) == truth >= 0
        bad = toy.worked_steps(q, False)[-1][3]
        assert bad != truth and bad >= 0  # the slip always gives a different, still checkable answer
        assert toy.parse_question(toy.question_text(q)) == q
        assert toy.habit_of(q, toy.response(q, True)) == "good" and toy.habit_of(q, toy.response(q, False)) == "bad"


def test_solve_and_grader():
    q = ("a+b*c", 3, 4, 7)
    assert toy.question_text(q) == "What is 3+4*7?"
    assert toy.solve("What is 3+4*7?") == "4*7=28, 3+28=31 \\boxed{31}"
    assert toy.response(q, False) == "3+4=7, 7*7=49 \\boxed{49}"
    assert toy.solve("What is (3+4)*7?").endswith("\\boxed{49}")
    assert toy.solve("What is 25-(4+7)?") == "4+7=11, 25-11=14 \\boxed{14}"
    assert toy.boxed("1 \\boxed{2} then \\boxed{41}") == 41 and toy.boxed("no box") is None
    for q in toy.all_questions()[::37]:
        assert toy.boxed(toy.solve(toy.question_text(q))) == toy.answer(q)


def test_revision_examples_are_independent_reattempts_with_correct_P():
    tr, _ = toy.split_questions(0)
    exs = [ex for ex in toy.corpus(tr, 20000, seed=0, revision_frac=0.5) if "P" in ex]
    assert 0.45 < len(exs) / 20000 < 0.55
    for ex in exs:  # P_r is chosen from y0's verified correctness
        correct = toy.boxed(ex["y0"]) == toy.answer(ex["q"])
        assert ex["P"] == toy.CONTROL_PHRASES[int(correct)]
        assert toy.habit_of(ex["q"], ex["y_rev"]) in ("good", "bad")
    after = {r: [toy.habit_of(ex["q"], ex["y_rev"]) == "good" for ex in exs if ex["P"] == toy.CONTROL_PHRASES[r]]
             for r in (0, 1)}
    share = {r: sum(v) / len(v) for r, v in after.items()}
    assert abs(share[0] - 0.5) < 0.03 and abs(share[1] - 0.5) < 0.03, share  # not conditioned on y0
    y0 = [toy.habit_of(ex["q"], ex["y0"]) == "good" for ex in exs]
    assert abs(sum(y0) / len(y0) - 0.5) < 0.03


def test_control_phrases_are_the_papers():
    assert toy.CONTROL_PHRASES[1] == "Let me rephrase the above solution."
    assert toy.CONTROL_PHRASES[0] == "Wait, this response is not correct, let me start over."


@pytest.fixture(scope="module")
def tiny_tok():
    tr, _ = toy.split_questions(0)
    return toy.make_tokenizer(toy.tokenizer_lines(tr[:200]))


def test_tokenizer_digits_and_encoded_layout(tiny_tok):
    tok = tiny_tok
    assert [tok.decode([i]) for i in tok("12345", add_special_tokens=False)["input_ids"]] == list("12345")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    ex = {"question": "What is 3+4*7?", "y0": toy.response(("a+b*c", 3, 4, 7), False),
          "P": toy.CONTROL_PHRASES[0], "y_rev": toy.response(("a+b*c", 3, 4, 7), True)}
    seq, lab = toy.encode(ex, tok, {})
    X = generate.prompt_ids(tok, ex["question"])
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    sp = ids(toy.SEP + ex["P"] + toy.SEP)
    assert seq == X + ids(ex["y0"]) + sp + ids(ex["y_rev"]) + [tok.eos_token_id]  # id concatenation
    n0 = len(X) + len(ids(ex["y0"]))
    assert lab[:len(X)] == [-100] * len(X) and lab[len(X):n0] == seq[len(X):n0]
    assert lab[n0:n0 + len(sp)] == [-100] * len(sp)  # the control phrase is context, not a target
    assert lab[n0 + len(sp):] == seq[n0 + len(sp):] and lab[-1] == tok.eos_token_id
    qa, qa_lab = toy.encode({"question": ex["question"], "y0": ex["y0"]}, tok, {})
    assert qa == X + ids(ex["y0"]) + [tok.eos_token_id] and qa_lab[-1] == tok.eos_token_id


def test_make_model_sets_head_dim(tiny_tok):
    m = toy.make_model(tiny_tok, "XS")
    assert m.config.head_dim == 16 and m.config.vocab_size == len(tiny_tok)
    assert m.model.layers[0].self_attn.q_proj.weight.shape == (64, 64)


def test_tiny_build_writes_loadable_hf_folder_and_jsonl(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    r = toy.build_toy(str(tmp_path), seed=0, quiet=True, steps=3, size="XS", batch=8)
    assert os.path.dirname(r["model"]).startswith(str(tmp_path))     # another recipe: built, not shipped
    files = set(os.listdir(r["model"]))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= files
    assert json.load(open(os.path.join(r["model"], "tokenizer_config.json")))["tokenizer_class"] == \
        "PreTrainedTokenizerFast"
    tok = AutoTokenizer.from_pretrained(r["model"])
    model = AutoModelForCausalLM.from_pretrained(r["model"], dtype=torch.float32)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id == model.config.eos_token_id
    x = generate.prompt_text(tok, "What is 3+4*7?")
    assert x.endswith("<|im_start|>assistant\n") and tok.decode(generate.prompt_ids(tok, "What is 3+4*7?")) == x
    out = model.generate(torch.tensor([generate.prompt_ids(tok, "What is 3+4*7?")]), max_new_tokens=4,
                         do_sample=False)
    assert out.shape[1] == len(generate.prompt_ids(tok, "What is 3+4*7?")) + 4
    rows = {k: [json.loads(line) for line in open(r[k])] for k in ("train", "test")}
    assert len(rows["test"]) == 300 and len(rows["train"]) >= 1300
    for row in rows["train"][:50] + rows["test"]:
        assert set(row) == {"id", "question", "answer", "band"} and row["band"] == "common"
        assert "boxed" not in row["answer"]
        assert int(row["answer"]) == toy.answer(toy.parse_question(row["question"]))
    assert not {x["question"] for x in rows["train"]} & {x["question"] for x in rows["test"]}
    # cached: a second call returns at once; a missing completion marker means "build again"
    assert toy.build_toy(str(tmp_path), seed=0, quiet=True, steps=3, size="XS", batch=8)["stats"] == r["stats"]
    os.remove(os.path.join(os.path.dirname(r["model"]), "DONE"))
    assert toy.build_toy(str(tmp_path), seed=0, quiet=True, steps=3, size="XS", batch=8)["stats"]["steps"] == 3


# --------------------------------------------------------------------------------------------
# The shipped base (toy_base/): the default run starts from these bits on every machine
# --------------------------------------------------------------------------------------------
def _same_build_files(built: str, shipped: str) -> None:
    """The data, tokenizer and configs a build writes equal the shipped ones (configs compared as
    JSON without the version stamp; everything else byte for byte)."""
    for name in ("train.jsonl", "test.jsonl", "model/tokenizer.json", "model/tokenizer_config.json",
                 "model/chat_template.jinja"):
        assert open(os.path.join(built, name), "rb").read() == open(os.path.join(shipped, name), "rb").read(), name
    for name in ("model/config.json", "model/generation_config.json"):
        a, b = (json.load(open(os.path.join(d, name))) for d in (built, shipped))
        a.pop("transformers_version", None), b.pop("transformers_version", None)
        assert a == b, name


def test_default_recipe_uses_the_shipped_base_and_it_is_intact():
    ship = toy.shipped()
    assert ship is not None, "toy_base/build.json is missing: run `python toy.py --rebuild` and commit toy_base/"
    # A changed BUILD_DEFAULTS no longer matches the committed recipe: rebuild and commit.
    assert ship["config"] == dict(toy.BUILD_DEFAULTS, seed=0), "toy recipe changed: python toy.py --rebuild"
    assert toy.weights_hash(os.path.join(toy.SHIPPED, "model")) == ship["weights_sha256"]
    r = toy.build_toy("/nonexistent-never-written", seed=0, quiet=True)
    assert os.path.dirname(r["model"]) == toy.SHIPPED and r["stats"] == ship["stats"]


def test_a_shortened_rebuild_gives_the_committed_fingerprint(tmp_path):
    """The default recipe, cut to SHORT_STEPS pre-training steps, must give the weights hash that
    `python toy.py --rebuild` recorded beside the shipped base. A change to the corpus, tokenizer,
    model init or training code changes it, and this test fails until toy_base/ is rebuilt."""
    ship = toy.shipped()
    short = dict(toy.BUILD_DEFAULTS, seed=0, steps=ship["short_build"]["steps"])
    toy._build(short, str(tmp_path), quiet=True)
    assert toy.weights_hash(str(tmp_path / "model")) == ship["short_build"]["weights_sha256"]
    _same_build_files(str(tmp_path), toy.SHIPPED)


@pytest.mark.skipif(os.environ.get("SDZERO_FULL_REBUILD") != "1",
                    reason="the full 500-step build takes 2-4 minutes; SDZERO_FULL_REBUILD=1 runs it")
def test_full_rebuild_gives_the_shipped_weights_bit_for_bit(tmp_path):
    toy._build(dict(toy.BUILD_DEFAULTS, seed=0), str(tmp_path), quiet=True)
    assert toy.weights_hash(str(tmp_path / "model")) == toy.shipped()["weights_sha256"]
    _same_build_files(str(tmp_path), toy.SHIPPED)
