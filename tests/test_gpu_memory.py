"""machinery/gpu_memory.py: its terms against the real objects (parameter count, KV cache), and the fit check
that stops a CUDA run before loading, in one line naming the flag to change."""
import pytest
import torch
from transformers import DynamicCache, Qwen3Config, Qwen3ForCausalLM

from machinery import gpu_memory
from machinery.gpu_memory import fit_check


def _cfg(**over):
    base = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, head_dim=24, tie_word_embeddings=True)
    return Qwen3Config(**(base | over))


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_is_the_models(tied):
    cfg = _cfg(tie_word_embeddings=tied)
    model = Qwen3ForCausalLM(cfg)
    assert gpu_memory.n_params(gpu_memory.shape(cfg)) == sum(p.numel() for p in model.parameters())


def test_paper_model_has_4_02b_parameters():
    assert round(gpu_memory.n_params(gpu_memory.shape(gpu_memory.QWEN3_4B)) / 1e9, 2) == 4.02


def test_kv_bytes_per_token_is_what_the_cache_holds():
    cfg = _cfg()
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
    cache = DynamicCache(config=cfg)
    with torch.no_grad():
        model(input_ids=torch.randint(0, 300, (2, 17)), past_key_values=cache, use_cache=True)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == gpu_memory.kv_bytes_per_token(gpu_memory.shape(cfg), 2) * 2 * 17


def _args(**over):
    import argparse
    d = dict(max_new_tokens=16384, gen_batch=4, micro_batch=1, max_teacher_tokens=32768) | over
    return argparse.Namespace(**d)


@pytest.fixture(scope="module")
def paper_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3-4b-config")
    Qwen3Config(**gpu_memory.QWEN3_4B).save_pretrained(path)      # config.json only: no weights
    return str(path)


H100 = 79 * 2 ** 30 + 600 * 2 ** 20          # what torch reports for an 80 GB H100 (about 79.6 GiB)


def test_paper_preset_fits_an_h100(paper_dir):
    fit_check(_args(), paper_dir, card_bytes=H100)                        # no exit
    pk = gpu_memory.paper_preset()
    p2 = pk["phase2"]
    assert p2["peak"] < gpu_memory.HEADROOM * H100
    # Rollouts run with gradients None, so the KV cache and a training micro-batch never coexist:
    # the peak is the static part plus the largest transient, not the sum of all of them.
    static = p2["student"] + p2["teacher"] + p2["moments"]
    assert p2["peak"] == static + max(p2["rollout_kv"], p2["training"], p2["optimizer_step"])
    assert p2["student"] == pytest.approx(8.04e9, rel=0.01) and p2["moments"] == 4 * p2["student"]
    assert 9 <= gpu_memory.rollout_capacity(pk, H100) <= 12              # 16K sequences beside the rest


@pytest.mark.parametrize("over, flag", [({"gen_batch": 64}, "--gen-batch"),
                                        ({"micro_batch": 8}, "--micro-batch")])
def test_a_run_that_cannot_fit_stops_in_one_line_naming_the_flag(paper_dir, over, flag):
    with pytest.raises(SystemExit) as e:
        fit_check(_args(**over), paper_dir, card_bytes=H100)
    msg = str(e.value)
    assert msg.startswith("error:") and "\n" not in msg and flag in msg


def test_a_card_too_small_for_the_weights_asks_for_more_gpus(paper_dir):
    with pytest.raises(SystemExit) as e:
        fit_check(_args(), paper_dir, card_bytes=40 * 2 ** 30)
    assert "torchrun" in str(e.value)


def test_fit_check_is_silent_on_cpu(paper_dir):
    if not torch.cuda.is_available():
        fit_check(_args(gen_batch=10_000), paper_dir)          # CPU: no card to check against


def test_cuda_runs_ask_for_expandable_segments_and_keep_a_users_setting(monkeypatch):
    from machinery.gpu_memory import train_precision, use_expandable_segments
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train_precision(False, False) == (None, True)          # bf16 by load_model, checkpointing on
    import os
    use_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    use_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_precision(False, False) == (None, False)         # the toy run: fp32, no checkpointing
    assert train_precision(True, False) == (torch.bfloat16, True)  # --gpu-path on CPU
