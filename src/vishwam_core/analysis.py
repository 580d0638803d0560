"""Architecture arithmetic: parameters, FLOPs, memory, planning and recommended shapes, plus a bench.

Everything but `cpu_peak_flops` and `bench` is exact integer arithmetic on a `ModelConfig` and imports
no JAX. Counts are exact; memory figures are labelled estimates of what this implementation keeps
(tests compare them with XLA's own memory analysis). Units are in the names: `_bytes`, `_flops`
(FLOP/s for peaks), `_s`.

Used by `vishwam analyze` and by the training loop's MFU (`flops_per_token`, keep its signature and
keys). Knows nothing of the CLI, terminals or Rich.
"""

from __future__ import annotations

import json
import math
import os
import platform
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vishwam_core.config import PRESETS, ModelConfig, did_you_mean, param_counts
from vishwam_core.errors import CheckpointError, VishwamError

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "int4": 0.5}
CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022's rule of thumb, not a law
DEFAULT_MFU = 0.4
QLORA_BITS_PER_PARAM = 4.127  # NF4 + double-quantized block constants (Dettmers et al. 2023, sec. 3)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ---- FLOPs ----------------------------------------------------------------------------------------
def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul per token: every linear layer plus the output head
    (the tied embedding is a matmul at the head; the input lookup and the norms are not)."""
    c = param_counts(cfg)
    norms = cfg.n_layers * 2 * cfg.d_model + cfg.d_model
    biases = cfg.n_layers * (cfg.q_dim + 2 * cfg.kv_dim) if cfg.qkv_bias else 0
    return c["non_embedding"] - norms - biases + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, int]:
    """FLOPs per token at context `seq_len` (PaLM appendix B convention, no causal discount):
    forward = 2 * matmul params + 4 * n_layers * seq_len * q_dim (scores QK^T and the weighted sum AV);
    train = 3 * forward (backward costs twice the forward)."""
    dense = 2 * matmul_params(cfg)
    attention = 4 * cfg.n_layers * seq_len * cfg.q_dim
    forward = dense + attention
    return {"forward": forward, "train": 3 * forward, "attention_forward": attention, "dense_forward": dense}


# ---- the architecture --------------------------------------------------------------------------
def describe_tokenizer(directory: Path | None, cfg: ModelConfig) -> dict[str, Any]:
    """Kind, vocabulary, special tokens and pre-tokenizer read from tokenizer.json (plain JSON: no
    tokenizers import). Without tokenizer files only the config's vocabulary size is known."""
    path = directory / "tokenizer.json" if directory is not None else None
    if path is None or not path.exists():
        return {"kind": None, "vocab_size": cfg.vocab_size, "source": "config only (no tokenizer.json)"}
    try:
        tj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from None
    model = tj.get("model") or {}
    pre = tj.get("pre_tokenizer")
    kind = model.get("type") or "unknown"
    if kind == "BPE" and "ByteLevel" in _describe_pre(pre):
        kind = "byte-level BPE"
    vocab = model.get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
    added = tj.get("added_tokens") or []
    ids += [t["id"] for t in added if "id" in t]
    tcfg_path = directory / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text()) if tcfg_path.exists() else {}

    def token(key: str) -> str | None:
        v = tcfg.get(key)
        return v.get("content") if isinstance(v, dict) else v

    special = [t["content"] for t in added if t.get("special")]
    return {
        "kind": kind,
        "vocab_size": max(ids) + 1 if ids else 0,
        "merges": len(model.get("merges") or []) if kind.endswith("BPE") else None,
        "pre_tokenizer": _describe_pre(pre) or None,
        "normalizer": (tj.get("normalizer") or {}).get("type"),
        "special_tokens": len(special),
        "special_tokens_sample": special[:8],
        "bos_token": token("bos_token"),
        "eos_token": token("eos_token"),
        "chat_template": bool(tcfg.get("chat_template") or (directory / "chat_template.jinja").exists()),
        "source": str(path),
    }


def _describe_pre(pre: dict | None) -> str:
    if not pre:
        return ""
    kind = pre.get("type", "?")
    if kind == "Sequence":
        return " + ".join(_describe_pre(p) for p in pre.get("pretokenizers", []))
    if kind == "Digits":
        return "Digits(individual)" if pre.get("individual_digits") else "Digits"
    if kind == "Split":
        return "Split(regex)"
    return kind


def architecture(cfg: ModelConfig, tokenizer: dict[str, Any]) -> dict[str, Any]:
    r = cfg.rope_scaling
    positions: dict[str, Any] = {"kind": cfg.position}
    if cfg.position == "rope":
        positions.update(theta=cfg.rope_theta, scaling=None if r.kind == "none" else r.kind)
        if r.kind != "none":
            positions.update(factor=r.factor, original_max_position=r.original_max_position)
    return {
        "model_type": cfg.model_type,
        "tokenizer": tokenizer,
        "embeddings": {
            "vocab_size": cfg.vocab_size,
            "d_model": cfg.d_model,
            "tied": cfg.tie_embeddings,
            "params": cfg.vocab_size * cfg.d_model,
        },
        "attention": {
            "kind": cfg.attention_kind,
            "n_heads": cfg.n_heads,
            "n_kv_heads": cfg.n_kv_heads,
            "queries_per_kv_head": cfg.n_heads // cfg.n_kv_heads,
            "head_dim": cfg.head_dim,
            "q_dim": cfg.q_dim,
            "kv_dim": cfg.kv_dim,
            "qkv_bias": cfg.qkv_bias,
            "positions": positions,
            "sliding_window": cfg.sliding_window,
        },
        "block": {
            "norm": "RMSNorm (pre-norm)",
            "norm_eps": cfg.norm_eps,
            "mlp": "SwiGLU",
            "ffn_dim": cfg.ffn_dim,
            "ffn_ratio": round(cfg.ffn_dim / cfg.d_model, 4),
        },
        "n_layers": cfg.n_layers,
        "d_model_per_layer": round(cfg.d_model / cfg.n_layers, 2),
        "max_seq_len": cfg.max_seq_len,
    }


def params_report(cfg: ModelConfig) -> dict[str, int]:
    c = param_counts(cfg)
    norms_per_block = 2 * cfg.d_model
    return {
        **c,
        "norms_per_block": norms_per_block,
        "final_norm": cfg.d_model,
        "blocks": cfg.n_layers * c["per_block"],
        "matmul": matmul_params(cfg),
    }


def flops_report(cfg: ModelConfig, seq_len: int) -> dict[str, int]:
    f = flops_per_token(cfg, seq_len)
    n = matmul_params(cfg)
    return {
        "seq_len": seq_len,
        **f,
        "six_n": 6 * n,  # 6N with N = matmul parameters: the train FLOPs without attention
        "attention_train": 3 * f["attention_forward"],
    }


# ---- memory --------------------------------------------------------------------------------------
def kv_cache_bytes_per_token(cfg: ModelConfig, dtype: str = "bfloat16") -> int:
    """Keys and values of every layer for one token: 2 * n_layers * n_kv_heads * head_dim * bytes."""
    return int(2 * cfg.n_layers * cfg.kv_dim * DTYPE_BYTES[dtype])


def weights_bytes(n_params: int, dtype: str) -> int:
    """Raw weight storage; quantization scales (int8/int4) are not counted."""
    return int(math.ceil(n_params * DTYPE_BYTES[dtype]))


def activation_bytes(cfg: ModelConfig, batch: int, seq_len: int, dtype: str, remat: str) -> int:
    """Estimate of the activation memory of one training step of this implementation at batch x seq_len.

    What the backward pass keeps, per token per layer (elements of `dtype`), as jax's saved residuals
    for `Transformer.__call__` show: 7 d-sized tensors (block input, norm outputs, residuals), q, k and v,
    6 ffn-sized tensors (gate, up, their SwiGLU products) and 2 n_heads x seq_len attention tensors
    (scores and probabilities: attention runs without a flash kernel on CPU). Plus, per token, the f32
    log-probabilities over the vocabulary and their gradient. remat="full" (jax.checkpoint per block)
    keeps only each block's input and recomputes one block at a time in the backward pass.
    """
    if remat not in ("none", "full"):
        raise VishwamError(f"remat must be 'none' or 'full', got '{remat}'.")
    b = DTYPE_BYTES[dtype]
    d, f = cfg.d_model, cfg.ffn_dim
    per_layer = 7 * d + cfg.q_dim + 2 * cfg.kv_dim + 6 * f + 2 * cfg.n_heads * seq_len
    tokens = batch * seq_len
    head = 2 * 4 * cfg.vocab_size * tokens
    if remat == "none":
        return int(cfg.n_layers * per_layer * tokens * b + head)
    return int((cfg.n_layers * d + per_layer) * tokens * b + head)


# Training state per parameter, by precision (AdamW: two moments).
TRAINING_PRECISIONS: dict[str, dict[str, Any]] = {
    "float32": {
        "weights": 4,
        "grads": 4,
        "optimizer": 8,
        "activations": "float32",
        "about": "f32 weights, gradients and AdamW moments; f32 compute",
    },
    "mixed": {
        "weights": 4,
        "grads": 4,
        "optimizer": 8,
        "activations": "bfloat16",
        "about": "f32 weights, gradients and AdamW moments; bf16 compute (param_dtype f32, compute_dtype bf16)",
    },
    "bfloat16": {
        "weights": 2,
        "grads": 2,
        "optimizer": 4,
        "activations": "bfloat16",
        "about": "bf16 weights, gradients and AdamW moments; bf16 compute",
    },
}


def training_memory(cfg: ModelConfig, batch: int, seq_len: int) -> dict[str, Any]:
    n = param_counts(cfg)["total"]
    out: dict[str, Any] = {"batch": batch, "seq_len": seq_len, "optimizer": "AdamW", "by_precision": {}}
    for name, p in TRAINING_PRECISIONS.items():
        states = {k: n * p[k] for k in ("weights", "grads", "optimizer")}
        acts = {r: activation_bytes(cfg, batch, seq_len, p["activations"], r) for r in ("none", "full")}
        out["by_precision"][name] = {
            **{f"{k}_bytes": v for k, v in states.items()},
            "states_bytes": sum(states.values()),
            "activations_bytes": acts,
            "total_bytes": {r: sum(states.values()) + a for r, a in acts.items()},
            "about": p["about"],
        }
    return out


def inference_memory(cfg: ModelConfig, batch: int, seq_len: int, kv_dtype: str) -> dict[str, Any]:
    n = param_counts(cfg)["total"]
    per_token = kv_cache_bytes_per_token(cfg, kv_dtype)
    return {
        "weights_bytes": {dt: weights_bytes(n, dt) for dt in ("float32", "bfloat16", "int8", "int4")},
        "kv_cache": {
            "dtype": kv_dtype,
            "bytes_per_token": per_token,
            "batch": batch,
            "seq_len": seq_len,
            "bytes": per_token * batch * seq_len,
        },
    }


def _linear_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    d, q, kv, f = cfg.d_model, cfg.q_dim, cfg.kv_dim, cfg.ffn_dim
    return {
        "q_proj": (d, q),
        "k_proj": (d, kv),
        "v_proj": (d, kv),
        "o_proj": (q, d),
        "gate_proj": (d, f),
        "up_proj": (d, f),
        "down_proj": (f, d),
    }


def parse_lora_targets(targets: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'all-linear' or comma-separated PEFT module names (q_proj,v_proj; the '_proj' may be left off)."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    items = [t.strip() for t in items if t.strip()]
    if items == ["all-linear"]:
        return LORA_TARGETS
    out = []
    for t in items:
        name = t if t.endswith("_proj") else f"{t}_proj"
        if name not in LORA_TARGETS:
            raise VishwamError(
                f"Unknown LoRA target '{t}'; use all-linear or some of {', '.join(LORA_TARGETS)}."
            )
        if name not in out:
            out.append(name)
    if not out:
        raise VishwamError("LoRA needs at least one target module, e.g. q_proj,v_proj or all-linear.")
    return tuple(out)


def lora_params(cfg: ModelConfig, rank: int, targets: tuple[str, ...]) -> int:
    """Trainable LoRA parameters: rank * (in + out) for every targeted linear in every layer."""
    shapes = _linear_shapes(cfg)
    return cfg.n_layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)


def lora_memory(cfg: ModelConfig, rank: int, targets: tuple[str, ...], batch: int, seq_len: int) -> dict:
    """LoRA (bf16 frozen base) and QLoRA (NF4 frozen linears, bf16 embeddings/norms/head) training memory.

    Adapters train with f32 weights, gradients and AdamW moments (16 bytes per trainable parameter);
    activations are the bf16 estimate of `activation_bytes` (the adapters' rank-sized intermediates are
    added)."""
    if rank <= 0:
        raise VishwamError(f"LoRA rank must be positive, got {rank}.")
    n = param_counts(cfg)["total"]
    trainable = lora_params(cfg, rank, targets)
    linears = cfg.n_layers * sum(i * o for i, o in _linear_shapes(cfg).values())
    adapter_states = trainable * 16
    adapter_acts = 2 * cfg.n_layers * len(targets) * rank * batch * seq_len  # bf16 (B, T, r) per target
    acts = {r: activation_bytes(cfg, batch, seq_len, "bfloat16", r) + adapter_acts for r in ("none", "full")}
    bases = {
        "lora": n * 2,
        "qlora": int(math.ceil(linears * QLORA_BITS_PER_PARAM / 8)) + (n - linears) * 2,
    }
    out: dict[str, Any] = {
        "rank": rank,
        "targets": list(targets),
        "trainable_params": trainable,
        "trainable_fraction": trainable / n,
    }
    for name, base in bases.items():
        out[name] = {
            "base_weights_bytes": base,
            "adapter_states_bytes": adapter_states,
            "activations_bytes": acts,
            "total_bytes": {r: base + adapter_states + a for r, a in acts.items()},
        }
    return out


# ---- accelerators and the CPU peak -------------------------------------------------------------
@dataclass(frozen=True)
class Accelerator:
    key: str
    name: str
    peak_flops: float  # FLOP/s per chip
    memory_bytes: int
    memory_label: str  # as published: GiB for TPUs, GB for NVIDIA
    source: str


def _published(key: str, name: str, tflops: float, mem: int, unit: str, vendor: str) -> Accelerator:
    scale = GIB if unit == "GiB" else 10**9
    label = f"{mem} {unit}"
    source = f"{vendor}: {tflops:g} TFLOP/s bf16 dense, {label} per chip (published, not measured)"
    return Accelerator(key, name, tflops * 1e12, mem * scale, label, source)


# Dense bf16 peak per chip and memory, from the vendors' published specifications.
ACCELERATORS: dict[str, Accelerator] = {
    a.key: a
    for a in (
        _published("tpu-v4", "TPU v4", 275, 32, "GiB", "Google Cloud TPU v4 documentation"),
        _published("tpu-v5e", "TPU v5e", 197, 16, "GiB", "Google Cloud TPU v5e documentation"),
        _published("tpu-v5p", "TPU v5p", 459, 95, "GiB", "Google Cloud TPU v5p documentation"),
        _published("tpu-v6e", "TPU v6e", 918, 32, "GiB", "Google Cloud TPU v6e (Trillium) documentation"),
        _published("a100", "A100 SXM", 312, 80, "GB", "NVIDIA A100 datasheet (80GB SXM)"),
        _published("h100", "H100 SXM", 989, 80, "GB", "NVIDIA H100 datasheet (SXM)"),
        _published("h200", "H200 SXM", 989, 141, "GB", "NVIDIA H200 datasheet (SXM)"),
    )
}
CPU_PEAK_ENV = "VISHWAM_CPU_PEAK_FLOPS"
CACHE_DIR_ENV = "VISHWAM_CACHE_DIR"


def cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vishwam"


def _cpu_key() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from importlib.metadata import version

    return f"{model} | {cores} cores | jax {version('jax')}"


def measure_cpu_matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a jitted f32 n x n matmul on the CPU backend (2 n^3 FLOPs per call), best of
    `repeats`: a peak is the ceiling, and the best call is the one least disturbed by other load."""
    import jax
    import jax.numpy as jnp

    cpu = jax.devices("cpu")[0]
    a = jax.device_put(jnp.ones((n, n), jnp.float32), cpu)
    b = jax.device_put(jnp.full((n, n), 0.5, jnp.float32), cpu)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


MEASURED_WHAT = "best of 10 jitted f32 2048x2048 matmuls"


def cpu_peak_flops(override: float | None = None, refresh: bool = False) -> dict[str, Any]:
    """The CPU's f32 matmul FLOP/s: `override`, else $VISHWAM_CPU_PEAK_FLOPS, else measured once per
    machine (CPU model, cores, jax version) and cached in cache_dir()/cpu_peak.json.

    A peak is the best the machine has shown: a figure measured while other work shared the cores is
    too low (and would inflate every MFU divided by it), so the cache keeps the load average it was
    measured under, measures again when the machine is now quieter by more than one core's worth, and
    keeps the larger figure. `refresh` measures again regardless (and still never lowers the figure)."""
    if override is not None:
        return {"flops": float(override), "source": "given (--cpu-peak)"}
    env = os.environ.get(CPU_PEAK_ENV)
    if env:
        try:
            return {"flops": float(env), "source": f"${CPU_PEAK_ENV}"}
        except ValueError:
            raise VishwamError(f"${CPU_PEAK_ENV}='{env}' is not a number of FLOP/s (e.g. 3.4e11).") from None
    key = _cpu_key()
    path = cache_dir() / "cpu_peak.json"
    cached: dict[str, Any] = {}
    if path.exists():
        try:
            cached = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            cached = {}
    load = os.getloadavg()[0]
    old = cached.get(key)
    # an entry without its load average (older vishwam) is measured again once
    if not refresh and old is not None and float(old.get("load_average", math.inf)) <= load + 1.0:
        return {"flops": float(old["flops"]), "source": f"measured {old['measured']}, cached in {path}"}
    flops = measure_cpu_matmul_flops()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entry = {"flops": flops, "measured": stamp, "load_average": round(load, 2), "what": MEASURED_WHAT}
    if old is not None and float(old["flops"]) >= flops:
        entry = {**old, "load_average": min(float(old.get("load_average", load)), round(load, 2))}
    cached[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cached, indent=2) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs a re-measurement next time
    if entry["measured"] != stamp:
        return {"flops": float(entry["flops"]), "source": f"measured {entry['measured']}, cached in {path}"}
    return {"flops": flops, "source": f"measured now ({stamp}), {MEASURED_WHAT}"}


def cpu_accelerator(peak: dict[str, Any]) -> Accelerator:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Accelerator(
        "cpu", "CPU (f32)", peak["flops"], mem, f"{mem / GIB:.3g} GiB", f"f32 matmul, {peak['source']}"
    )


def accelerator_for_device(device_kind: str) -> Accelerator | None:
    """The table entry for a jax `device_kind` string (e.g. 'NVIDIA H100 80GB HBM3', 'TPU v5 lite')."""
    k = device_kind.lower()
    for needle, key in (
        ("h200", "h200"),
        ("h100", "h100"),
        ("a100", "a100"),
        ("v6 lite", "tpu-v6e"),
        ("v6e", "tpu-v6e"),
        ("v5 lite", "tpu-v5e"),
        ("v5e", "tpu-v5e"),
        ("v5p", "tpu-v5p"),
        ("tpu v5", "tpu-v5p"),
        ("tpu v4", "tpu-v4"),
    ):
        if needle in k:
            return ACCELERATORS[key]
    return None


def select_accelerators(key: str | None, cpu_peak: float | None = None) -> list[Accelerator]:
    """All table entries plus the measured CPU, or the one named by `key`."""
    if key is None:
        return [*ACCELERATORS.values(), cpu_accelerator(cpu_peak_flops(cpu_peak))]
    if key == "cpu":
        return [cpu_accelerator(cpu_peak_flops(cpu_peak))]
    if key not in ACCELERATORS:
        raise VishwamError(f"Unknown accelerator '{key}'; choose one of {', '.join([*ACCELERATORS, 'cpu'])}.")
    return [ACCELERATORS[key]]


# ---- planning ------------------------------------------------------------------------------------
def chips_to_fit(state_bytes: int, activations_bytes: int, memory_bytes: int) -> int | None:
    """Fewest chips whose memory holds the training state fully sharded (FSDP / ZeRO-3) plus one
    chip's activations; None when the activations alone do not fit. A lower bound: no workspace."""
    free = memory_bytes - activations_bytes
    if free <= 0:
        return None
    return max(1, math.ceil(state_bytes / free))


def plan(
    cfg: ModelConfig,
    seq_len: int,
    tokens: float | None,
    mfu: float,
    chips: int | None,
    price_per_chip_hour: float | None,
    accelerators: list[Accelerator],
) -> dict[str, Any]:
    if not 0 < mfu <= 1:
        raise VishwamError(f"MFU must be in (0, 1], got {mfu}.")
    if chips is not None and chips <= 0:
        raise VishwamError(f"--chips must be positive, got {chips}.")
    n = param_counts(cfg)["total"]
    chinchilla = CHINCHILLA_TOKENS_PER_PARAM * n
    tokens = float(tokens) if tokens is not None else float(chinchilla)
    if tokens <= 0:
        raise VishwamError(f"--tokens must be positive, got {tokens:g}.")
    train_flops = flops_per_token(cfg, seq_len)["train"] * tokens
    p = TRAINING_PRECISIONS["mixed"]
    state = n * (p["weights"] + p["grads"] + p["optimizer"])
    acts = activation_bytes(cfg, 1, seq_len, "bfloat16", "full")
    rows = []
    for acc in accelerators:
        chip_hours = train_flops / (acc.peak_flops * mfu) / 3600
        fit = chips_to_fit(state, acts, acc.memory_bytes)
        use = chips or fit
        rows.append(
            {
                "key": acc.key,
                "name": acc.name,
                "peak_flops": acc.peak_flops,
                "memory_bytes": acc.memory_bytes,
                "memory": acc.memory_label,
                "source": acc.source,
                "chips_to_fit": fit,
                "chip_hours": chip_hours,
                "chips": use,
                "days": chip_hours / use / 24 if use else None,
                "cost_usd": chip_hours * price_per_chip_hour if price_per_chip_hour is not None else None,
            }
        )
    return {
        "chinchilla_tokens": chinchilla,
        "chinchilla_rule": f"Chinchilla's rule of thumb: ~{CHINCHILLA_TOKENS_PER_PARAM} tokens per parameter "
        "(Hoffmann et al. 2022)",
        "tokens": tokens,
        "seq_len": seq_len,
        "train_flops": train_flops,
        "mfu": mfu,
        "price_per_chip_hour": price_per_chip_hour,
        "fit_assumes": "mixed precision AdamW state (16 bytes/param) sharded over the chips, plus one "
        f"sequence of {seq_len} tokens per chip with full remat; no workspace (a lower bound)",
        "training_state_bytes": state,
        "activations_per_chip_bytes": acts,
        "accelerators": rows,
    }


# ---- targets ----------------------------------------------------------------------------------------
@dataclass
class Target:
    kind: str  # preset | checkpoint | config
    name: str
    cfg: ModelConfig
    path: Path | None = None
    files: dict[str, Any] | None = None


def resolve_target(target: str) -> Target:
    """A preset name, a model directory or a config.json (HF or vishwam) -> Target.

    A model directory must hold config.json and its weights (model.safetensors or an index and every
    shard it lists); the parameter count in the weight headers must equal the config's."""
    path = Path(target).expanduser()
    if path.is_dir():
        cfg = ModelConfig.from_checkpoint(path)
        files = checkpoint_files(path, cfg)
        return Target("checkpoint", path.name, cfg.replace(name=path.name), path, files)
    if path.is_file():
        cfg = ModelConfig.from_file(path)
        name = path.parent.name if path.name == "config.json" else path.stem
        return Target("config", name, cfg, path)
    if target in PRESETS:
        return Target("preset", target, ModelConfig.from_name(target))
    if os.sep in target or target.endswith(".json"):
        raise VishwamError(
            f"{target} does not exist; pass a preset name, a model directory or a config.json."
        )
    raise VishwamError(
        f"'{target}' is neither a preset, a model directory nor a config file{did_you_mean(target)}; "
        f"presets: {', '.join(PRESETS)}."
    )


def _safetensors_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            (length,) = struct.unpack("<Q", raw)
            header = json.loads(f.read(length))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt: {e})."
        ) from None
    header.pop("__metadata__", None)
    return header


def checkpoint_files(directory: Path, cfg: ModelConfig) -> dict[str, Any]:
    """Weight files of a model directory, read from their headers only (no tensor data)."""
    from vishwam_core.checkpoint import INDEX_NAME, WEIGHTS_NAME

    index = directory / INDEX_NAME
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({e}).") from None
    elif (directory / WEIGHTS_NAME).exists():
        names = [WEIGHTS_NAME]
    else:
        raise CheckpointError(
            f"{directory} has config.json but no {WEIGHTS_NAME} or {INDEX_NAME}; "
            f"pass {directory / 'config.json'} to analyze the architecture alone."
        )
    n_params, n_bytes, dtypes = 0, 0, set()
    for name in names:
        path = directory / name
        if not path.exists():
            raise CheckpointError(f"{path} is listed in {INDEX_NAME} but missing.")
        n_bytes += path.stat().st_size
        for tname, info in _safetensors_header(path).items():
            if tname.endswith(".rotary_emb.inv_freq") or (cfg.tie_embeddings and tname == "lm_head.weight"):
                continue
            n_params += math.prod(info["shape"])
            dtypes.add(info["dtype"])
    expected = param_counts(cfg)["total"]
    if n_params != expected:
        raise CheckpointError(
            f"{directory}'s weights hold {n_params:,} parameters but its config.json describes {expected:,}."
        )
    has = {
        n: (directory / n).exists()
        for n in ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
    }
    return {"weights": names, "weights_bytes": n_bytes, "params": n_params, "dtypes": sorted(dtypes), **has}


# ---- the report ---------------------------------------------------------------------------------------
def default_seq_len(cfg: ModelConfig) -> int:
    return min(cfg.max_seq_len, 4096)


def analyze(
    target: str | Target,
    *,
    seq_len: int | None = None,
    batch: int = 1,
    kv_dtype: str = "bfloat16",
    lora_rank: int = 16,
    lora_targets: str | tuple[str, ...] = "all-linear",
    tokens: float | None = None,
    mfu: float = DEFAULT_MFU,
    chips: int | None = None,
    price_per_chip_hour: float | None = None,
    cpu_peak: float | None = None,
    accelerator: str | None = None,
) -> dict[str, Any]:
    """The full report for one target (the document `vishwam analyze --json` prints). The planning
    table lists every accelerator, or only `accelerator` (a key of ACCELERATORS or 'cpu'); the CPU
    row measures the CPU's peak once per machine (see cpu_peak_flops)."""
    t = resolve_target(target) if isinstance(target, str) else target
    cfg = t.cfg
    seq_len = seq_len or default_seq_len(cfg)
    if seq_len <= 0 or batch <= 0:
        raise VishwamError(f"--seq-len and --batch must be positive, got {seq_len} and {batch}.")
    if kv_dtype not in ("float32", "bfloat16", "float16", "int8"):
        raise VishwamError(f"KV cache dtype must be float32, bfloat16, float16 or int8, got '{kv_dtype}'.")
    tok_dir = t.path if t.kind == "checkpoint" else (t.path.parent if t.path is not None else None)
    accelerators = select_accelerators(accelerator, cpu_peak)
    return {
        "target": {"kind": t.kind, "name": t.name, "path": str(t.path) if t.path else None, "files": t.files},
        "config": cfg.to_dict(),
        "architecture": architecture(cfg, describe_tokenizer(tok_dir, cfg)),
        "params": params_report(cfg),
        "flops_per_token": flops_report(cfg, seq_len),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(cfg, kv_dtype),
        "kv_cache_dtype": kv_dtype,
        "memory": {
            "inference": inference_memory(cfg, batch, seq_len, kv_dtype),
            "training": training_memory(cfg, batch, seq_len),
            "lora": lora_memory(cfg, lora_rank, parse_lora_targets(lora_targets), batch, seq_len),
        },
        "planning": plan(cfg, seq_len, tokens, mfu, chips, price_per_chip_hour, accelerators),
    }


def compare(targets: list[str], **options: Any) -> dict[str, Any]:
    """One report per target, for a side-by-side table. Each target's own default seq_len is used
    unless `seq_len` is given."""
    if len(targets) < 2:
        raise VishwamError(
            "--compare needs at least two targets separated by commas, e.g. llama-2-7b,llama-2-70b."
        )
    return {"compare": [analyze(t, **options) for t in targets]}


# ---- recommended configurations ----------------------------------------------------------------
GQA_MIN_HEADS = 16  # from 16 query heads on, 8 kv heads (Llama 3, Mistral, Qwen2.5 style)
TIE_BELOW_PARAMS = 2e9  # small published models tie embeddings (SmolLM2, Qwen2.5-0.5B..1.5B, Llama 3.2 1B)
TARGET_ASPECT = 128  # d_model / n_layers of Llama 7B/13B (4096/32, 5120/40)


def ffn_for(d_model: int, multiple: int = 256) -> int:
    """8/3 d rounded up to a multiple of 256, as Llama's SwiGLU sizing (4096 -> 11008)."""
    return multiple * math.ceil(8 * d_model / 3 / multiple)


def compute_optimal_params(flops: float) -> float:
    """N for a training budget C = 6 N D with D = 20 N (Chinchilla's rule of thumb): N = sqrt(C / 120)."""
    return math.sqrt(flops / (6 * CHINCHILLA_TOKENS_PER_PARAM))


def recommend(
    params: float | None = None,
    flops: float | None = None,
    vocab_size: int = 32000,
    head_dim: int = 128,
    max_seq_len: int = 4096,
) -> dict[str, Any]:
    """A decoder in the style of the published Llama-family configs for a parameter count or a
    training FLOP budget: head_dim 128, d_model = heads * head_dim, ffn = 8/3 d rounded up to 256,
    8 kv heads from 16 query heads on, d_model / n_layers near 128, embeddings tied below 2B.
    Returns the proposal with its exact parameter count (among candidates within 5% of the target,
    the one with the aspect ratio nearest 128)."""
    if (params is None) == (flops is None):
        raise VishwamError("--recommend needs exactly one of --params N or --flops BUDGET.")
    if flops is not None:
        if flops <= 0:
            raise VishwamError(f"--flops must be positive, got {flops:g}.")
        goal = compute_optimal_params(flops)
    else:
        if params <= 0:
            raise VishwamError(f"--params must be positive, got {params:g}.")
        goal = float(params)
    if vocab_size <= 0 or head_dim <= 0 or head_dim % 2:
        raise VishwamError("--vocab must be positive and --head-dim a positive even number.")
    candidates = []
    for n_heads in range(1, 257):
        n_kv = n_heads if n_heads < GQA_MIN_HEADS else 8
        if n_heads % n_kv:
            continue
        d = n_heads * head_dim
        base = ModelConfig(
            name="recommended",
            vocab_size=vocab_size,
            d_model=d,
            n_layers=1,
            n_heads=n_heads,
            n_kv_heads=n_kv,
            head_dim=head_dim,
            ffn_dim=ffn_for(d),
            tie_embeddings=goal < TIE_BELOW_PARAMS,
            max_seq_len=max_seq_len,
            rope_theta=500000.0 if max_seq_len > 4096 else 10000.0,
        )
        c = param_counts(base)
        fixed = c["total"] - c["per_block"]
        layers = round((goal - fixed) / c["per_block"])
        if layers < 1:
            continue
        cfg = base.replace(n_layers=layers)
        total = param_counts(cfg)["total"]
        candidates.append((cfg, total))
    if not candidates:
        raise VishwamError(f"No configuration of head_dim {head_dim} reaches {goal:.3g} parameters.")
    near = [(c, t) for c, t in candidates if abs(t / goal - 1) <= 0.05] or [
        min(candidates, key=lambda ct: abs(ct[1] / goal - 1))
    ]
    cfg, total = min(
        near,
        key=lambda ct: (abs(math.log(ct[0].d_model / ct[0].n_layers / TARGET_ASPECT)), abs(ct[1] - goal)),
    )
    tokens = CHINCHILLA_TOKENS_PER_PARAM * total
    return {
        "goal": {"params": params, "flops": flops, "params_target": goal},
        "rules": {
            "head_dim": head_dim,
            "ffn": "8/3 d_model rounded up to a multiple of 256",
            "kv_heads": f"{GQA_MIN_HEADS}+ query heads -> 8 kv heads (GQA), fewer -> MHA",
            "aspect": f"d_model / n_layers nearest {TARGET_ASPECT} within 5% of the target count",
            "tied_embeddings": f"below {TIE_BELOW_PARAMS:.0e} parameters",
            "tokens": f"Chinchilla's rule of thumb: ~{CHINCHILLA_TOKENS_PER_PARAM} tokens per parameter",
        },
        "config": cfg.to_dict(),
        "params": params_report(cfg),
        "relative_error": total / goal - 1,
        "aspect_ratio": cfg.d_model / cfg.n_layers,
        "chinchilla_tokens": tokens,
        "train_flops_chinchilla": flops_per_token(cfg, min(max_seq_len, 4096))["train"] * tokens,
        "flops_per_token": flops_report(cfg, min(max_seq_len, 4096)),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(cfg),
    }


# ---- the bench ------------------------------------------------------------------------------------------
def bench(
    target: str | Target,
    *,
    batch: int = 4,
    prompt_len: int = 64,
    new_tokens: int = 16,
    repeats: int = 3,
    seed: int = 0,
    cpu_peak: float | None = None,
) -> dict[str, Any]:
    """Measure on the current default device: prefill tokens/s and forward MFU at (batch, prompt_len),
    greedy decode tokens/s at batch 1 and `batch` (through the generation engine), and peak memory.

    A checkpoint is loaded (f32 compute); a preset or config gets random weights. Decode goes through
    the generation engine (compiled once per bucket, timed after a warm-up). Prefill time is the median of `repeats` calls
    after a warm-up call. MFU = flops_per_token(cfg, prompt_len)['forward'] * tokens / time / peak,
    with the measured f32 matmul peak on CPU and the table's bf16 peak elsewhere."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vishwam_core.model import KVCache, forward_fn, init_model

    if min(batch, prompt_len, new_tokens, repeats) <= 0:
        raise VishwamError("--bench-batch, --prompt-len, --new-tokens and repeats must be positive.")
    t = resolve_target(target) if isinstance(target, str) else target
    cfg = t.cfg
    cache_len = prompt_len + new_tokens + 1  # +1: the warm-up decode step
    if cache_len > cfg.max_seq_len:
        raise VishwamError(
            f"--prompt-len + --new-tokens ({cache_len - 1}) exceeds the model's max_seq_len {cfg.max_seq_len}."
        )
    t0 = time.perf_counter()
    if t.kind == "checkpoint":
        from vishwam_core.checkpoint import load_model

        model = load_model(t.path)
        weights = "checkpoint"
    else:
        from flax import nnx

        f32 = cfg.replace(param_dtype="float32", compute_dtype="float32")
        model = nnx.jit(lambda: init_model(f32, seed=seed))()  # one compile, not one per initializer
        weights = f"random (seed {seed})"
    cfg = model.cfg
    load_s = time.perf_counter() - t0
    fwd, state = forward_fn(model)
    rng = np.random.default_rng(seed)
    device = jax.devices()[0]

    def prompts(b: int):
        return jnp.asarray(rng.integers(0, cfg.vocab_size, (b, prompt_len)), jnp.int32)

    def prefill(tokens):
        cache = KVCache.create(cfg, tokens.shape[0], cache_len)
        logits, cache = fwd(state, tokens, cache=cache)
        return jnp.argmax(logits[:, -1], -1).astype(jnp.int32)[:, None], cache

    tokens = prompts(batch)
    jax.block_until_ready(prefill(tokens))  # compile + warm-up
    times = []
    for _ in range(repeats):
        t1 = time.perf_counter()
        jax.block_until_ready(prefill(tokens))
        times.append(time.perf_counter() - t1)
    prefill_s = sorted(times)[len(times) // 2]
    fpt = flops_per_token(cfg, prompt_len)["forward"]
    if device.platform == "cpu":
        peak = cpu_peak_flops(cpu_peak)
        peak_flops, peak_source = peak["flops"], f"CPU f32 matmul, {peak['source']}"
    else:
        acc = accelerator_for_device(device.device_kind)
        peak_flops = acc.peak_flops if acc else None
        peak_source = acc.source if acc else f"no published peak known for '{device.device_kind}'"

    from vishwam_core.generate import Engine, SamplingParams

    engine = Engine(model)
    params = SamplingParams(max_new_tokens=new_tokens)
    decode = []
    for b in sorted({1, batch}):
        rows = [list(map(int, row)) for row in np.asarray(prompts(b))]
        engine.generate(rows, params)  # compile + warm-up for this bucket
        r = max((engine.generate(rows, params) for _ in range(repeats)), key=lambda r: r.decode_tokens_per_s)
        steps = max(new_tokens - 1, 1)
        decode.append(
            {
                "batch": b,
                "new_tokens": new_tokens,
                "seconds": r.decode_seconds,
                "ms_per_step": 1000 * r.decode_seconds / steps,
                "tokens_per_s": r.decode_tokens_per_s,
            }
        )
    prefill_tokens = batch * prompt_len
    result = {
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count()},
        "weights": weights,
        "param_dtype": cfg.param_dtype,
        "compute_dtype": cfg.compute_dtype,
        "load_s": load_s,
        "cache_len": cache_len,
        "prefill": {
            "batch": batch,
            "prompt_len": prompt_len,
            "seconds": prefill_s,
            "tokens_per_s": prefill_tokens / prefill_s,
            "flops_per_token": fpt,
            "achieved_flops": fpt * prefill_tokens / prefill_s,
            "peak_flops": peak_flops,
            "peak_source": peak_source,
            "mfu": fpt * prefill_tokens / prefill_s / peak_flops if peak_flops else None,
        },
        "decode": decode,
        "decode_method": "vishwam_core.generate.Engine, greedy, best of `repeats` after a warm-up",
        "predicted_bytes": {
            "weights": weights_bytes(param_counts(cfg)["total"], cfg.param_dtype),
            "kv_cache": kv_cache_bytes_per_token(cfg, cfg.compute_dtype) * batch * cache_len,
        },
    }
    result.update(_peak_memory(device))
    return result


def _peak_memory(device) -> dict[str, Any]:
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return {
            "peak_memory_bytes": int(stats["peak_bytes_in_use"]),
            "peak_memory_source": "device memory_stats",
        }
    import resource

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "peak_memory_bytes": int(rss_kib) * 1024,
        "peak_memory_source": "process peak RSS (ru_maxrss): the CPU backend keeps arrays in host memory",
    }
