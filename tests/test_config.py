import pytest

from vishwam_core.config import PRESETS, ModelConfig, RopeScaling, param_counts
from vishwam_core.errors import VishwamError

# Published parameter counts (model cards / transformers' num_parameters()).
PUBLISHED = {
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "mistral-7b": 7_241_732_096,
    "qwen2.5-32b": 32_763_876_352,
    "llama-2-70b": 68_976_648_192,
    "smollm2-135m": 134_515_008,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_are_exact(name):
    assert param_counts(ModelConfig.from_name(name))["total"] == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_counts_match_the_tensors_the_model_would_create(name):
    from vishwam_core.model import abstract_model, count_params

    cfg = ModelConfig.from_name(name)
    assert count_params(abstract_model(cfg)) == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_dict(name):
    cfg = ModelConfig.from_name(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", ["smollm2-135m", "mistral-7b", "qwen2.5-32b", "llama-3-8b"])
def test_hf_config_round_trip(name):
    cfg = ModelConfig.from_name(name)
    back = ModelConfig.from_hf_config(cfg.to_hf_config(), name=name)
    assert back == cfg


def test_transformers_configs_map_to_the_same_architecture():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    llama = ModelConfig.from_hf_config(
        LlamaConfig(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=100,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
        )
    )
    assert (llama.n_kv_heads, llama.head_dim, llama.rope_scaling.kind, llama.rope_scaling.factor) == (
        2,
        16,
        "linear",
        2.0,
    )
    mistral = ModelConfig.from_hf_config(
        MistralConfig(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=7,
            num_hidden_layers=1,
            vocab_size=50,
        )
    )
    assert mistral.sliding_window == 7 and mistral.model_type == "mistral"
    qwen = ModelConfig.from_hf_config(
        Qwen2Config(
            hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1, vocab_size=50
        )
    )
    assert qwen.qkv_bias and qwen.sliding_window is None


def test_unsupported_architecture_is_one_sentence():
    with pytest.raises(VishwamError, match="Unsupported architecture 'GPT2LMHeadModel'"):
        ModelConfig.from_hf_config({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})


def test_invalid_configs_are_rejected():
    with pytest.raises(VishwamError, match="multiple of n_kv_heads"):
        ModelConfig(n_heads=6, n_kv_heads=4)
    with pytest.raises(VishwamError, match="Unknown rope scaling"):
        RopeScaling(kind="fancy")
    with pytest.raises(VishwamError, match="Unknown preset"):
        ModelConfig.from_name("gpt-5")
    with pytest.raises(VishwamError, match="ALiBi"):
        ModelConfig.from_name("test").replace(position="alibi").to_hf_config()


def test_config_imports_without_jax():
    import subprocess
    import sys

    code = "import sys, vishwam_core.config; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
