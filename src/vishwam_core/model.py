"""The Flax NNX decoder of the Llama family: RMSNorm, RoPE (HF rotate_half layout) or ALiBi,
MHA/GQA/MQA attention with optional qkv bias and a sliding window, SwiGLU, tied or untied head,
and a KV cache for incremental decoding.

Layer weights are stacked along a leading `layers` axis and the blocks run under `jax.lax.scan`
(one compiled block whatever the depth, as MaxText's scan_layers). Every parameter carries
`logical_axes` metadata; `vishwam_core.sharding` alone maps those names to mesh axes.

This module knows nothing of training, files or text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vishwam_core.config import ModelConfig
from vishwam_core.sharding import EMBED, KV_HEADS, LAYERS, MLP, NORM, Q_HEADS, VOCAB

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# The per-layer weights, their shapes (without the leading layer axis) and logical axes.
# checkpoint.py maps these names to Hugging Face tensor names; keep the two in step.
def block_param_shapes(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    d, q, kv, f = cfg.d_model, cfg.q_dim, cfg.kv_dim, cfg.ffn_dim
    shapes = {
        "attn_norm": ((d,), (NORM,)),
        "wq": ((d, q), (EMBED, Q_HEADS)),
        "wk": ((d, kv), (EMBED, KV_HEADS)),
        "wv": ((d, kv), (EMBED, KV_HEADS)),
        "wo": ((q, d), (Q_HEADS, EMBED)),
        "mlp_norm": ((d,), (NORM,)),
        "w_gate": ((d, f), (EMBED, MLP)),
        "w_up": ((d, f), (EMBED, MLP)),
        "w_down": ((f, d), (MLP, EMBED)),
    }
    if cfg.qkv_bias:
        shapes.update(bq=((q,), (Q_HEADS,)), bk=((kv,), (KV_HEADS,)), bv=((kv,), (KV_HEADS,)))
    return shapes


def _param(value: jax.Array, axes: tuple[str, ...]) -> nnx.Param:
    return nnx.Param(value, logical_axes=axes)


class Blocks(nnx.Module):
    """All decoder blocks, each weight stacked as (n_layers, ...)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = DTYPES[cfg.param_dtype]
        normal = nnx.initializers.normal(cfg.initializer_range)
        for name, (shape, axes) in block_param_shapes(cfg).items():
            full = (cfg.n_layers, *shape)
            if name.endswith("norm"):
                value = jnp.ones(full, dtype)
            elif name.startswith("b"):
                value = jnp.zeros(full, dtype)
            else:
                value = normal(rngs.params(), full, dtype)
            setattr(self, name, _param(value, (LAYERS, *axes)))


@jax.tree_util.register_dataclass
@dataclass
class KVCache:
    """Keys and values for every layer, plus the position held in each slot (-1 = empty).

    k, v: one (B, S, K, H) array per layer (separate buffers, so each layer's update is in place
    under donation); positions: (B, S) int32; index: () int32, the next slot to write.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    positions: jax.Array
    index: jax.Array

    @classmethod
    def create(cls, cfg: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
        dtype = dtype or DTYPES[cfg.compute_dtype]
        shape = (batch, length, cfg.n_kv_heads, cfg.head_dim)
        return cls(
            k=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers)),
            v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers)),
            positions=jnp.full((batch, length), -1, jnp.int32),
            index=jnp.zeros((), jnp.int32),
        )

    @property
    def length(self) -> int:
        return self.k[0].shape[1]


class Transformer(nnx.Module):
    """Decoder-only LM. `__call__(tokens (B, T)) -> (logits (B, T, V) f32, cache or None)`."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = DTYPES[cfg.param_dtype]
        normal = nnx.initializers.normal(cfg.initializer_range)
        self.embed = _param(normal(rngs.params(), (cfg.vocab_size, cfg.d_model), dtype), (VOCAB, EMBED))
        self.blocks = Blocks(cfg, rngs=rngs)
        self.final_norm = _param(jnp.ones((cfg.d_model,), dtype), (NORM,))
        if not cfg.tie_embeddings:
            self.lm_head = _param(normal(rngs.params(), (cfg.d_model, cfg.vocab_size), dtype), (EMBED, VOCAB))

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
        remat: str = "none",
        layers: list[dict[str, jax.Array]] | None = None,
        return_hidden: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """tokens (B, T) -> logits (B, T, V) in f32 and the updated cache.

        positions default to 0.. (or the cache's next slot); segment_ids keep packed documents apart.
        `layers`, for cached inference, are the block weights split per layer (`unstack_layers`):
        a decode step then reads each weight once instead of copying a slice of the stacked array.
        return_hidden gives the final normed hidden states (B, T, D) instead; `logits()` finishes them."""
        cfg = self.cfg
        cdt = DTYPES[cfg.compute_dtype]
        B, T = tokens.shape
        if positions is None:
            start = cache.index if cache is not None else 0
            positions = jnp.broadcast_to(start + jnp.arange(T, dtype=jnp.int32), (B, T))
        positions = positions.astype(jnp.int32)

        x = self.embed.get_value().astype(cdt)[tokens]  # (B, T, D)

        if cache is None:
            k_pos = positions
            kv_segments = segment_ids
        else:
            k_pos = jax.lax.dynamic_update_slice(cache.positions, positions, (0, cache.index))
            kv_segments = None
        mask = attention_mask(positions, k_pos, segment_ids, kv_segments, cfg.sliding_window)  # (B, 1, T, S)
        bias = alibi_bias(cfg.n_heads, positions, k_pos) if cfg.position == "alibi" else None
        rope = rope_tables(cfg, positions) if cfg.position == "rope" else None

        params = {name: getattr(self.blocks, name).get_value() for name in block_param_shapes(cfg)}

        def block(x, p, kv=None):
            h = rms_norm(x, p["attn_norm"], cfg.norm_eps)
            index = None if cache is None else cache.index
            attn_out, kv = attention_block(cfg, p, h, rope, mask, bias, kv, index)
            x = x + attn_out
            h = rms_norm(x, p["mlp_norm"], cfg.norm_eps)
            x = x + swiglu(h, p["w_gate"].astype(cdt), p["w_up"].astype(cdt), p["w_down"].astype(cdt))
            return x, kv

        if cache is None:
            # Training and plain forward: one compiled block under scan (remat applies per block).
            scan_block = _remat(lambda x, p: (block(x, p)[0], None), remat)
            x, _ = jax.lax.scan(scan_block, x, params)
            new_cache = None
        else:
            # Cached inference: layers unrolled so each layer's new keys/values are written into the
            # stacked (donated) cache in place, rather than scan re-stacking the whole cache every step.
            if layers is None:
                layers = [{name: a[i] for name, a in params.items()} for i in range(cfg.n_layers)]
            ks, vs = [], []
            for i, p in enumerate(layers):
                x, (k_i, v_i) = block(x, p, (cache.k[i], cache.v[i]))
                ks.append(k_i)
                vs.append(v_i)
            new_cache = KVCache(k=tuple(ks), v=tuple(vs), positions=k_pos, index=cache.index + T)

        x = rms_norm(x, self.final_norm.get_value(), cfg.norm_eps)
        return (x if return_hidden else self.logits(x)), new_cache

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final normed hidden states (..., D) -> logits (..., V) in f32."""
        head = self.embed.get_value().T if self.cfg.tie_embeddings else self.lm_head.get_value()
        return jnp.einsum(
            "...d,dv->...v", hidden, head.astype(hidden.dtype), preferred_element_type=jnp.float32
        )


def _remat(fn: Callable, policy: str) -> Callable:
    if policy == "none":
        return fn
    if policy == "full":
        return jax.checkpoint(fn, prevent_cse=False)
    if policy == "dots":
        return jax.checkpoint(
            fn, prevent_cse=False, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable
        )
    raise ValueError(f"remat policy must be none|full|dots, got {policy!r}")


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm computed in f32, cast back (as transformers' LlamaRMSNorm)."""
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(dtype) * x32.astype(dtype)


def swiglu(x: jax.Array, w_gate: jax.Array, w_up: jax.Array, w_down: jax.Array) -> jax.Array:
    """x: (B, T, D). The matmuls run on the flattened (B*T, D) rows: for 2-D operands XLA:CPU inserts
    fewer layout copies in the backward pass than for 3-D einsums (measured ~8% of a train step)."""
    B, T, D = x.shape
    rows = x.reshape(B * T, D)  # (BT, D)
    gate = jnp.einsum("rd,df->rf", rows, w_gate)  # (BT, F)
    up = jnp.einsum("rd,df->rf", rows, w_up)
    return jnp.einsum("rf,fd->rd", jax.nn.silu(gate) * up, w_down).reshape(B, T, -1)  # (B, T, D)


def attention_block(cfg: ModelConfig, p, h, rope, mask, bias, kv=None, cache_index=None):
    """Projections, RoPE, cache update and attention for one layer. h: (B, T, D).

    kv, if given, is this layer's cache (k, v), each (B, S, K, H): the new keys and values are
    written at slot `cache_index` and attention reads the whole cache."""
    cdt = h.dtype
    B, T, _ = h.shape
    N, K, H = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    rows = h.reshape(B * T, -1)  # (BT, D): 2-D matmuls, as in swiglu
    q = jnp.einsum("rd,dq->rq", rows, p["wq"].astype(cdt))  # (BT, N*H)
    k = jnp.einsum("rd,dk->rk", rows, p["wk"].astype(cdt))  # (BT, K*H)
    v = jnp.einsum("rd,dk->rk", rows, p["wv"].astype(cdt))
    if cfg.qkv_bias:
        q, k, v = q + p["bq"].astype(cdt), k + p["bk"].astype(cdt), v + p["bv"].astype(cdt)
    q = q.reshape(B, T, N, H)  # (B, T, N, H)
    k = k.reshape(B, T, K, H)  # (B, T, K, H)
    v = v.reshape(B, T, K, H)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if kv is not None:
        k_cache, v_cache = kv
        k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, cache_index, 0, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, cache_index, 0, 0))
        kv = (k_cache, v_cache)
        k, v = k_cache.astype(cdt), v_cache.astype(cdt)  # (B, S, K, H)
    out = attention(q, k, v, mask=mask, bias=bias, scale=1.0 / math.sqrt(H))  # (B, T, N, H)
    out = jnp.einsum("rq,qd->rd", out.reshape(B * T, N * H), p["wo"].astype(cdt)).reshape(B, T, -1)
    return out, kv


# ---- attention kernels ------------------------------------------------------------------------
# The one place a backend-specific kernel plugs in. `jax.nn.dot_product_attention` lowers to XLA's
# fused attention on CPU and, given implementation="cudnn" and bf16/f16 inputs, to cuDNN's flash
# attention on GPU. A TPU Pallas kernel (e.g. jax.experimental.pallas.ops.tpu.splash_attention)
# registers itself with `register_attention_kernel("tpu", fn)`; fn takes the same arguments.
AttentionFn = Callable[..., jax.Array]
_ATTENTION_KERNELS: dict[str, AttentionFn] = {}


def register_attention_kernel(backend: str, fn: AttentionFn) -> None:
    _ATTENTION_KERNELS[backend] = fn


def attention(q, k, v, *, mask, bias, scale) -> jax.Array:
    """q: (B, T, N, H); k, v: (B, S, K, H) with N a multiple of K (GQA); mask (B, 1, T, S) bool."""
    kernel = _ATTENTION_KERNELS.get(jax.default_backend())
    if kernel is not None:
        return kernel(q, k, v, mask=mask, bias=bias, scale=scale)
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)


def attention_mask(q_pos, k_pos, q_segments=None, k_segments=None, window: int | None = None) -> jax.Array:
    """Causal by position: a query at p sees keys at positions 0..p held in valid slots (>= 0),
    within `window` (q - k < window, transformers' convention) and in the same segment."""
    qp = q_pos[:, :, None]  # (B, T, 1)
    kp = k_pos[:, None, :]  # (B, 1, S)
    mask = (kp >= 0) & (kp <= qp)
    if window is not None:
        mask &= qp - kp < window
    if q_segments is not None and k_segments is not None:
        mask &= q_segments[:, :, None] == k_segments[:, None, :]
    return mask[:, None, :, :]


def alibi_slopes(n_heads: int) -> np.ndarray:
    """Press et al.'s geometric slopes, with the interleave for head counts that are not powers of 2."""

    def pow2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return np.array(pow2(n_heads), np.float32)
    closest = 2 ** math.floor(math.log2(n_heads))
    return np.array(pow2(closest) + pow2(2 * closest)[0::2][: n_heads - closest], np.float32)


def alibi_bias(n_heads: int, q_pos, k_pos) -> jax.Array:
    slopes = jnp.asarray(alibi_slopes(n_heads))[None, :, None, None]  # (1, N, 1, 1)
    dist = (q_pos[:, None, :, None] - k_pos[:, None, None, :]).astype(jnp.float32)  # (B, 1, T, S)
    return -slopes * dist  # (B, N, T, S)


# ---- rotary embeddings --------------------------------------------------------------------------
def rope_frequencies(cfg: ModelConfig, seq_len=None) -> tuple[jax.Array, float]:
    """Inverse frequencies (H/2,) and the cos/sin scale, as transformers' ROPE_INIT_FUNCTIONS."""
    dim = cfg.head_dim
    base = cfg.rope_theta
    r = cfg.rope_scaling
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim
    if r.kind == "dynamic":
        max_pos = r.original_max_position or cfg.max_seq_len
        seq = jnp.maximum(seq_len if seq_len is not None else max_pos, max_pos).astype(jnp.float32)
        scaled_base = base * ((r.factor * seq / max_pos) - (r.factor - 1)) ** (dim / (dim - 2))
        return 1.0 / (scaled_base ** jnp.asarray(exponents)), 1.0
    inv_freq = 1.0 / (base**exponents)
    scale = 1.0
    if r.kind == "linear":
        inv_freq = inv_freq / r.factor
    elif r.kind == "llama3":
        old = r.original_max_position
        low_wavelen, high_wavelen = old / r.low_freq_factor, old / r.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        llama = np.where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq)
        smooth = (old / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor)
        smoothed = (1 - smooth) * llama / r.factor + smooth * llama
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv_freq = np.where(medium, smoothed, llama)
    elif r.kind == "yarn":
        scale = (
            r.attention_factor
            if r.attention_factor is not None
            else (0.1 * math.log(r.factor) + 1.0 if r.factor > 1 else 1.0)
        )
        orig = r.original_max_position

        def correction_dim(rotations):
            return (dim * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(base))

        low, high = correction_dim(r.beta_fast), correction_dim(r.beta_slow)
        if r.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
        extrapolation = 1 - ramp
        pos_freqs = base**exponents
        inv_freq = (1.0 / (r.factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return jnp.asarray(inv_freq, jnp.float32), scale


def rope_tables(cfg: ModelConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape (B, T, 1, H) in the HF rotate_half layout (frequencies repeated twice)."""
    seq_len = jnp.max(positions) + 1 if cfg.rope_scaling.kind == "dynamic" else None
    inv_freq, scale = rope_frequencies(cfg, seq_len)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # (B, T, H/2)
    emb = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # (B, T, 1, H)
    return jnp.cos(emb) * scale, jnp.sin(emb) * scale


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos.astype(x.dtype) + rotated * sin.astype(x.dtype)).astype(x.dtype)


# ---- helpers ---------------------------------------------------------------------------------
def init_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    return Transformer(cfg, rngs=nnx.Rngs(params=seed))


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model's structure with ShapeDtypeStructs instead of arrays (no memory, no compute)."""
    return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))


def count_params(model: Transformer) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def unstack_layers(model: Transformer) -> list[dict[str, jax.Array]]:
    """The stacked block weights as one dict of separate arrays per layer (a copy, made once)."""
    names = block_param_shapes(model.cfg)
    stacked = {n: getattr(model.blocks, n).get_value() for n in names}
    return [{n: jnp.array(stacked[n][i]) for n in names} for i in range(model.cfg.n_layers)]


def forward_fn(model: Transformer):
    """A jitted pure function (state, tokens, positions, cache) -> (logits, cache), split once.

    Splitting once and jitting over the state keeps per-call dispatch low (~1 ms) compared with
    nnx.jit's graph traversal on every call.
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def fwd(state, tokens, positions=None, cache=None):
        m = nnx.merge(graphdef, state)
        return m(tokens, positions=positions, cache=cache)

    return fwd, state
