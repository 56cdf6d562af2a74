"""Shared fixtures: a tiny Qwen3-architecture model + tokenizer built offline in a few seconds.

No test touches the Hugging Face Hub. The model is random (untrained): tests that need a model that
*does* something use toy.py's builder or hand-built tensors instead.
"""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Two cores shared with pytest itself: one torch thread avoids OpenMP spin-waiting (tiny-model.md §2).
torch.set_num_threads(1)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
                 "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = [
    "user assistant What is 12+3*4? Please reason step by step, and put your final answer within "
    "\\boxed{}. 3*4=12, 12+12=24 \\boxed{24}",
    "Let me rephrase the above solution. Wait, this response is not correct, let me start over.",
    "def f(x):\n    return x + 1\n```python\nprint(int(input()) * 2)\n```",
] * 20


def build_tiny(path, *, pad_is_eos=False, hidden=32, layers=2, seed=0):
    """Byte-level BPE tokenizer + random Qwen3 model, saved as an ordinary HF folder."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import (GenerationConfig, PreTrainedTokenizerFast, Qwen3Config,
                              Qwen3ForCausalLM)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>",
        pad_token="<|im_end|>" if pad_is_eos else "<|endoftext|>",
        padding_side="left", chat_template=CHAT_TEMPLATE, model_max_length=4096)
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(hf_tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=hidden // 4, max_position_embeddings=1024, tie_word_embeddings=True,
                      pad_token_id=hf_tok.pad_token_id, eos_token_id=hf_tok.eos_token_id,
                      bos_token_id=None)
    model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=hf_tok.eos_token_id,
                                               pad_token_id=hf_tok.pad_token_id)
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
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
