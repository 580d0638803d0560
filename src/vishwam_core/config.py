"""Model architecture configuration: one frozen dataclass, named presets, and the Hugging Face mapping.

This module knows nothing of JAX or of files beyond reading a JSON config; it is imported by the CLI
for `--help`-time work and by every phase that builds a model.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vishwam_core.errors import VishwamError

ROPE_KINDS = ("none", "linear", "dynamic", "llama3", "yarn")
POSITION_KINDS = ("rope", "alibi")
DTYPES = ("float32", "bfloat16", "float16")
HF_MODEL_TYPES = ("llama", "mistral", "qwen2")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling, with the semantics of transformers' `modeling_rope_utils`."""

    kind: str = "none"  # none | linear | dynamic | llama3 | yarn
    factor: float = 1.0
    original_max_position: int | None = None  # llama3, yarn, dynamic
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn: scales cos/sin; default 0.1 ln(factor) + 1
    truncate: bool = True  # yarn: round the correction range to whole dimensions

    def __post_init__(self) -> None:
        if self.kind not in ROPE_KINDS:
            raise VishwamError(
                f"Unknown rope scaling '{self.kind}'; expected one of {', '.join(ROPE_KINDS)}."
            )
        if self.kind != "none" and self.factor <= 0:
            raise VishwamError(f"Rope scaling factor must be positive, got {self.factor}.")


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer of the Llama family (Llama, Mistral, Qwen2, SmolLM)."""

    name: str = "custom"
    vocab_size: int = 32000
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 32
    head_dim: int = 128
    ffn_dim: int = 11008
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    position: str = "rope"  # rope | alibi
    tie_embeddings: bool = False
    qkv_bias: bool = False
    sliding_window: int | None = None
    max_seq_len: int = 4096
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    model_type: str = "llama"  # the Hugging Face family this maps to: llama | mistral | qwen2

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise VishwamError(f"Invalid model config '{self.name}': {msg}.")

        for f in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim"):
            need(int(getattr(self, f)) > 0, f"{f} must be positive")
        need(
            self.n_heads % self.n_kv_heads == 0,
            f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})",
        )
        need(self.position in POSITION_KINDS, f"position must be one of {POSITION_KINDS}")
        need(
            self.position == "rope" or self.rope_scaling.kind == "none", "rope scaling needs position='rope'"
        )
        need(self.head_dim % 2 == 0 or self.position != "rope", "head_dim must be even for RoPE")
        need(self.param_dtype in DTYPES, f"param_dtype must be one of {DTYPES}")
        need(self.compute_dtype in DTYPES, f"compute_dtype must be one of {DTYPES}")
        need(self.sliding_window is None or self.sliding_window > 0, "sliding_window must be positive")
        need(self.model_type in HF_MODEL_TYPES, f"model_type must be one of {HF_MODEL_TYPES}")
        need(self.norm_eps > 0, "norm_eps must be positive")

    # ---- derived -------------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def attention_kind(self) -> str:
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"

    def replace(self, **changes: Any) -> ModelConfig:
        if isinstance(changes.get("rope_scaling"), dict):
            changes["rope_scaling"] = RopeScaling(**changes["rope_scaling"])
        return dataclasses.replace(self, **changes)

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VishwamError(f"Unknown model config fields: {', '.join(unknown)}.")
        d = dict(d)
        if isinstance(d.get("rope_scaling"), dict):
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)

    @classmethod
    def from_name(cls, name: str) -> ModelConfig:
        if name not in PRESETS:
            raise VishwamError(
                f"Unknown preset '{name}'{did_you_mean(name)}; known presets: {', '.join(PRESETS)}."
            )
        return PRESETS[name]

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """A Hugging Face `config.json` or a vishwam config JSON (the output of `to_dict`)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise VishwamError(f"Config file {path} does not exist.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VishwamError(f"Config file {path} is not valid JSON ({e}).") from None
        if not isinstance(d, dict):
            raise VishwamError(f"Config file {path} does not hold a JSON object.")
        if "model_type" in d and "d_model" not in d:
            return cls.from_hf_config(d)
        return cls.from_dict(d)

    @classmethod
    def from_checkpoint(cls, directory: str | Path) -> ModelConfig:
        path = Path(directory) / "config.json"
        if not path.exists():
            raise VishwamError(f"{directory} is not a model directory: it has no config.json.")
        return cls.from_file(path)

    # ---- Hugging Face mapping ------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any] | Any, name: str | None = None) -> ModelConfig:
        """From a transformers LlamaConfig / MistralConfig / Qwen2Config (object or dict)."""
        if not isinstance(hf, dict):
            hf = hf.to_dict()
        model_type = hf.get("model_type")
        if model_type not in HF_MODEL_TYPES:
            arch = ", ".join(hf.get("architectures") or []) or str(model_type)
            raise VishwamError(
                f"Unsupported architecture '{arch}': vishwam reads Llama, Mistral and Qwen2 models "
                f"(model_type llama, mistral or qwen2)."
            )
        for flag in ("attention_bias", "mlp_bias"):
            if model_type == "llama" and hf.get(flag):
                raise VishwamError(f"Unsupported Llama variant: {flag}=true is not implemented in vishwam.")
        if hf.get("hidden_act", "silu") != "silu":
            raise VishwamError(
                f"Unsupported activation '{hf['hidden_act']}': vishwam implements SwiGLU (silu)."
            )
        if hf.get("pretraining_tp", 1) not in (1, None):
            raise VishwamError("Unsupported Llama variant: pretraining_tp > 1.")
        n_heads = hf["num_attention_heads"]
        d_model = hf["hidden_size"]
        head_dim = hf.get("head_dim") or d_model // n_heads
        # transformers 5 moved rope_theta and rope_scaling into `rope_parameters`.
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
        rope_kind = rope.get("rope_type", rope.get("type", "default")) or "default"
        sliding_window = hf.get("sliding_window")
        if model_type == "qwen2":
            if not hf.get("use_sliding_window", False):
                sliding_window = None
            elif (
                hf.get("max_window_layers", 0) not in (0,)
                and hf.get("max_window_layers") < hf["num_hidden_layers"]
            ):
                raise VishwamError("Unsupported Qwen2 variant: sliding window on only some layers.")
        if model_type == "llama":
            sliding_window = None
        return cls(
            name=name or hf.get("_name_or_path") or model_type,
            vocab_size=hf["vocab_size"],
            d_model=d_model,
            n_layers=hf["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            head_dim=head_dim,
            ffn_dim=hf["intermediate_size"],
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=_rope_from_hf(rope_kind, rope, hf),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2",
            sliding_window=sliding_window,
            max_seq_len=int(hf.get("max_position_embeddings", 4096)),
            param_dtype=_dtype_from_hf(hf.get("dtype") or hf.get("torch_dtype") or "float32"),
            compute_dtype="float32",
            initializer_range=float(hf.get("initializer_range", 0.02)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            model_type=model_type,
        )

    def to_hf_config(self) -> dict[str, Any]:
        """A `config.json` dict that transformers loads as Llama/Mistral/Qwen2ForCausalLM."""
        if self.position != "rope":
            raise VishwamError(
                "ALiBi models have no Hugging Face Llama-family equivalent; export needs position='rope'."
            )
        if self.qkv_bias and self.model_type != "qwen2":
            raise VishwamError("qkv_bias maps only to Qwen2; set model_type='qwen2' to export it.")
        if self.sliding_window and self.model_type == "llama":
            raise VishwamError("A sliding window maps to Mistral or Qwen2; set model_type accordingly.")
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
        hf: dict[str, Any] = {
            "architectures": [arch[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.ffn_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": _rope_to_hf(self.rope_scaling),
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_seq_len,
            "initializer_range": self.initializer_range,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.param_dtype,
            "use_cache": True,
        }
        if self.model_type == "llama":
            hf.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
        elif self.model_type == "mistral":
            hf["sliding_window"] = self.sliding_window
        else:
            hf.update(
                use_sliding_window=self.sliding_window is not None,
                sliding_window=self.sliding_window,
                max_window_layers=0 if self.sliding_window else self.n_layers,
            )
        return hf


_HF_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
}


def _dtype_from_hf(name: str) -> str:
    return _HF_DTYPES.get(str(name).replace("torch.", ""), "float32")


def _rope_from_hf(kind: str, rope: dict[str, Any], hf: dict[str, Any]) -> RopeScaling:
    if kind == "default":
        return RopeScaling()
    if kind not in ("linear", "dynamic", "llama3", "yarn"):
        raise VishwamError(
            f"Unsupported rope scaling '{kind}': vishwam implements linear, dynamic, llama3 and yarn."
        )
    if kind == "yarn" and (rope.get("mscale") or rope.get("mscale_all_dim")):
        raise VishwamError("Unsupported yarn variant: mscale / mscale_all_dim are not implemented.")
    orig = rope.get("original_max_position_embeddings")
    if kind == "dynamic" or (orig is None and kind in ("yarn", "llama3")):
        # transformers' dynamic NTK scales against max_position_embeddings, whatever else is set.
        orig = hf.get("max_position_embeddings")
    return RopeScaling(
        kind=kind,
        factor=float(rope.get("factor", 1.0)),
        original_max_position=orig,
        low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
        high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
        beta_fast=float(rope.get("beta_fast", 32.0)),
        beta_slow=float(rope.get("beta_slow", 1.0)),
        attention_factor=rope.get("attention_factor"),
        truncate=bool(rope.get("truncate", True)),
    )


def _rope_to_hf(r: RopeScaling) -> dict[str, Any] | None:
    if r.kind == "none":
        return None
    out: dict[str, Any] = {"rope_type": r.kind, "factor": r.factor}
    if r.kind in ("llama3", "yarn") and r.original_max_position is not None:
        out["original_max_position_embeddings"] = r.original_max_position
    if r.kind == "llama3":
        out.update(low_freq_factor=r.low_freq_factor, high_freq_factor=r.high_freq_factor)
    if r.kind == "yarn":
        out.update(beta_fast=r.beta_fast, beta_slow=r.beta_slow, truncate=r.truncate)
        if r.attention_factor is not None:
            out["attention_factor"] = r.attention_factor
    return out


# Presets. Each comment gives the published parameter count the preset must reproduce exactly
# (tests/test_config.py checks them).
PRESETS: dict[str, ModelConfig] = {
    # ~0.1M parameters: unit tests.
    "test": ModelConfig(
        name="test",
        vocab_size=256,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        ffn_dim=128,
        max_seq_len=256,
        rope_theta=10000.0,
        tie_embeddings=False,
    ),
    # ~5M parameters: trains on a laptop CPU in minutes (the demo).
    "demo": ModelConfig(
        name="demo",
        vocab_size=8192,
        d_model=256,
        n_layers=4,
        n_heads=8,
        n_kv_heads=4,
        head_dim=32,
        ffn_dim=688,
        max_seq_len=1024,
        rope_theta=10000.0,
        tie_embeddings=True,
    ),
    # HuggingFaceTB/SmolLM2-135M: 134,515,008 parameters.
    "smollm2-135m": ModelConfig(
        name="smollm2-135m",
        vocab_size=49152,
        d_model=576,
        n_layers=30,
        n_heads=9,
        n_kv_heads=3,
        head_dim=64,
        ffn_dim=1536,
        norm_eps=1e-5,
        rope_theta=100000.0,
        tie_embeddings=True,
        max_seq_len=8192,
        bos_token_id=1,
        eos_token_id=2,
    ),
    # meta-llama/Llama-2-7b-hf: 6,738,415,616 parameters.
    "llama-2-7b": ModelConfig(
        name="llama-2-7b",
        vocab_size=32000,
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=32,
        head_dim=128,
        ffn_dim=11008,
        norm_eps=1e-5,
        rope_theta=10000.0,
        max_seq_len=4096,
    ),
    # meta-llama/Meta-Llama-3-8B: 8,030,261,248 parameters.
    "llama-3-8b": ModelConfig(
        name="llama-3-8b",
        vocab_size=128256,
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        head_dim=128,
        ffn_dim=14336,
        norm_eps=1e-5,
        rope_theta=500000.0,
        max_seq_len=8192,
        bos_token_id=128000,
        eos_token_id=128001,
    ),
    # mistralai/Mistral-7B-v0.1: 7,241,732,096 parameters.
    "mistral-7b": ModelConfig(
        name="mistral-7b",
        vocab_size=32000,
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        head_dim=128,
        ffn_dim=14336,
        norm_eps=1e-5,
        rope_theta=10000.0,
        sliding_window=4096,
        max_seq_len=32768,
        model_type="mistral",
    ),
    # Qwen/Qwen2.5-32B: 32,763,876,352 parameters.
    "qwen2.5-32b": ModelConfig(
        name="qwen2.5-32b",
        vocab_size=152064,
        d_model=5120,
        n_layers=64,
        n_heads=40,
        n_kv_heads=8,
        head_dim=128,
        ffn_dim=27648,
        norm_eps=1e-6,
        rope_theta=1000000.0,
        qkv_bias=True,
        max_seq_len=131072,
        model_type="qwen2",
        bos_token_id=151643,
        eos_token_id=151643,
    ),
    # meta-llama/Llama-2-70b-hf: 68,976,648,192 parameters.
    "llama-2-70b": ModelConfig(
        name="llama-2-70b",
        vocab_size=32000,
        d_model=8192,
        n_layers=80,
        n_heads=64,
        n_kv_heads=8,
        head_dim=128,
        ffn_dim=28672,
        norm_eps=1e-5,
        rope_theta=10000.0,
        max_seq_len=4096,
    ),
}


def suggest_presets(name: str, n: int = 3) -> list[str]:
    """Preset names close to `name` (difflib), best first."""
    return difflib.get_close_matches(name.lower(), list(PRESETS), n=n, cutoff=0.5)


def did_you_mean(name: str, names: Iterable[str] | None = None) -> str:
    """' (did you mean a, b or c?)' for the presets (or `names`) close to `name`, or ''."""
    if names is None:
        close = suggest_presets(name)
    else:
        close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)
    if not close:
        return ""
    either = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f" (did you mean {either}?)"


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Exact parameter counts, matching the tensors the model creates (tests check both agree)."""
    d, q, kv = cfg.d_model, cfg.q_dim, cfg.kv_dim
    attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if cfg.qkv_bias else 0)
    mlp = 3 * d * cfg.ffn_dim
    norms = 2 * d
    per_block = attn + mlp + norms
    embedding = cfg.vocab_size * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    total = embedding + cfg.n_layers * per_block + d + head
    return {
        "total": total,
        "embedding": embedding,
        "lm_head": head,
        "non_embedding": total - embedding - head,
        "per_block": per_block,
        "attention_per_block": attn,
        "mlp_per_block": mlp,
    }
