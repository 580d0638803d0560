"""Shared fixtures: the real SmolLM2 model imported once per session, offline settings, compile cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch's OpenMP threads spin while waiting by default; on these shared 2-core machines that made the
# transformers peers (lm-eval's hf backend) 2.5x slower under load. Set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DATA = Path(__file__).parent / "data"


def pytest_configure(config):
    os.environ.setdefault("HF_HOME", str(Path(config.rootpath) / ".pytest_cache" / "hf_home"))
    import jax

    cache = Path(config.rootpath) / ".pytest_cache" / "jax_cache"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from vishwam_core.checkpoint import find_named_model

    return find_named_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory, smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct converted by `vishwam convert model` (the CLI path, in-process)."""
    from vishwam_core.checkpoint import convert_model

    out = tmp_path_factory.mktemp("smollm2") / "model"
    convert_model("smollm2-135m-instruct", out)
    return out


@pytest.fixture(scope="session")
def smollm2_model(smollm2_dir):
    from vishwam_core.checkpoint import load_model

    return load_model(smollm2_dir)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from vishwam_core.checkpoint import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory) -> Path:
    """A 512-token byte-level BPE trained by `convert tokenizer` on the stdlib's json package: a real
    tokenizer (special tokens, ChatML template) that trains and loads in well under a second."""
    import sysconfig

    from vishwam_core.data import convert_tokenizer

    out = tmp_path_factory.mktemp("bpe") / "tokenizer"
    convert_tokenizer([os.path.join(sysconfig.get_paths()["stdlib"], "json")], out, vocab_size=512)
    return out
