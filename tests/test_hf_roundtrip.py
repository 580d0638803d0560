"""HF -> vishwam -> HF round trips on small random models that transformers builds itself."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from vishwam_core.checkpoint import convert_model, load_model, read_safetensors, save_model
from vishwam_core.model import forward_fn

SMALL = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def _build(kind: str):
    import transformers as tf

    if kind == "llama_gqa_untied":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**SMALL, tie_word_embeddings=False))
    if kind == "mistral_sliding_window":
        return tf.MistralForCausalLM(tf.MistralConfig(**SMALL, sliding_window=5, tie_word_embeddings=False))
    if kind == "qwen2_qkv_bias":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**SMALL, tie_word_embeddings=True))
    rope = {
        "rope_linear": {"rope_type": "linear", "factor": 2.0},
        "rope_dynamic": {"rope_type": "dynamic", "factor": 2.0},
        "rope_llama3": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        "rope_yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    }[kind]
    small = {**SMALL, "max_position_embeddings": 16} if kind == "rope_dynamic" else SMALL
    return tf.LlamaForCausalLM(tf.LlamaConfig(**small, rope_scaling=rope, tie_word_embeddings=False))


KINDS = [
    "llama_gqa_untied",
    "mistral_sliding_window",
    "qwen2_qkv_bias",
    "rope_linear",
    "rope_dynamic",
    "rope_llama3",
    "rope_yarn",
]


def _randomise(model):
    """Norm scales and biases start at 1 / 0 in transformers; perturb them so the test sees them."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module", params=KINDS)
def hf_model_dir(request, tmp_path_factory):
    torch.manual_seed(0)
    model = _randomise(_build(request.param)).eval()
    path = tmp_path_factory.mktemp(request.param) / "hf"
    model.save_pretrained(path)
    return request.param, model, path


def test_logits_equal_transformers(hf_model_dir, tmp_path):
    kind, hf, path = hf_model_dir
    out = tmp_path / "vishwam"
    summary = convert_model(str(path), out)
    assert summary["parameters"] == sum(p.numel() for p in hf.parameters())
    seq = 24 if kind in ("rope_dynamic", "rope_yarn", "rope_llama3") else 12  # past the original context
    tokens = np.random.default_rng(0).integers(0, SMALL["vocab_size"], (2, seq))
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    fwd, state = forward_fn(load_model(out))
    got, _ = fwd(state, tokens)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=0)


def test_reexported_tensors_are_byte_identical(hf_model_dir, tmp_path):
    _, _, path = hf_model_dir
    out = tmp_path / "vishwam"
    convert_model(str(path), out)
    original = load_file(str(path / "model.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    assert set(exported) == set(original)
    for name, arr in original.items():
        assert exported[name].dtype == arr.dtype and exported[name].tobytes() == arr.tobytes(), name


def test_transformers_loads_the_export_with_no_missing_or_unexpected_keys(hf_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    kind, hf, path = hf_model_dir
    out = tmp_path / "vishwam"
    convert_model(str(path), out)
    reloaded, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert type(reloaded) is type(hf)
    tokens = torch.tensor([[1, 5, 9, 33, 2, 7]])
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(tokens).logits.numpy(), hf(tokens).logits.numpy(), atol=1e-6)


def test_sharded_checkpoints_read_and_write(tmp_path):
    import transformers as tf

    torch.manual_seed(1)
    hf = tf.LlamaForCausalLM(tf.LlamaConfig(**SMALL)).eval()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="50KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    model = load_model(tmp_path / "hf")
    files = save_model(tmp_path / "out", model, max_shard_bytes=60_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and "model.safetensors.index.json" in files
    assert read_safetensors(tmp_path / "out").keys() == read_safetensors(tmp_path / "hf").keys()
    reloaded = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokens = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(tokens).logits.numpy(), hf(tokens).logits.numpy(), atol=1e-6)


def test_bf16_conversion_is_read_by_transformers_as_bf16(tmp_path):
    import transformers as tf

    torch.manual_seed(2)
    hf = tf.LlamaForCausalLM(tf.LlamaConfig(**SMALL)).eval()
    hf.save_pretrained(tmp_path / "hf")
    summary = convert_model(str(tmp_path / "hf"), tmp_path / "bf16", dtype="bfloat16")
    assert summary["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    reloaded = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert next(reloaded.parameters()).dtype == torch.bfloat16
    expected = hf.model.embed_tokens.weight.detach().to(torch.bfloat16)
    assert torch.equal(reloaded.model.embed_tokens.weight, expected)
