import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vishwam_core.config import ModelConfig, RopeScaling
from vishwam_core.model import KVCache, Transformer, alibi_slopes, attention_mask, forward_fn, init_model
from vishwam_core.sharding import LOGICAL_AXIS_RULES, logical_to_mesh

BASE = ModelConfig.from_name("test")
VARIANTS = {
    "gqa": BASE,
    "mha": BASE.replace(n_kv_heads=4),
    "mqa": BASE.replace(n_kv_heads=1),
    "tied_qkv_bias": BASE.replace(tie_embeddings=True, qkv_bias=True, model_type="qwen2"),
    "sliding_window": BASE.replace(sliding_window=4, model_type="mistral"),
    "alibi": BASE.replace(position="alibi", n_heads=6, n_kv_heads=2),
    "rope_linear": BASE.replace(rope_scaling=RopeScaling(kind="linear", factor=2.0)),
    "rope_llama3": BASE.replace(
        rope_scaling=RopeScaling(kind="llama3", factor=8.0, original_max_position=64)
    ),
    "rope_yarn": BASE.replace(rope_scaling=RopeScaling(kind="yarn", factor=4.0, original_max_position=64)),
}


def _random_tokens(cfg, b, t, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, cfg.vocab_size)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kv_cache_decoding_gives_the_full_forward_logits(variant):
    cfg = VARIANTS[variant]
    fwd, state = forward_fn(init_model(cfg, seed=1))
    tokens = _random_tokens(cfg, 2, 14)
    full, _ = fwd(state, tokens)
    cache = KVCache.create(cfg, batch=2, length=20)
    logits, cache = fwd(state, tokens[:, :6], cache=cache)  # prefill
    steps = [logits]
    for t in range(6, 14):  # then one token at a time
        logits, cache = fwd(state, tokens[:, t : t + 1], cache=cache)
        steps.append(logits)
    np.testing.assert_allclose(
        np.asarray(jnp.concatenate(steps, axis=1)), np.asarray(full), atol=1e-5, rtol=0
    )
    assert int(cache.index) == 14


def test_sliding_window_changes_logits_only_beyond_the_window():
    cfg = BASE.replace(sliding_window=4, model_type="mistral")
    model = init_model(cfg, seed=2)
    plain = nnx.merge(*_with_config(model, BASE))
    tokens = _random_tokens(cfg, 1, 10)
    windowed, _ = model(tokens)
    full, _ = plain(tokens)
    np.testing.assert_allclose(windowed[:, :4], full[:, :4], atol=1e-6)
    assert float(jnp.abs(windowed[:, 4:] - full[:, 4:]).max()) > 1e-4


def _with_config(model, cfg):
    graphdef, state = nnx.split(model)
    other = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))[0]
    return other, state


def test_segment_ids_stop_attention_across_documents():
    cfg = BASE
    model = init_model(cfg, seed=3)
    a, b = _random_tokens(cfg, 1, 5, seed=4), _random_tokens(cfg, 1, 7, seed=5)
    packed = jnp.concatenate([a, b], axis=1)
    segments = jnp.asarray([[1] * 5 + [2] * 7])
    positions = jnp.asarray([list(range(5)) + list(range(7))])
    logits, _ = model(packed, positions=positions, segment_ids=segments)
    alone, _ = model(b)
    np.testing.assert_allclose(logits[:, 5:], alone, atol=1e-5)


def test_attention_mask_is_causal_and_skips_empty_slots():
    q = jnp.asarray([[2, 3]])
    k = jnp.asarray([[0, 1, 2, 3, -1]])
    m = np.asarray(attention_mask(q, k, window=2))[0, 0]
    assert m.tolist() == [[False, True, True, False, False], [False, False, True, True, False]]


def test_alibi_slopes_follow_press_et_al():
    np.testing.assert_allclose(alibi_slopes(8), [2 ** -(i + 1) for i in range(8)], rtol=1e-6)
    assert len(alibi_slopes(6)) == 6


def test_every_parameter_has_logical_axes_that_the_rules_table_maps():
    model = init_model(VARIANTS["tied_qkv_bias"])
    variables = jax.tree.leaves(nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert variables
    rules = dict(LOGICAL_AXIS_RULES)
    for v in variables:
        axes = v.get_metadata()["logical_axes"]
        assert len(axes) == v.get_value().ndim
        assert all(a in rules for a in axes)
        assert len(logical_to_mesh(axes)) == v.get_value().ndim


def test_bf16_compute_stays_close_to_f32():
    cfg = BASE
    model32 = init_model(cfg, seed=6)
    graphdef, state = nnx.split(model32)
    model16 = nnx.merge(
        nnx.split(Transformer(cfg.replace(compute_dtype="bfloat16"), rngs=nnx.Rngs(0)))[0], state
    )
    tokens = _random_tokens(cfg, 1, 8)
    l32, _ = model32(tokens)
    l16, _ = model16(tokens)
    assert l16.dtype == jnp.float32  # logits are always f32
    assert float(jnp.abs(l32 - l16).max()) < 0.05
