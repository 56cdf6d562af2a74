r"""toy.py — the embedded toy world: a tiny Qwen3 model pre-trained from scratch on CPU.

What this builds (offline, deterministic from a seed, cached):
  * a question universe of small arithmetic expressions, split into test / train questions;
  * a byte-level BPE tokenizer (digits one per token, ChatML chat template, EOS = <|im_end|>);
  * a tiny Qwen3ForCausalLM pre-trained on a synthetic corpus, saved as an ordinary HF folder,
    plus train.jsonl / test.jsonl in the project's data schema ({"id", "question", "answer"}).

Why the errors are *systematic habits*.  SD-Zero turns a binary reward into dense token-level
supervision.  That only works if the reward carries information a model can localise: a random
wrong digit has no position to point at.  So the corpus answers with one of two evaluation orders,
50/50: the correct one, or a classic slip (left-to-right instead of operator precedence, or
dropping the parentheses).  The slip is decided by the first worked step, so "which habit does
the verifier reward" is learnable — and it depends on the question's shape, so it is not trivial.

Why re-attempts are independent.  Like the paper's base model (revision barely helps, Table 9),
the toy must be a fair generator and a *poor reviser*.  The corpus therefore contains the revision
layout  X + y0 + "\n\n" + P_r + "\n\n" + y_rev <eos>  with the correct control phrase P_r, but
y_rev is a fresh 50/50 re-attempt that ignores P_r.  Any skill to *fix* an answer after
"Wait, this response is not correct" must come from Phase 1 (SRT, paper §2.1); without it,
Phase 2 has no better teacher to distil (Table 12).

The world: "What is E?" for four shapes E, each with a correct order and a slip (50/50 each):
  a+b*c    good 4*7=28, 3+28=31 \boxed{31}    bad (left to right)     3+4=7, 7*7=49 \boxed{49}
  (a+b)*c  good 3+4=7, 7*7=49 \boxed{49}      bad (drops the parens)  4*7=28, 3+28=31 \boxed{31}
  a-b+c    good 25-4=21, 21+7=28 \boxed{28}  bad (groups b+c)        4+7=11, 25-11=14 \boxed{14}
  a-(b+c)  good 4+7=11, 25-11=14 \boxed{14}  bad (drops the parens)  25-4=21, 21+7=28 \boxed{28}
Each prompt X is rendered by generate.prompt_text (the exact prompt train.py uses).
`--toy-world banded` adds a difficulty axis: two more shapes whose correct habit the corpus writes only
10% of the time, so the base rarely solves them (see "Difficulty" below).

Budget: 500 steps of batch 48, 2-3 minutes on 2 idle CPU cores, fp32, min(2, cpus) torch threads
or $SDZERO_THREADS.  Two builds with the same seed give identical weights.  Shipped, not rebuilt:
the default base (BUILD_DEFAULTS, seed 0) is committed in toy_base/ (HF folder, train/test JSONL,
build.json with the recipe, the weights' hash and a shortened build's hash that tests/test_toy.py
recomputes), so `python train.py` starts from the same bits everywhere.  `python toy.py --rebuild`
remakes it under repro.py's kernel pin; any other recipe (seed, size, --toy-steps, banded) is built
once under runs/toy/<config hash>/ (`--force` rebuilds it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time

from machinery import repro

if __name__ == "__main__":
    repro.pin_cpu_kernels()   # before torch is imported: the shipped base is built on pinned kernels
    repro.share_cores()       # and, like every run, sleeps rather than spins on shared cores
import torch
import transformers
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM
from transformers.utils import logging as hf_logging

import generate
from revise import SEP
from reward import P_CORRECT, P_WRONG, TASKS

# Control phrases P_r by reward (paper §2.1; r=1 correct, r=0 wrong): the strings Phase 1 and 2 use.
# A revision in the corpus is y0 + SEP + P_r + SEP + y_rev, SD-Zero's own layout.
CONTROL_PHRASES = {1: P_CORRECT, 0: P_WRONG}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # pad, role start, EOS (ids 0, 1, 2)
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
                 "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Model sizes (Qwen3 architecture; head_dim must be set explicitly, it defaults to 128).
SIZES = {"XS": dict(hidden=64, layers=2, heads=4, kv=2, inter=192),
         "S": dict(hidden=128, layers=4, heads=4, kv=2, inter=384),
         "M": dict(hidden=192, layers=4, heads=6, kv=2, inter=576)}
# Everything that changes the built model; its hash names the cache folder (bump `version` when
# the world, corpus or training code changes, so stale caches are not reused).
BUILD_DEFAULTS = dict(version=1, size="S", steps=500, batch=48, lr=3e-3, warmup=40,
                      revision_frac=0.3, n_test=300, vocab=512, world="standard")

# --------------------------------------------------------------------------------------------
# The world: four expression shapes, two evaluation orders each
# --------------------------------------------------------------------------------------------
# Each shape has a correct order ("good") and a systematic slip ("bad").  The slip of one shape is
# the correct order of its sibling, so "always do X first" never works: the model must read the
# parentheses.  Ranges keep every answer a non-negative integer and make the habits always differ.
OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
SHAPES = {  # shape: (template, good steps, bad steps); a step is (left, op, right), "r" = last result
    "a+b*c":   ("{a}+{b}*{c}",   [("b", "*", "c"), ("a", "+", "r")], [("a", "+", "b"), ("r", "*", "c")]),
    "(a+b)*c": ("({a}+{b})*{c}", [("a", "+", "b"), ("r", "*", "c")], [("b", "*", "c"), ("a", "+", "r")]),
    "a-b+c":   ("{a}-{b}+{c}",   [("a", "-", "b"), ("r", "+", "c")], [("b", "+", "c"), ("a", "-", "r")]),
    "a-(b+c)": ("{a}-({b}+{c})", [("b", "+", "c"), ("a", "-", "r")], [("a", "-", "b"), ("r", "+", "c")]),
}
# Two more shapes, used only by the "banded" world below (their slip is not a sibling's good order).
SHAPES.update({
    "a*(b+c)": ("{a}*({b}+{c})", [("b", "+", "c"), ("a", "*", "r")], [("a", "*", "b"), ("r", "+", "c")]),
    "a-b*c":   ("{a}-{b}*{c}",   [("b", "*", "c"), ("a", "-", "r")], [("a", "-", "b"), ("r", "*", "c")]),
})
RANGES = {"a+b*c": (range(1, 10), range(1, 10), range(2, 10)),
          "(a+b)*c": (range(1, 10), range(1, 10), range(2, 10)),
          "a-b+c": (range(20, 30), range(2, 10), range(2, 10)),
          "a-(b+c)": (range(20, 30), range(2, 10), range(2, 10)),
          "a*(b+c)": (range(2, 10), range(1, 10), range(2, 10)),    # a >= 2: a*c != c, the habits differ
          "a-b*c": (range(60, 70), range(2, 10), range(2, 7))}      # b*c <= 54 < a: never negative

# --------------------------------------------------------------------------------------------
# Difficulty: the "banded" world (the issue "a hard regime where RFT has nothing to keep")
# --------------------------------------------------------------------------------------------
# Paper Table 1's argument for SD-Zero over rejection sampling is about questions the model rarely
# solves: RFT keeps only correct samples, so there it has little to learn from, while the reviser
# still turns every wrong answer into token-level targets. The standard world cannot test that:
# every shape's correct habit is written half the time, so every question is solved about half the
# time. The banded world adds a *rare* band: two shapes whose correct habit the corpus writes only
# RARE_GOOD of the time (and, with the same re-attempt rule, its revisions are fresh attempts at
# that same rate). Sampling at T = 0.7 sharpens 10/90 further: the base solved 1%, 0%, 0% of them (seeds 0-2).
# `python train.py --toy-world banded`; the held-out table then reports accuracy per band.
WORLDS = {"standard": ["a+b*c", "(a+b)*c", "a-b+c", "a-(b+c)"],
          "banded": ["a+b*c", "(a+b)*c", "a-b+c", "a-(b+c)", "a*(b+c)", "a-b*c"]}
RARE_GOOD = 0.1
GOOD_RATE = {"a*(b+c)": RARE_GOOD, "a-b*c": RARE_GOOD}   # corpus rate of the correct habit; else 0.5


def band(shape: str) -> str:
    """'common' (the correct habit is half the corpus) or 'rare' (RARE_GOOD of it)."""
    return "rare" if GOOD_RATE.get(shape, 0.5) < 0.5 else "common"


def all_questions(world: str = "standard") -> list[tuple]:
    """The world's whole universe as (shape, a, b, c), in a fixed order."""
    return [(s, a, b, c) for s in WORLDS[world] for ra, rb, rc in [RANGES[s]] for a in ra for b in rb for c in rc]


def question_text(q: tuple) -> str:
    shape, a, b, c = q
    return "What is " + SHAPES[shape][0].format(a=a, b=b, c=c) + "?"


def parse_question(text: str) -> tuple:
    """Inverse of question_text (used by solve())."""
    for shape, (tmpl, _, _) in SHAPES.items():
        pat = re.escape(tmpl)
        for v in "abc":
            pat = pat.replace(r"\{" + v + r"\}", r"(\d+)")
        m = re.search("What is " + pat + r"\?", text)
        if m:
            return (shape, *map(int, m.groups()))
    raise ValueError(f"not a toy question: {text!r}")


def worked_steps(q: tuple, good: bool) -> list[tuple]:
    """The two steps of one habit as (x, op, y, result)."""
    shape, a, b, c = q
    env, out = {"a": a, "b": b, "c": c}, []
    for left, op, right in SHAPES[shape][1 if good else 2]:
        x, y = env[left], env[right]
        env["r"] = OPS[op](x, y)
        out.append((x, op, y, env["r"]))
    return out


def response(q: tuple, good: bool) -> str:
    """A short worked response, e.g. '4*7=28, 3+28=31 \\boxed{31}' (no EOS)."""
    steps = worked_steps(q, good)
    return ", ".join(f"{x}{op}{y}={r}" for x, op, y, r in steps) + f" \\boxed{{{steps[-1][3]}}}"


def answer(q: tuple) -> int:
    return worked_steps(q, True)[-1][3]


def solve(question: str) -> str:
    """A correct worked solution in the toy's response format (the SDFT demonstration)."""
    return response(parse_question(question), True)


def boxed(text: str):
    """Integer in the last \\boxed{} or None."""
    m = re.findall(r"\\boxed\{\s*(-?\d+)\s*\}", text)
    return int(m[-1]) if m else None


def habit_of(q: tuple, text: str):
    """'good' / 'bad' if the response's first worked step is that habit's first step, else None.
    The first step decides the habit, so this is where the reward's information lives."""
    first = text.strip().split(",")[0].strip()
    for good in (True, False):
        x, op, y, r = worked_steps(q, good)[0]
        if first == f"{x}{op}{y}={r}":
            return "good" if good else "bad"
    return None


def split_questions(seed: int, n_test: int = 300, world: str = "standard") -> tuple[list, list]:
    """Deterministic (train, test) split, stratified by shape so every shape is tested equally."""
    rng = random.Random(f"toy-split-{seed}")
    train, test = [], []
    per_shape = n_test // len(WORLDS[world])
    for shape in WORLDS[world]:
        qs = [q for q in all_questions(world) if q[0] == shape]
        rng.shuffle(qs)
        test += qs[:per_shape]
        train += qs[per_shape:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


# --------------------------------------------------------------------------------------------
# The pre-training corpus
# --------------------------------------------------------------------------------------------
def corpus_example(q: tuple, rng: random.Random, revision: bool) -> dict:
    """One pre-training example.  Habits are (biased) coins; y_rev's coin ignores y0 and P_r."""
    rate = GOOD_RATE.get(q[0], 0.5)
    good0 = rng.random() < rate
    ex = {"q": q, "question": question_text(q), "y0": response(q, good0), "good0": good0}
    if revision:
        good1 = rng.random() < rate  # independent re-attempt: no correction skill is built in
        ex.update(P=CONTROL_PHRASES[int(good0)], y_rev=response(q, good1), good_rev=good1)
    return ex


def corpus(train_qs: list, n: int, seed: int, revision_frac: float) -> list[dict]:
    """n examples over the train questions only (test questions never appear)."""
    rng = random.Random(f"toy-corpus-{seed}")
    return [corpus_example(rng.choice(train_qs), rng, rng.random() < revision_frac) for _ in range(n)]


def tokenizer_lines(qs: list) -> list[str]:
    """Text the BPE is trained on: rendered prompts, both habits, control phrases, chat words."""
    lines = ["<|im_start|>user\n", "<|im_start|>assistant\n", *CONTROL_PHRASES.values()]
    for q in qs:
        lines += [question_text(q) + "\n\n" + TASKS["math"].instruction,
                  response(q, True), response(q, False)]
    return lines


# --------------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------------
def make_tokenizer(corpus_lines, vocab_size: int = 512):
    """Byte-level BPE trained on corpus_lines; digits split one per token (as in Qwen)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus_lines, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", chat_template=CHAT_TEMPLATE, model_max_length=2048)


def make_model(tokenizer, size: str = "S", seed: int = 0):
    """A randomly initialised Qwen3ForCausalLM sized for the tokenizer (deterministic per seed)."""
    s = SIZES[size]
    cfg = Qwen3Config(vocab_size=len(tokenizer), hidden_size=s["hidden"], intermediate_size=s["inter"],
                      num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                      num_key_value_heads=s["kv"], head_dim=s["hidden"] // s["heads"],
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg)
    # Pure T=1 sampling by default, so no hidden top_k=50 changes the sampling distribution.
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=True,
                                               temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=64)
    return model


# --------------------------------------------------------------------------------------------
# Pre-training
# --------------------------------------------------------------------------------------------
def encode(ex: dict, tok, cache: dict) -> tuple[list, list]:
    """ids and labels of one example, built by id concatenation exactly like the trainer does:
    X + y0 [+ S(P) + y_rev] + EOS.  Loss on the responses and EOS; not on X or the control phrase
    (the base should never *write* P_r itself: self-revision in-stream is what SRT teaches)."""
    def ids(text):
        if text not in cache:
            cache[text] = tok(text, add_special_tokens=False)["input_ids"]
        return cache[text]
    key = ("X", ex["question"])  # X is rendered by the trainer's own prompt builder
    if key not in cache:
        cache[key] = ids(generate.prompt_text(tok, ex["question"], "math"))
    x, y0 = cache[key], ids(ex["y0"])
    if "P" not in ex:
        seq = x + y0 + [tok.eos_token_id]
        return seq, [-100] * len(x) + y0 + [tok.eos_token_id]
    sp, yr = ids(SEP + ex["P"] + SEP), ids(ex["y_rev"])
    seq = x + y0 + sp + yr + [tok.eos_token_id]
    return seq, [-100] * len(x) + y0 + [-100] * len(sp) + yr + [tok.eos_token_id]


def pretrain(model, tok, examples: list, cfg: dict, quiet: bool = False) -> dict:
    """Plain next-token SFT, AdamW + warm-up + cosine, deterministic batch order."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.98), weight_decay=0.01)
    steps, bs, cache = cfg["steps"], cfg["batch"], {}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg["warmup"]) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))))
    model.train()
    t0, ema = time.time(), None
    for step in range(steps):
        batch = [encode(ex, tok, cache) for ex in examples[step * bs:(step + 1) * bs]]
        T = max(len(s) for s, _ in batch)  # right padding; pad positions carry no loss
        inp = torch.tensor([s + [tok.pad_token_id] * (T - len(s)) for s, _ in batch])
        lab = torch.tensor([labels + [-100] * (T - len(labels)) for _, labels in batch])
        att = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s, _ in batch])
        loss = model(input_ids=inp, attention_mask=att, labels=lab, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if not quiet and (step % 50 == 0 or step == steps - 1):
            print(f"  pretrain step {step + 1}/{steps}  loss {ema:.3f}  {time.time() - t0:.0f}s", flush=True)
    model.eval()
    return {"steps": steps, "final_loss": round(ema, 4), "train_seconds": round(time.time() - t0, 1)}


# --------------------------------------------------------------------------------------------
# Build (shipped for the default recipe, cached for any other)
# --------------------------------------------------------------------------------------------
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy_base")
SHORT_STEPS = 12   # the shortened build whose weights hash build.json records (tests/test_toy.py)


def _paths(out: str) -> dict:
    return {k: os.path.join(out, f) for k, f in (("model", "model"), ("train", "train.jsonl"), ("test", "test.jsonl"))}


def weights_hash(model_dir: str) -> str:
    """sha256 of a saved model's tensors (name, dtype, shape, bytes): equal = bit-identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(load_file(os.path.join(model_dir, "model.safetensors")).items()):
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def shipped() -> dict | None:
    """toy_base/build.json (recipe, stats, hashes), or None if this checkout has no shipped base."""
    path = os.path.join(SHIPPED, "build.json")
    return json.load(open(path)) if os.path.exists(path) else None


def build_toy(root: str = "runs/toy", seed: int = 0, force: bool = False, quiet: bool = False,
              steps: int | None = None, **overrides) -> dict:
    """The toy world: returns absolute paths {"model", "train", "test"} and "stats".

    The default recipe (BUILD_DEFAULTS, seed 0) is the shipped toy_base/, used as it is. Any other
    (`steps` and `overrides`: any BUILD_DEFAULTS key, e.g. size="XS", batch=8; for tests and
    experiments) is built once under root/<hash of the config>/ and reused."""
    if set(overrides) - set(BUILD_DEFAULTS):
        raise TypeError(f"unknown toy build option(s): {sorted(set(overrides) - set(BUILD_DEFAULTS))}")
    cfg = dict(BUILD_DEFAULTS, seed=seed, **overrides)
    if steps is not None:
        cfg["steps"] = steps
    ship = shipped()
    if ship is not None and ship["config"] == cfg and not force:
        return dict(_paths(SHIPPED), stats=ship["stats"])
    tag = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
    out = os.path.abspath(os.path.join(root, tag))
    done = os.path.join(out, "DONE")  # written last: an interrupted build is redone
    if os.path.exists(done) and not force:
        return dict(_paths(out), stats=json.load(open(done)))
    if os.path.exists(done):
        os.remove(done)  # --force: the old marker must not vouch for half-written new files
    stats = _build(cfg, out, quiet)
    json.dump(stats, open(done, "w"), indent=1)
    if not quiet:
        print(f"[toy] done in {stats['build_seconds']}s: {out}", flush=True)
    return dict(_paths(out), stats=stats)


def rebuild_shipped(quiet: bool = False) -> dict:
    """`python toy.py --rebuild`: remake toy_base/ and its build.json. Commit the result: tests/test_toy.py
    fails while a changed recipe and the shipped weights disagree."""
    cfg = dict(BUILD_DEFAULTS, seed=0)
    shutil.rmtree(SHIPPED, ignore_errors=True)
    stats = _build(cfg, SHIPPED, quiet)
    with tempfile.TemporaryDirectory() as tmp:
        _build(dict(cfg, steps=SHORT_STEPS), tmp, True)
        short = weights_hash(_paths(tmp)["model"])
    rec = {"config": cfg, "stats": stats, "weights_sha256": weights_hash(_paths(SHIPPED)["model"]),
           "short_build": {"steps": SHORT_STEPS, "weights_sha256": short}, "torch": torch.__version__,
           "transformers": transformers.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}
    json.dump(rec, open(os.path.join(SHIPPED, "build.json"), "w"), indent=1)
    return rec


def _build(cfg: dict, out: str, quiet: bool) -> dict:
    """Build one toy into out/, on repro.cpu_threads() torch threads (tiny matmuls: more only adds sync
    overhead) or $SDZERO_THREADS; the thread count does not change the weights (tests/test_toy.py)."""
    t0, seed, paths, threads = time.time(), cfg["seed"], _paths(out), torch.get_num_threads()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(int(os.environ.get("SDZERO_THREADS", repro.cpu_threads())))
    if not quiet:
        print(f"[toy] building {out} (seed {seed}, {cfg['steps']} steps, size {cfg['size']})", flush=True)
    train_qs, test_qs = split_questions(seed, cfg["n_test"], cfg["world"])
    os.makedirs(out, exist_ok=True)
    for path, qs in ((paths["train"], train_qs), (paths["test"], test_qs)):
        with open(path, "w") as f:
            for q in qs:
                qid = f"toy-{list(SHAPES).index(q[0])}-{q[1]}-{q[2]}-{q[3]}"
                row = {"id": qid, "question": question_text(q), "answer": str(answer(q)), "band": band(q[0])}
                f.write(json.dumps(row) + "\n")
    tok = make_tokenizer(tokenizer_lines(train_qs), cfg["vocab"])
    model = make_model(tok, cfg["size"], seed)
    examples = corpus(train_qs, cfg["steps"] * cfg["batch"], seed, cfg["revision_frac"])
    try:
        stats = pretrain(model, tok, examples, cfg, quiet)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(paths["model"])
    tok.save_pretrained(paths["model"])
    # transformers v5 records "TokenizersBackend", which v4 cannot load; this name loads in both.
    tc_path = os.path.join(paths["model"], "tokenizer_config.json")
    tc = json.load(open(tc_path))
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    json.dump(tc, open(tc_path, "w"), indent=2)
    stats.update(n_train=len(train_qs), n_test=len(test_qs), vocab=len(tok),
                 params=sum(p.numel() for p in model.parameters()), build_seconds=round(time.time() - t0, 1),
                 config=cfg)
    return stats


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Build the toy model and data (the default is shipped in toy_base/).")
    ap.add_argument("--rebuild", action="store_true", help="remake the shipped toy_base/ (then commit it)")
    ap.add_argument("--root", default="runs/toy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild a cached non-default build")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    if note := repro.check_pinned(torch):
        print(note, file=sys.stderr)
    if args.rebuild:
        print(json.dumps(rebuild_shipped(), indent=1))
    else:
        r = build_toy(args.root, args.seed, args.force, steps=args.steps)
        print(json.dumps({k: r[k] for k in ("model", "train", "test")}, indent=1))
