"""The ONE training loop: run config, train state, optimizer, the jitted step, SPMD sharding, orbax
checkpoints with exact resume, metrics, and Hugging Face export.

Contract:
- `RunConfig` is composed of sub-configs (model, data, optim, mesh, checkpoint); `resolve_run_config`
  applies the fixed precedence defaults -> run preset (by model preset name) -> config file -> flags, and
  `train()` writes the resolved config to `RUN_DIR/config.json`.
- The train state is a plain pytree `{"params", "opt_state", "step", "rng"}` (params as a pure dict of
  arrays; `rng` advances every step for objectives that sample, as distillation and RLHF will; lm and
  sft draw nothing from it); the model is split once and `train_step` (a module-level function) is
  jitted where it is called, with the state donated and its shardings pinned.
- Restore order (one place): build the fresh state in its shardings, then orbax restores every array
  into those shardings (any mesh), then each process reloads its own loader position, then
  metrics.jsonl is cut back to the restored step.
- Parameters are sharded by their `logical_axes` metadata through `sharding.logical_to_mesh` (the one
  rules table); the batch spreads over (data, fsdp). Each process reads its own rows of the global batch.
- Checkpoints (orbax, `RUN_DIR/checkpoints/step_N`) hold the train state and the loader's `state_dict()`;
  resuming from one replays exactly the run that wrote it (same losses, same parameters, bit for bit).
- Data arrives through a `DataSource` (the shard manifest plus a loader factory); the default reads
  `vishwam_core.shards`. Objectives, distillation and RLHF plug in as losses, not as new loops.

This module knows nothing of terminals: the CLI passes `log` and `on_step` callbacks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vishwam_core.config import PRESETS, ModelConfig
from vishwam_core.errors import VishwamError

PRECISIONS = {"f32": "float32", "bf16": "bfloat16"}
REMAT_POLICIES = ("none", "full", "dots")
OBJECTIVES = ("lm", "sft")
SCHEDULES = ("constant", "cosine", "linear", "wsd")
DECAY_EXCLUDABLE = ("norms", "biases", "embeddings")

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"
CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "model"


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field carrying its one-line description (shown by `describe_config`)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise VishwamError(f"Invalid run config: {msg}.")


# ---- run config ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSection:
    name: str | None = _f(None, "Architecture: a preset name, a config.json, or a model directory.")
    init_from: str | None = _f(None, "A model directory whose weights start the run (continue/fine-tune).")
    precision: str = _f("f32", "f32: f32 params and compute; bf16: f32 params, bf16 compute (loss in f32).")
    remat: str = _f("none", "Rematerialisation of each block in the backward pass: none | full | dots.")
    overrides: dict = _f({}, "ModelConfig fields replaced on top of the architecture (e.g. vocab_size).")

    def __post_init__(self) -> None:
        _need(self.name is not None or self.init_from is not None, "give --model or --init-from")
        _need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        _need(self.remat in REMAT_POLICIES, f"remat must be one of {', '.join(REMAT_POLICIES)}")


@dataclass(frozen=True)
class DataSection:
    path: str | None = _f(None, "The shards directory (manifest.json + shards) written by `convert data`.")
    batch_size: int = _f(8, "Global batch size in sequences (split over data x fsdp and over hosts).")
    seq_len: int | None = _f(None, "Tokens per sequence; default the shards' seq_len (rows may be cropped).")
    objective: str = _f("lm", "lm: every next token is a target; sft: only tokens the loss mask marks.")
    seed: int = _f(0, "Seed of the loader's shuffle.")
    val_split: str = _f("val", "Split used for validation loss and perplexity.")
    prefetch: int = _f(2, "Batches the loader prepares ahead.")

    def __post_init__(self) -> None:
        _need(self.path is not None, "give --data")
        _need(self.batch_size > 0, "batch_size must be positive")
        _need(self.seq_len is None or self.seq_len > 0, "seq_len must be positive")
        _need(self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}")
        _need(self.prefetch >= 0, "prefetch must be >= 0")


@dataclass(frozen=True)
class OptimSection:
    lr: float = _f(3e-4, "Peak learning rate.")
    schedule: str = _f("cosine", "constant | cosine | linear | wsd (warmup-stable-decay), after warmup.")
    warmup_steps: int = _f(0, "Steps of linear warmup to the peak learning rate.")
    min_lr_ratio: float = _f(0.1, "Final learning rate as a fraction of the peak (cosine, linear, wsd).")
    decay_fraction: float = _f(0.2, "wsd: the fraction of all steps spent in the final decay.")
    b1: float = _f(0.9, "AdamW beta1.")
    b2: float = _f(0.95, "AdamW beta2.")
    eps: float = _f(1e-8, "AdamW epsilon.")
    weight_decay: float = _f(0.1, "Decoupled weight decay.")
    decay_exclude: list = _f(
        ["norms", "biases"], "Parameters without weight decay: norms, biases, embeddings."
    )
    grad_clip: float | None = _f(1.0, "Clip gradients to this global norm (null: no clipping).")
    grad_accum: int = _f(1, "Micro-batches per step (the batch is split; gradients are summed exactly).")
    z_loss: float = _f(0.0, "Weight of the z-loss (log Z)^2 that keeps the softmax normaliser near 0.")

    def __post_init__(self) -> None:
        _need(self.lr > 0, "lr must be positive")
        _need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}")
        _need(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]")
        _need(0 <= self.decay_fraction <= 1, "decay_fraction must be in [0, 1]")
        _need(0 <= self.b1 < 1 and 0 <= self.b2 < 1, "b1 and b2 must be in [0, 1)")
        _need(self.eps > 0 and self.weight_decay >= 0, "eps must be positive and weight_decay >= 0")
        bad = sorted(set(self.decay_exclude) - set(DECAY_EXCLUDABLE))
        _need(not bad, f"decay_exclude takes {', '.join(DECAY_EXCLUDABLE)}, not {', '.join(bad)}")
        _need(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or null")
        _need(self.grad_accum >= 1, "grad_accum must be >= 1")
        _need(self.z_loss >= 0, "z_loss must be >= 0")


@dataclass(frozen=True)
class MeshSection:
    spec: str = _f("data=-1", "Device mesh, e.g. data=2,fsdp=-1,tensor=1 (product = device count).")


@dataclass(frozen=True)
class CheckpointSection:
    every_steps: int | None = _f(1000, "Save the train state every N steps (null: only by time and at end).")
    every_minutes: float | None = _f(None, "Also save when this many minutes passed since the last save.")
    keep: int = _f(3, "Checkpoints kept (the oldest are deleted).")
    async_save: bool = _f(True, "Write checkpoints in the background while training continues.")
    export_every: int | None = _f(None, "Also write a Hugging Face model directory every N steps.")

    def __post_init__(self) -> None:
        _need(self.every_steps is None or self.every_steps > 0, "checkpoint every_steps must be positive")
        _need(self.every_minutes is None or self.every_minutes > 0, "every_minutes must be positive")
        _need(self.keep >= 1, "keep must be >= 1")
        _need(self.export_every is None or self.export_every > 0, "export_every must be positive")


@dataclass(frozen=True)
class RunConfig:
    model: ModelSection = _f(None, "What to train.")
    data: DataSection = _f(None, "What to train on.")
    optim: OptimSection = _f(None, "How to update.")
    mesh: MeshSection = _f(None, "Where to run.")
    checkpoint: CheckpointSection = _f(None, "What to keep.")
    out: str | None = _f(None, "RUN_DIR: config.json, metrics.jsonl, loss.png, checkpoints/, model/.")
    steps: int | None = _f(None, "Optimizer steps to train (or give tokens).")
    tokens: int | None = _f(None, "Tokens to train on; steps = ceil(tokens / (batch_size * seq_len)).")
    seed: int = _f(0, "Seed of parameter initialisation and of the train state's RNG.")
    eval_every: int | None = _f(None, "Validation loss every N steps, and at the start and end.")
    eval_batches: int = _f(4, "Validation batches per evaluation (the same ones each time).")
    log_every: int = _f(1, "Write a metrics line every N steps.")
    max_bad_steps: int = _f(0, "Skip up to this many steps with a non-finite loss/gradient before stopping.")
    cost_per_hour: float | None = _f(None, "Price of the machine per hour, for the cost estimate.")

    def __post_init__(self) -> None:
        for name, section in SECTIONS.items():
            _need(isinstance(getattr(self, name), section), f"{name} must be a {section.__name__}")
        _need(self.out is not None, "give --out")
        _need((self.steps is None) != (self.tokens is None), "give exactly one of --steps and --tokens")
        _need((self.steps or 1) > 0 and (self.tokens or 1) > 0, "steps and tokens must be positive")
        _need(self.eval_every is None or self.eval_every > 0, "eval_every must be positive")
        _need(self.eval_batches > 0 and self.log_every > 0, "eval_batches and log_every must be positive")
        _need(self.max_bad_steps >= 0, "max_bad_steps must be >= 0")
        _need(self.cost_per_hour is None or self.cost_per_hour >= 0, "cost_per_hour must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        _check_keys(d, cls, "")
        kw = {k: v for k, v in d.items() if k not in SECTIONS}
        for name, section in SECTIONS.items():
            kw[name] = section(**d.get(name, {}))
        return cls(**kw)


SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "optim": OptimSection,
    "mesh": MeshSection,
    "checkpoint": CheckpointSection,
}

# Run defaults that suit a model preset, applied between the defaults and the config file.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "test": {
        "data": {"batch_size": 8},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.0},
    },
    "demo": {
        "data": {"batch_size": 16},
        "optim": {"lr": 3e-3, "warmup_steps": 50, "schedule": "cosine", "weight_decay": 0.1},
        "eval_every": 50,
    },
    "smollm2-135m": {
        "data": {"batch_size": 32},
        "optim": {"lr": 3e-3, "warmup_steps": 2000, "schedule": "wsd", "weight_decay": 0.01},
    },
}


def _check_keys(d: dict[str, Any], cls: type, where: str) -> None:
    if not isinstance(d, dict):
        raise VishwamError(f"Run config {where or 'root'} must be a mapping, not {type(d).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise VishwamError(
            f"Unknown run config field '{where}{unknown[0]}'; known: {', '.join(sorted(known))}."
        )
    for name, section in SECTIONS.items():
        if cls is RunConfig and name in d:
            _check_keys(d[name], section, f"{name}.")


def config_defaults() -> dict[str, Any]:
    """The defaults as a nested dict (without instantiating: required fields stay None)."""

    def of(cls: type) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS and cls is RunConfig:
                out[f.name] = of(SECTIONS[f.name])
            elif f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            else:
                out[f.name] = f.default_factory()
        return out

    return of(RunConfig)


def describe_config() -> dict[str, str]:
    """`section.field` -> one-line description, for every field."""
    out = {}
    for f in dataclasses.fields(RunConfig):
        if f.name in SECTIONS:
            for g in dataclasses.fields(SECTIONS[f.name]):
                out[f"{f.name}.{g.name}"] = g.metadata["help"]
        else:
            out[f.name] = f.metadata["help"]
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "overrides":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A run config as JSON (or YAML when the name ends .yaml/.yml), nested by section."""
    path = Path(path)
    if not path.is_file():
        raise VishwamError(f"Config file {path} does not exist.")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text) or {}
        else:
            d = json.loads(text)
    except Exception as e:  # json and yaml raise different types; both mean the file is malformed
        raise VishwamError(f"Config file {path} cannot be parsed ({type(e).__name__}: {e}).") from None
    _check_keys(d, RunConfig, "")
    return d


def resolve_run_config(
    flags: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    saved: dict[str, Any] | None = None,
) -> RunConfig:
    """defaults -> run preset of the model -> config file -> flags (a nested dict of given flags only).

    `saved` (a resumed run's config.json) replaces defaults, preset and file: a resumed run continues
    with what it was started with, and flags may still change e.g. the step count."""
    flags = flags or {}
    _check_keys(flags, RunConfig, "")
    file = read_config_file(config_file) if config_file else {}
    if saved is not None:
        return RunConfig.from_dict(deep_merge(deep_merge(saved, file), flags))
    name = flags.get("model", {}).get("name") or file.get("model", {}).get("name")
    d = config_defaults()
    if name in RUN_PRESETS:
        d = deep_merge(d, RUN_PRESETS[name])
    return RunConfig.from_dict(deep_merge(deep_merge(d, file), flags))


def resolve_model_config(section: ModelSection) -> ModelConfig:
    """The architecture (preset, config.json, or a model directory's / --init-from's config),
    with overrides and the precision applied: params stay f32, compute follows --precision."""
    if section.name is None:
        cfg = ModelConfig.from_checkpoint(section.init_from)
    elif section.name in PRESETS:
        cfg = ModelConfig.from_name(section.name)
    elif Path(section.name).is_dir():
        cfg = ModelConfig.from_checkpoint(section.name)
    elif Path(section.name).is_file():
        cfg = ModelConfig.from_file(section.name)
    else:
        raise VishwamError(
            f"--model {section.name} is neither a preset ({', '.join(PRESETS)}) nor a config file or "
            "model directory."
        )
    if section.overrides:
        try:
            cfg = cfg.replace(**section.overrides)
        except TypeError as e:
            raise VishwamError(f"Bad model override ({e}).") from None
    cfg = cfg.replace(param_dtype="float32", compute_dtype=PRECISIONS[section.precision])
    if section.init_from is not None and section.name is not None:
        parent = ModelConfig.from_checkpoint(section.init_from)
        if _architecture(parent) != _architecture(cfg):
            raise VishwamError(
                f"--init-from {section.init_from} holds a different architecture than --model "
                f"{section.name}; drop --model to take the checkpoint's."
            )
    return cfg


def _architecture(cfg: ModelConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    for k in ("name", "param_dtype", "compute_dtype", "bos_token_id", "eos_token_id", "pad_token_id"):
        d.pop(k)
    return d


def total_steps(cfg: RunConfig, seq_len: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    return math.ceil(cfg.tokens / (cfg.data.batch_size * seq_len))


# ---- optimizer ------------------------------------------------------------------------------------
def make_schedule(o: OptimSection, steps: int) -> Callable:
    """Learning rate as a function of the optimizer's update count (0-based).

    Warmup reaches the peak on update `warmup_steps - 1` (the first update already moves: lr/warmup).
    """
    import jax.numpy as jnp

    peak, floor, warm = o.lr, o.lr * o.min_lr_ratio, o.warmup_steps
    decay_start = steps - round(o.decay_fraction * steps) if o.schedule == "wsd" else warm

    def schedule(count):
        s = jnp.asarray(count, jnp.float32)
        warmup = peak * jnp.minimum((s + 1) / max(warm, 1), 1.0)
        span = max(steps - decay_start, 1)
        p = jnp.clip((s - decay_start) / span, 0.0, 1.0)
        if o.schedule == "constant":
            after = jnp.asarray(peak, jnp.float32)
        elif o.schedule == "cosine":
            after = floor + (peak - floor) * 0.5 * (1 + jnp.cos(jnp.pi * p))
        else:  # linear, and wsd's decay (its stable phase is p == 0)
            after = peak + (floor - peak) * p
        return jnp.where(s < warm, warmup, after)

    return schedule


def decay_mask(params_meta: dict[str, Any], exclude) -> dict[str, Any]:
    """True where weight decay applies. norms: parameters with a norm axis; biases: bq/bk/bv;
    embeddings: parameters with a vocab axis (the token embedding and an untied head)."""
    from vishwam_core.sharding import NORM, VOCAB

    def keep(path: tuple[str, ...], axes: tuple[str, ...]) -> bool:
        if "norms" in exclude and NORM in axes:
            return False
        if "biases" in exclude and path[-1] in ("bq", "bk", "bv"):
            return False
        if "embeddings" in exclude and VOCAB in axes:
            return False
        return True

    return _map_with_path(keep, params_meta)


def make_optimizer(o: OptimSection, steps: int, params_meta: dict[str, Any]):
    import optax

    schedule = make_schedule(o, steps)
    adamw = optax.adamw(
        schedule,
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
        weight_decay=o.weight_decay,
        mask=decay_mask(params_meta, set(o.decay_exclude)),
    )
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), adamw) if o.grad_clip else adamw
    return tx, schedule


def _map_with_path(fn: Callable, tree: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        k: _map_with_path(fn, v, (*path, k)) if isinstance(v, dict) else fn((*path, k), v)
        for k, v in tree.items()
    }


def params_metadata(cfg: ModelConfig) -> dict[str, Any]:
    """Pure dict mirroring the params, holding each parameter's logical axes (from the model)."""
    from flax import nnx

    from vishwam_core.model import abstract_model

    out: dict[str, Any] = {}
    for path, var in nnx.to_flat_state(nnx.state(abstract_model(cfg), nnx.Param)):
        node = out
        for k in path[:-1]:
            node = node.setdefault(str(k), {})
        node[str(path[-1])] = tuple(var.logical_axes)
    return out


# ---- losses and steps -------------------------------------------------------------------------------
def token_losses(logits, targets, weights, z_loss: float):
    """Summed next-token NLL and z-loss over weighted targets, in f32.

    logits (B, T, V) f32, targets (B, T) int32, weights (B, T) f32 (0 = not a target)."""
    import jax
    import jax.numpy as jnp

    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)  # (B, T)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # (B, T)
    nll = jnp.sum((logz - target_logit) * weights)
    z = jnp.sum(z_loss * jnp.square(logz) * weights) if z_loss else jnp.zeros((), jnp.float32)
    return nll, z


def loss_and_grads(params, batch, denom, *, graphdef, z_loss: float, remat: str):
    """Gradients of (NLL + z-loss) / denom, and the summed NLL, for one (micro-)batch.

    Dividing by the token count of the whole step (not of the micro-batch) makes accumulated gradients
    equal to those of the undivided batch."""
    import jax
    from flax import nnx

    def objective(p):
        model = nnx.merge(graphdef, p)
        logits, _ = model(
            batch["inputs"],
            positions=batch.get("positions"),
            segment_ids=batch.get("segment_ids"),
            remat=remat,
        )  # (B, T, V) f32
        nll, z = token_losses(logits, batch["targets"], batch["weights"], z_loss)
        return (nll + z) / denom, nll

    (_, nll), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return grads, nll


def train_step(state, batch, *, graphdef, tx, schedule, grad_accum: int, z_loss: float, remat: str):
    """One optimizer step. A step whose loss or gradient is not finite leaves params and optimizer
    state unchanged (the host decides whether to stop); `step` and `rng` always advance."""
    import jax
    import jax.numpy as jnp
    import optax

    params = state["params"]
    tokens = jnp.sum(batch["weights"])
    denom = jnp.maximum(tokens, 1.0)
    grad_fn = partial(loss_and_grads, graphdef=graphdef, z_loss=z_loss, remat=remat)
    if grad_accum == 1:
        grads, nll = grad_fn(params, batch, denom)
    else:
        # (B, ...) -> (A, B/A, ...) taking every A-th row, so each device keeps its own rows.
        micro = jax.tree.map(
            lambda x: x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]).swapaxes(0, 1), batch
        )

        def body(carry, mb):
            g, n = grad_fn(params, mb, denom)
            return (jax.tree.map(jnp.add, carry[0], g), carry[1] + n), None

        zeros = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
        (grads, nll), _ = jax.lax.scan(body, zeros, micro)
    loss = nll / denom
    grad_norm = optax.tree.norm(grads)
    updates, new_opt = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = partial(jax.tree.map, lambda new, old: jnp.where(ok, new, old))
    new_state = {
        "params": keep(new_params, params),
        "opt_state": keep(new_opt, state["opt_state"]),
        "step": state["step"] + 1,
        "rng": jax.random.split(state["rng"])[0],
    }
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": schedule(_update_count(state["opt_state"])),
        "ok": ok,
        "tokens": tokens,
    }
    return new_state, metrics


def eval_step(params, batch, *, graphdef, remat: str = "none"):
    """Summed NLL and target count of one validation batch."""
    import jax.numpy as jnp
    from flax import nnx

    model = nnx.merge(graphdef, params)
    logits, _ = model(
        batch["inputs"], positions=batch.get("positions"), segment_ids=batch.get("segment_ids"), remat=remat
    )  # (B, T, V) f32
    nll, _ = token_losses(logits, batch["targets"], batch["weights"], 0.0)
    return nll, jnp.sum(batch["weights"])


def _update_count(opt_state):
    """The optimizer's update count (the `count` of optax's Adam state)."""
    import jax

    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        if getattr(path[-1], "name", None) == "count":
            return leaf
    raise RuntimeError("optimizer state has no update count")


def prepare_batch(
    raw: dict[str, np.ndarray], seq_len: int, objective: str, mask_is_padding: bool = True
) -> dict[str, np.ndarray]:
    """Loader rows (B, seq_len + 1) -> inputs, targets and target weights (B, seq_len).

    sft: only targets the loss mask marks. lm: every target except padding; the loss mask marks exactly
    the padding when `mask_is_padding` (plain-text shards), else padding is segment 0. Either way a
    target in another packed document than its input (or in padding, segment 0) does not count."""
    ids = raw["input_ids"][:, : seq_len + 1]  # (B, T + 1)
    out = {"inputs": ids[:, :-1].astype(np.int32), "targets": ids[:, 1:].astype(np.int32)}
    weights = np.ones(out["targets"].shape, np.float32)
    if objective == "sft" or (mask_is_padding and "loss_mask" in raw):
        if "loss_mask" not in raw:
            raise VishwamError(
                "--objective sft needs shards with a loss_mask (chat/instruct data); these have none."
            )
        weights *= raw["loss_mask"][:, 1 : seq_len + 1].astype(np.float32)
    if "segment_ids" in raw:
        seg = raw["segment_ids"][:, : seq_len + 1]  # (B, T + 1)
        weights *= ((seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] != 0)).astype(np.float32)
        out["segment_ids"] = seg[:, :-1].astype(np.int32)
    if "positions" in raw:
        out["positions"] = raw["positions"][:, :seq_len].astype(np.int32)
    out["weights"] = weights
    return out


# ---- data source ------------------------------------------------------------------------------------
class DataSource:
    """The manifest of a shards directory and a factory of resumable loaders over its splits.

    The default reads `vishwam_core.shards`; tests pass their own object with the same interface."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise VishwamError(f"Data directory {self.directory} does not exist.")
        try:
            from vishwam_core.shards import read_manifest
        except ImportError:
            raise VishwamError(
                "Reading shards needs vishwam_core.shards (the data loader), which this install lacks."
            ) from None
        self.manifest = read_manifest(self.directory)

    def loader(self, split: str, **kw: Any):
        """A ShardLoader over `split`; kw: batch_size, seed, process_index, process_count, prefetch, state."""
        from vishwam_core.shards import ShardLoader

        return ShardLoader(self.directory, split=split, **kw)

    @property
    def tokenizer_path(self) -> Path | None:
        tok = self.manifest.get("tokenizer") or {}
        if not tok.get("file"):
            return None
        p = Path(tok["file"])
        return p if p.is_absolute() else self.directory / p

    @property
    def manifest_hash(self) -> str:
        """sha256 of manifest.json, which lists every shard file with its own sha256."""
        from vishwam_core.checkpoint import file_sha256

        return file_sha256(self.directory / "manifest.json")


def check_data_fits(cfg: ModelConfig, source, init_from: str | None, seq_len: int) -> None:
    """Refuse, before training starts, data whose tokenizer or token ids do not fit the model."""
    manifest = source.manifest
    data_seq = int(manifest["seq_len"])
    if seq_len > data_seq:
        raise VishwamError(f"--seq-len {seq_len} exceeds the shards' seq_len {data_seq}.")
    if seq_len > cfg.max_seq_len:
        raise VishwamError(f"--seq-len {seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}.")
    vocab = manifest.get("vocab_size")
    tok_path = source.tokenizer_path
    if tok_path is not None and tok_path.exists():
        from vishwam_core.tokenizer import Tokenizer

        data_tok = Tokenizer.from_dir(tok_path)
        vocab = data_tok.backend.get_vocab_size(with_added_tokens=True)
        parent_tok = Path(init_from) / "tokenizer.json" if init_from else None
        if parent_tok is not None and parent_tok.exists():
            if Tokenizer.from_dir(parent_tok).backend.get_vocab() != data_tok.backend.get_vocab():
                raise VishwamError(
                    f"The shards were tokenized with a different tokenizer than {init_from}'s; "
                    "re-convert the data with that model's tokenizer."
                )
    if vocab is not None and int(vocab) > cfg.vocab_size:
        raise VishwamError(
            f"The shards' tokenizer has {vocab} tokens but the model's vocab_size is {cfg.vocab_size}; "
            "use a model whose vocabulary covers it (e.g. a model override vocab_size)."
        )


def with_data_special_tokens(cfg: ModelConfig, manifest: dict[str, Any]) -> ModelConfig:
    """The model's bos/eos/pad ids as the shards' tokenizer defines them, so an export generates and
    stops with the tokenizer it ships with."""
    tok = manifest.get("tokenizer") or {}
    ids = {"bos_token_id": "bos_id", "eos_token_id": "eos_id", "pad_token_id": "pad_id"}
    changes = {field: tok[key] for field, key in ids.items() if key in tok}
    return cfg.replace(**changes) if changes else cfg


# ---- sharding -------------------------------------------------------------------------------------
def param_shardings(meta: dict[str, Any], shapes: dict[str, Any], mesh) -> dict[str, Any]:
    """NamedSharding per parameter from its logical axes, checking every sharded dim divides."""
    from jax.sharding import NamedSharding

    from vishwam_core.sharding import logical_to_mesh

    def one(path, axes):
        spec = logical_to_mesh(axes)
        shape = _get(shapes, path).shape
        for dim, mesh_axes in zip(shape, spec, strict=True):
            names = (mesh_axes,) if isinstance(mesh_axes, str) else (mesh_axes or ())
            n = math.prod(mesh.shape[a] for a in names)
            if dim % n:
                raise VishwamError(
                    f"Parameter {'.'.join(path)} has a dimension of {dim} that mesh axes "
                    f"{'x'.join(names)} ({n} devices) cannot split evenly; choose another --mesh."
                )
        return NamedSharding(mesh, spec)

    return _map_with_path(one, meta)


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def batch_sharding(mesh):
    from jax.sharding import NamedSharding

    from vishwam_core.sharding import BATCH, LENGTH, logical_to_mesh

    return NamedSharding(mesh, logical_to_mesh((BATCH, LENGTH)))


def maybe_initialize_distributed(env: dict[str, str] | None = None) -> bool:
    """`jax.distributed.initialize()` when the environment describes several processes.

    TPU pods (TPU_WORKER_HOSTNAMES with several hosts), SLURM / Open MPI jobs with several tasks, or an
    explicit JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID) turn it on."""
    env = dict(os.environ if env is None else env)
    explicit = "JAX_COORDINATOR_ADDRESS" in env
    pod = "," in env.get("TPU_WORKER_HOSTNAMES", "")
    tasks = max(int(env.get("SLURM_NTASKS", "1") or 1), int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1))
    if not (explicit or pod or tasks > 1):
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    # CPU processes need a collectives backend to talk to each other; accelerators bring their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit and "JAX_NUM_PROCESSES" in env:
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()
    return True


def check_batch_layout(batch_size: int, grad_accum: int, mesh_sizes: dict[str, int], process_count: int):
    shards = mesh_sizes["data"] * mesh_sizes["fsdp"]
    if batch_size % shards:
        raise VishwamError(
            f"--batch-size {batch_size} is not divisible by data x fsdp = {shards}; use a multiple of {shards}."
        )
    if batch_size % process_count:
        raise VishwamError(f"--batch-size {batch_size} is not divisible by the {process_count} processes.")
    if batch_size % (grad_accum * shards):
        raise VishwamError(
            f"--batch-size {batch_size} does not split into {grad_accum} micro-batches over "
            f"{shards} batch shards; use a multiple of {grad_accum * shards}."
        )


# ---- peak FLOP/s for MFU ------------------------------------------------------------------------------
def device_peak_flops() -> tuple[float | None, str]:
    """(FLOP/s per device, where it came from): analysis's published table for accelerators, and on CPU
    its f32 matmul peak, measured once per machine and cached (or $VISHWAM_CPU_PEAK_FLOPS)."""
    import jax

    from vishwam_core.analysis import accelerator_for_device, cpu_peak_flops

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        peak = cpu_peak_flops()
        return peak["flops"], f"CPU f32 matmul, {peak['source']}"
    acc = accelerator_for_device(dev.device_kind)
    if acc is None:
        return None, f"no published peak for '{dev.device_kind}'"
    return acc.peak_flops, acc.source


# ---- checkpoints -------------------------------------------------------------------------------------
def checkpoint_manager(run_dir: Path, c: CheckpointSection):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=c.keep,
        enable_async_checkpointing=c.async_save,
        step_prefix="step",
        create=True,
        cleanup_tmp_directories=True,  # a kill -9 mid-save leaves a temporary step behind
    )
    return ocp.CheckpointManager((run_dir / CHECKPOINT_DIR).absolute(), options=options)


def existing_checkpoint_steps(run_dir: Path) -> list[int]:
    """Completed orbax steps in RUN_DIR (temporary, half-written ones are not listed)."""
    ckpt = run_dir / CHECKPOINT_DIR
    if not ckpt.is_dir():
        return []
    steps = []
    for p in ckpt.iterdir():
        name = p.name
        if p.is_dir() and name.startswith("step_") and name[5:].isdigit():
            steps.append(int(name[5:]))
    return sorted(steps)


def _save(mngr, step: int, state, loader_state: dict[str, Any]) -> None:
    """The train state, and every process's loader state (each reads its own rows)."""
    import orbax.checkpoint as ocp

    loaders = {"processes": _gather_json(loader_state)}
    mngr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), loader=ocp.args.JsonSave(loaders)),
        force=True,
    )


def _gather_json(d: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON-able dict from every process, in process order (a no-op with one process)."""
    import jax

    if jax.process_count() == 1:
        return [d]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(d).encode(), np.uint8)
    n = int(np.max(multihost_utils.process_allgather(np.array([raw.size], np.int32))))
    buf = np.zeros(n, np.uint8)
    buf[: raw.size] = raw
    rows = multihost_utils.process_allgather(buf)  # (P, n); JSON holds no NUL bytes
    return [json.loads(bytes(row).rstrip(b"\0")) for row in np.asarray(rows)]


def _restore(mngr, step: int, target):
    import jax
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    out = mngr.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), loader=ocp.args.JsonRestore()),
    )
    return out["state"], out["loader"]


# ---- the loop ----------------------------------------------------------------------------------------
@dataclass
class _Stop:
    """Set by SIGINT/SIGTERM: the loop finishes the step, saves a checkpoint and returns."""

    signum: int | None = None


class Trainer:
    """The pieces of one run on one mesh: model graph, optimizer, shardings, the jitted steps.

    `init_state()` builds the train state in its shardings and compiles-on-first-call `step_fn`
    (train_step with the state donated and its shardings pinned) and `eval_fn`."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: RunConfig,
        mesh,
        steps: int,
        seq_len: int,
        mask_is_padding: bool = True,
    ):
        import jax
        from flax import nnx

        from vishwam_core.model import abstract_model

        self.model_cfg, self.cfg, self.mesh, self.steps, self.seq_len = model_cfg, cfg, mesh, steps, seq_len
        self.mask_is_padding = mask_is_padding
        self.graphdef, abstract = nnx.split(abstract_model(model_cfg))
        self.abstract_params = nnx.to_pure_dict(abstract)
        self.meta = params_metadata(model_cfg)
        self.param_shardings = param_shardings(self.meta, self.abstract_params, mesh)
        self.tx, self.schedule = make_optimizer(cfg.optim, steps, self.meta)
        self.batch_sharding = batch_sharding(mesh)
        self.replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self.n_params = int(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.abstract_params)))

    def init_state(self) -> dict[str, Any]:
        import jax
        import jax.numpy as jnp

        params = _initial_params(self.model_cfg, self.cfg, self.param_shardings)
        opt_state = self.tx.init(params)  # eager: the moments inherit the params' shardings
        opt_state = jax.tree.map(
            lambda x: x if _on_mesh(x, self.mesh) else jax.device_put(x, self.replicated), opt_state
        )
        state = {
            "params": params,
            "opt_state": opt_state,
            "step": jax.device_put(jnp.zeros((), jnp.int32), self.replicated),
            "rng": jax.device_put(jax.random.PRNGKey(self.cfg.seed), self.replicated),
        }
        self.state_shardings = jax.tree.map(lambda x: x.sharding, state)
        o = self.cfg.optim
        self.step_fn = jax.jit(
            partial(
                train_step,
                graphdef=self.graphdef,
                tx=self.tx,
                schedule=self.schedule,
                grad_accum=o.grad_accum,
                z_loss=o.z_loss,
                remat=self.cfg.model.remat,
            ),
            donate_argnums=0,
            out_shardings=(self.state_shardings, self.replicated),
        )
        self.eval_fn = jax.jit(partial(eval_step, graphdef=self.graphdef), out_shardings=self.replicated)
        return state

    def to_global(self, raw: dict[str, np.ndarray]) -> dict[str, Any]:
        """This process's loader rows -> global batch arrays sharded over (data, fsdp)."""
        import jax

        b = prepare_batch(raw, self.seq_len, self.cfg.data.objective, self.mask_is_padding)
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v) for k, v in b.items()}


def train(
    cfg: RunConfig,
    *,
    resume: bool = False,
    force: bool = False,
    source=None,
    log: Callable[[str], None] = lambda m: None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    handle_signals: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Run (or resume) one training run; returns the summary (also the CLI's --json document)."""
    import jax

    from vishwam_core.analysis import flops_per_token
    from vishwam_core.sharding import make_mesh

    run_dir = Path(cfg.out)
    existing = existing_checkpoint_steps(run_dir)
    if existing and not (resume or force):
        raise VishwamError(
            f"{run_dir} already holds a run's checkpoints (latest step {existing[-1]}); pass --resume to "
            "continue it or --force to start over."
        )
    if force and not resume:
        for name in (CHECKPOINT_DIR, EXPORT_DIR, "exports"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in (METRICS_NAME, PLOT_NAME):
            (run_dir / name).unlink(missing_ok=True)
        existing = []

    maybe_initialize_distributed()
    model_cfg = resolve_model_config(cfg.model)
    mesh = make_mesh(cfg.mesh.spec)
    mesh_sizes = dict(mesh.shape)
    pcount, pindex = jax.process_count(), jax.process_index()
    check_batch_layout(cfg.data.batch_size, cfg.optim.grad_accum, mesh_sizes, pcount)
    local_batch = cfg.data.batch_size // pcount
    source = source if source is not None else DataSource(cfg.data.path)
    seq_len = cfg.data.seq_len or int(source.manifest["seq_len"])
    check_data_fits(model_cfg, source, cfg.model.init_from, seq_len)
    model_cfg = with_data_special_tokens(model_cfg, source.manifest)
    splits = source.manifest.get("splits")
    if cfg.eval_every and splits is not None and not splits.get(cfg.data.val_split, {}).get("rows", 0):
        raise VishwamError(
            f"The shards have no '{cfg.data.val_split}' rows to validate on (splits: "
            f"{', '.join(splits)}); pass --eval-every 0 or re-convert them with a validation fraction."
        )
    steps = total_steps(cfg, seq_len)

    if resume and existing and (run_dir / CONFIG_NAME).exists():
        saved = RunConfig.from_dict(json.loads((run_dir / CONFIG_NAME).read_text()))
        if _architecture(resolve_model_config(saved.model)) != _architecture(model_cfg):
            raise VishwamError(
                f"The checkpoints in {run_dir} are of another architecture than --model "
                f"{cfg.model.name or cfg.model.init_from}; resume with the run's own model or use another --out."
            )
    is_main = pindex == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    # Text shards mark only padding in loss_mask; chat/instruct shards mark the replies.
    mask_is_padding = source.manifest.get("format", "text") == "text"
    trainer = Trainer(model_cfg, cfg, mesh, steps, seq_len, mask_is_padding)
    with jax.set_mesh(mesh):
        state = trainer.init_state()
        mngr = checkpoint_manager(run_dir, cfg.checkpoint)
        loader_state = None
        start = 0
        if resume and existing:
            latest = mngr.latest_step()
            state, loaders = _restore(mngr, latest, state)
            if len(loaders["processes"]) != pcount:
                raise VishwamError(
                    f"The checkpoint at step {latest} was written by {len(loaders['processes'])} processes; "
                    f"resume with as many (this job has {pcount}) so each reads the same rows again."
                )
            loader_state = loaders["processes"][pindex]
            start = int(state["step"])
            log(f"Resumed {run_dir} from step {start}.")
        elif resume:
            log(f"No checkpoint in {run_dir}; starting a fresh run.")
        metrics_path = run_dir / METRICS_NAME
        history = _truncate_metrics(metrics_path, start) if is_main else []
        loader_kw = dict(
            batch_size=local_batch, process_index=pindex, process_count=pcount, prefetch=cfg.data.prefetch
        )

        def evaluate() -> dict[str, float]:
            return evaluate_loss(
                trainer, state["params"], source, cfg.data.val_split, cfg.eval_batches, loader_kw
            )

        loader = source.loader("train", **loader_kw, seed=cfg.data.seed, state=loader_state)
        batches: Iterator = iter(loader)
        train_flops = flops_per_token(model_cfg, seq_len)["train"]
        peak, peak_source = device_peak_flops()
        tokens_per_step = cfg.data.batch_size * seq_len

        stop = _Stop()
        previous = _install_signal_handlers(stop) if handle_signals else None
        t0 = time.monotonic()
        last_save = t0
        timed_steps = 0
        timed_seconds = 0.0
        bad_steps = sum(1 for m in history if m.get("skipped"))
        status = "completed"
        last = {}
        first_val = next((m for m in history if "val_loss" in m), None)
        metrics_file = open(metrics_path if is_main else os.devnull, "a")
        try:
            if cfg.eval_every and start == 0:
                first_val = {"step": 0, **evaluate()}
                _write(metrics_file, first_val)
            step = start
            while step < steps:
                raw = next(batches)
                loader_after = loader.state_dict()
                batch = trainer.to_global(raw)
                t = time.monotonic()
                state, m = trainer.step_fn(state, batch)
                m = jax.device_get(m)
                dt = time.monotonic() - t
                step += 1
                if step > start + 1:  # the first step of a process compiles
                    timed_steps += 1
                    timed_seconds += dt
                if not bool(m["ok"]):
                    bad_steps += 1
                    if bad_steps > cfg.max_bad_steps:
                        good = mngr.latest_step()
                        raise VishwamError(
                            f"Step {step} had a non-finite loss or gradient ({float(m['loss'])}, grad norm "
                            f"{float(m['grad_norm'])}); stopped"
                            + (f", last good checkpoint is step {good}" if good is not None else "")
                            + " (lower --lr or allow skips with --max-bad-steps)."
                        )
                    log(f"Step {step}: non-finite loss or gradient, update skipped ({bad_steps} so far).")
                step_s = timed_seconds / timed_steps if timed_steps else dt
                last = step_record(
                    m, step, steps, tokens_per_step, step_s, time.monotonic() - t0, bool(timed_steps)
                )
                if timed_steps and peak is not None:
                    last["mfu"] = train_flops * last["tokens_per_s"] / (peak * jax.device_count())
                if cfg.cost_per_hour is not None:
                    last["cost"] = last["elapsed_s"] / 3600 * cfg.cost_per_hour
                    last["est_total_cost"] = (
                        (last["elapsed_s"] + last["remaining_s"]) / 3600 * cfg.cost_per_hour
                    )
                if step % cfg.log_every == 0 or step == steps or not bool(m["ok"]):
                    _write(metrics_file, last)
                if cfg.eval_every and (step % cfg.eval_every == 0 or step == steps):
                    val = evaluate()
                    _write(metrics_file, {"step": step, **val})
                    last.update(val)
                if on_step is not None:
                    on_step({**last, "total_steps": steps})
                ck = cfg.checkpoint
                final = step == steps or stop.signum is not None
                if final or save_due(ck, step, time.monotonic() - last_save):
                    _save(mngr, step, state, loader_after)
                    last_save = time.monotonic()
                if ck.export_every and step % ck.export_every == 0 and step != steps:
                    export(run_dir / "exports" / f"step_{step}", trainer, state, source, step, command)
                if stop.signum is not None:
                    status = "interrupted"
                    log(
                        f"{signal.Signals(stop.signum).name} at step {step}: checkpoint saved; "
                        "continue with --resume."
                    )
                    break
            mngr.wait_until_finished()
        finally:
            metrics_file.close()
            if previous is not None:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            _close(loader)
            mngr.close()

        summary: dict[str, Any] = {
            "status": status,
            "out": str(run_dir),
            "step": int(state["step"]),
            "total_steps": steps,
            "parameters": trainer.n_params,
            "tokens": int(state["step"]) * tokens_per_step,
            "mesh": mesh_sizes,
            "devices": jax.device_count(),
            "peak_flops_per_device": peak,
            "peak_flops_source": peak_source,
            "skipped_steps": bad_steps,
        }
        summary.update({k: v for k, v in last.items() if k not in ("step", "tokens")})
        if first_val is not None:
            summary["initial_val_ppl"] = first_val["val_ppl"]
        if status == "completed":
            summary["export"] = str(export(run_dir / EXPORT_DIR, trainer, state, source, steps, command))
        if is_main:
            summary["plot"] = str(plot_metrics(metrics_path, run_dir / PLOT_NAME))
        summary["signal"] = stop.signum
        return summary


def evaluate_loss(trainer: Trainer, params, source, split: str, batches: int, loader_kw) -> dict[str, float]:
    """Token-weighted loss and perplexity over the first `batches` batches of `split` (the same ones
    every time: a fresh loader with seed 0)."""
    val = source.loader(split, **loader_kw, seed=0, state=None)
    it = iter(val)
    nll = count = 0.0
    for _ in range(batches):
        n, c = trainer.eval_fn(params, trainer.to_global(next(it)))
        nll, count = nll + float(n), count + float(c)
    _close(val)
    loss = nll / max(count, 1.0)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0))}


def step_record(m, step: int, steps: int, tokens_per_step: int, step_s: float, elapsed: float, steady: bool):
    """One metrics.jsonl line from the step's device metrics. Throughput only from steady-state steps:
    the first step of a process includes compilation."""
    loss = float(m["loss"])
    rec = {
        "step": step,
        "loss": loss,
        "ppl": math.exp(min(loss, 700.0)),
        "lr": float(m["lr"]),
        "grad_norm": float(m["grad_norm"]),
        "tokens": step * tokens_per_step,
        "elapsed_s": elapsed,
        "remaining_s": (steps - step) * step_s,
    }
    if steady:
        rec["tokens_per_s"] = tokens_per_step / step_s
    if not bool(m["ok"]):
        rec["skipped"] = True
    return rec


def save_due(ck: CheckpointSection, step: int, seconds_since_save: float) -> bool:
    if ck.every_steps is not None and step % ck.every_steps == 0:
        return True
    return ck.every_minutes is not None and seconds_since_save >= 60 * ck.every_minutes


def _initial_params(model_cfg: ModelConfig, cfg: RunConfig, shardings):
    """Fresh params initialised under jit straight into their shardings, or --init-from's weights."""
    import jax
    from flax import nnx

    from vishwam_core.model import Transformer

    if cfg.model.init_from is not None:
        from vishwam_core.checkpoint import load_model

        loaded = load_model(cfg.model.init_from, param_dtype="float32")
        pure = nnx.to_pure_dict(nnx.state(loaded, nnx.Param))
        return jax.tree.map(jax.device_put, pure, shardings)

    def init():
        return nnx.to_pure_dict(nnx.state(Transformer(model_cfg, rngs=nnx.Rngs(params=cfg.seed)), nnx.Param))

    return jax.jit(init, out_shardings=shardings)()


def _on_mesh(x, mesh) -> bool:
    import jax

    return isinstance(x.sharding, jax.sharding.NamedSharding) and x.sharding.mesh == mesh


def _install_signal_handlers(stop: _Stop) -> dict:
    """First SIGINT/SIGTERM asks the loop to checkpoint and return; a second one acts as usual."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}

    def handler(signum, frame):
        if stop.signum is not None:
            signal.signal(signum, previous[signum])
            os.kill(os.getpid(), signum)
            return
        stop.signum = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _close(loader) -> None:
    close = getattr(loader, "close", None)
    if close is not None:
        close()


def _write(f, record: dict[str, Any]) -> None:
    f.write(json.dumps(record) + "\n")
    f.flush()


def _truncate_metrics(path: Path, step: int) -> list[dict[str, Any]]:
    """Keep the metrics lines up to `step` (a resumed run rewrites what followed its checkpoint)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if rec.get("step", 0) <= step:
            kept.append(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def export(out: Path, trainer: Trainer, state, source, step: int, command: str) -> Path:
    """The current params as a Hugging Face model directory, with the data's tokenizer and lineage."""
    import jax
    from flax import nnx

    from vishwam_core.checkpoint import Lineage, save_model

    cfg = trainer.cfg
    params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), state["params"])
    model = nnx.merge(trainer.graphdef, params)
    tokenizer = None
    tok_path = getattr(source, "tokenizer_path", None)
    if tok_path is not None and Path(tok_path).exists():
        from vishwam_core.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_dir(tok_path)
    lineage = Lineage(
        command=command,
        parent=cfg.model.init_from,
        source={"kind": "pretrain", "run": str(Path(cfg.out)), "data": str(cfg.data.path)},
        data_manifest_hash=getattr(source, "manifest_hash", None),
        step=step,
    )
    if jax.process_index() == 0:
        save_model(out, model, tokenizer, lineage, force=True)
    return out


def plot_metrics(metrics_path: Path, out: Path) -> Path:
    """Train loss (and validation loss where present) against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
