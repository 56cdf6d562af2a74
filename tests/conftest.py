"""Shared fixtures: a tiny Qwen3-architecture model + tokenizer built offline in a few seconds.

No test touches the Hugging Face Hub. The model is random (untrained): tests that need a model that
*does* something use toy.py's builder or hand-built tensors instead.
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# tests/test_fingerprint.py is the regression guard and stays byte for byte as it was recorded; it
# imports the kernel pin by its old top-level name `repro` (now machinery/repro.py), in this process
# and in a `python -c` child. So machinery/ goes on the import path here and, for the children, on
# PYTHONPATH; no other test imports a machinery module by its bare name.
MACHINERY = os.path.join(ROOT, "machinery")
sys.path.append(MACHINERY)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), MACHINERY) if p)
from machinery import repro  # noqa: E402

# Before torch is imported: the same CPU kernels on every x86-64 machine (machinery/repro.py), so the
# exact figures in tests/test_fingerprint.py and test_toy.py hold on AVX2 and AVX-512 CPUs alike.
repro.pin_cpu_kernels()
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Two cores shared with pytest itself: one torch thread avoids OpenMP threads spin-waiting on
# each other, which made the tiny models' forward passes several times slower when measured.
torch.set_num_threads(1)

CORPUS = [
    "user assistant What is 12+3*4? Please reason step by step, and put your final answer within "
    "\\boxed{}. 3*4=12, 12+12=24 \\boxed{24}",
    "Let me rephrase the above solution. Wait, this response is not correct, let me start over.",
    "def f(x):\n    return x + 1\n```python\nprint(int(input()) * 2)\n```",
] * 20


def build_tiny(path, *, pad_is_eos=False, seed=0):
    """toy.py's tokenizer and smallest model, untrained, saved as an ordinary HF folder."""
    import toy
    tok = toy.make_tokenizer(CORPUS, vocab_size=400)
    if pad_is_eos:
        tok.pad_token = tok.eos_token
    model = toy.make_model(tok, "XS", seed=seed)
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def build_two_answer_model(path, questions, task: str, answers: list[str], steps: int, extra_corpus: str):
    """conftest's tiny XS model, fine-tuned for a few seconds to answer each question with one of
    ``answers`` (also after a control phrase, as a reviser): about half its answers are right when
    one of the two is, so every phase of a run has work to do. ``extra_corpus`` is appended to each
    question for the tokenizer."""
    import random

    import toy
    from generate import prompt_ids
    from machinery.optim import make_optimizer
    from revise import Phrases, phrase_ids, srt_backward, srt_example
    tok = toy.make_tokenizer(CORPUS + [q + extra_corpus for q in questions], vocab_size=400)
    model = toy.make_model(tok, "XS", seed=0)
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    eos = tok.eos_token_id
    ys = [tok(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]
    examples = []
    for q in questions:
        x = prompt_ids(tok, q, task)
        for r, y in zip((1.0, 0.0), ys):
            mask = [0] * len(x) + [1] * len(y)
            examples.append({"input_ids": x + y, "rev_mask": mask, "gen_mask": mask})
            examples += [srt_example(x, y, phrase_ids(tok, Phrases().pick(r)), y1, [eos]) for y1 in ys]
    torch.manual_seed(0)
    rng = random.Random(0)
    opt = make_optimizer(model, 1e-2, 0.0, (0.9, 0.98))
    model.train()
    for _ in range(steps):
        srt_backward(model, rng.sample(examples, 16), "rev", tok.pad_token_id, 16)
        opt.step()
        opt.zero_grad()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_pad_eos_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny_pad_eos"), pad_is_eos=True)


@pytest.fixture()
def tiny(tiny_dir):
    from generate import load_model
    model, tok = load_model(tiny_dir, device="cpu", quiet=True)
    return model, tok
