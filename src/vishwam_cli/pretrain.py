"""`vishwam pretrain`: pretraining and fine-tuning through the one training loop (vishwam_core.train).

Every flag maps to one field of the run config (FLAG_PATHS); only flags the user gives override the
config file, which overrides the model's run preset, which overrides the defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vishwam_cli.options import Force, Json, Quiet
from vishwam_cli.output import Output

# CLI option name -> path in the nested run config.
FLAG_PATHS: dict[str, tuple[str, ...]] = {
    "data": ("data", "path"),
    "model": ("model", "name"),
    "init_from": ("model", "init_from"),
    "out": ("out",),
    "steps": ("steps",),
    "tokens": ("tokens",),
    "batch_size": ("data", "batch_size"),
    "seq_len": ("data", "seq_len"),
    "objective": ("data", "objective"),
    "precision": ("model", "precision"),
    "remat": ("model", "remat"),
    "mesh": ("mesh", "spec"),
    "lr": ("optim", "lr"),
    "schedule": ("optim", "schedule"),
    "warmup_steps": ("optim", "warmup_steps"),
    "min_lr_ratio": ("optim", "min_lr_ratio"),
    "weight_decay": ("optim", "weight_decay"),
    "decay_exclude": ("optim", "decay_exclude"),
    "grad_clip": ("optim", "grad_clip"),
    "grad_accum": ("optim", "grad_accum"),
    "z_loss": ("optim", "z_loss"),
    "seed": ("seed",),
    "eval_every": ("eval_every",),
    "eval_batches": ("eval_batches",),
    "save_every": ("checkpoint", "every_steps"),
    "save_every_minutes": ("checkpoint", "every_minutes"),
    "keep": ("checkpoint", "keep"),
    "async_save": ("checkpoint", "async_save"),
    "export_every": ("checkpoint", "export_every"),
    "max_bad_steps": ("max_bad_steps",),
    "cost_per_hour": ("cost_per_hour",),
    "log_every": ("log_every",),
}


def overrides_from_flags(values: dict[str, Any]) -> dict[str, Any]:
    """The nested run-config overrides for the flags that were given (None = not given)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name == "decay_exclude":
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif name in ("grad_clip", "eval_every", "save_every", "export_every") and value == 0:
            value = None  # 0 turns clipping, validation, step-based saves or exports off
        elif isinstance(value, Path):
            value = str(value)
        node = out
        *parents, leaf = FLAG_PATHS[name]
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def pretrain(
    data: Annotated[
        Path | None, typer.Option(help="Shards directory written by `vishwam convert data`.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Architecture: a preset (test, demo, ...), a config.json or a model dir."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="RUN_DIR: config.json, metrics.jsonl, loss.png, checkpoints/, model/.")
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from this model directory's weights (continue or fine-tune).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps to train.")] = None,
    tokens: Annotated[int | None, typer.Option(help="Tokens to train on (instead of --steps).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size in sequences.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per sequence (default: the shards').")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Run config JSON/YAML (sections model, data, optim, mesh, checkpoint)."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue RUN_DIR from its latest checkpoint.")] = False,
    objective: Annotated[
        str | None, typer.Option(help="lm: every next token; sft: only tokens the shards' loss mask marks.")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="f32, or bf16 compute with f32 params.")] = None,
    remat: Annotated[str | None, typer.Option(help="Recompute activations: none | full | dots.")] = None,
    mesh: Annotated[str | None, typer.Option(help="Device mesh, e.g. data=2,fsdp=-1,tensor=1.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    schedule: Annotated[str | None, typer.Option(help="constant | cosine | linear | wsd.")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="Linear warmup steps.")] = None,
    min_lr_ratio: Annotated[float | None, typer.Option(help="Final lr as a fraction of the peak.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW decoupled weight decay.")] = None,
    decay_exclude: Annotated[
        str | None, typer.Option(help="Comma list of norms, biases, embeddings exempt from weight decay.")
    ] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Global-norm gradient clip (0: off).")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per step.")] = None,
    z_loss: Annotated[float | None, typer.Option(help="Weight of the z-loss (0: off).")] = None,
    seed: Annotated[int | None, typer.Option(help="Initialisation seed.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Validation loss every N steps (0: off).")] = None,
    eval_batches: Annotated[int | None, typer.Option(help="Batches per validation.")] = None,
    save_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps (0: only by time and at the end).")
    ] = None,
    save_every_minutes: Annotated[float | None, typer.Option(help="Also checkpoint every M minutes.")] = None,
    keep: Annotated[int | None, typer.Option(help="Checkpoints to keep.")] = None,
    async_save: Annotated[
        bool | None, typer.Option("--async-save/--sync-save", help="Write checkpoints in the background.")
    ] = None,
    export_every: Annotated[
        int | None, typer.Option(help="Also export a model directory every N steps.")
    ] = None,
    max_bad_steps: Annotated[
        int | None, typer.Option(help="Skip up to N non-finite steps before stopping (default 0).")
    ] = None,
    cost_per_hour: Annotated[
        float | None, typer.Option(help="Machine price per hour, for cost estimates.")
    ] = None,
    log_every: Annotated[int | None, typer.Option(help="Write a metrics line every N steps.")] = None,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Pretrain or fine-tune a model on shards; checkpoints, metrics and an HF export land in --out."""
    values = {k: v for k, v in locals().items() if k in FLAG_PATHS}
    from vishwam_core.train import CONFIG_NAME, resolve_run_config, train

    output = Output(json_, quiet)
    saved = None
    if resume and out is not None and (out / CONFIG_NAME).exists():
        import json

        saved = json.loads((out / CONFIG_NAME).read_text())
    cfg = resolve_run_config(overrides_from_flags(values), config_file=config, saved=saved)
    output.log(
        f"Training {cfg.model.name or cfg.model.init_from} on {cfg.data.path} -> {cfg.out} "
        f"({cfg.steps or cfg.tokens} {'steps' if cfg.steps else 'tokens'})"
    )
    with output.progress("step", total=cfg.steps) as advance:
        seen = {"step": None}

        def on_step(m: dict[str, Any]) -> None:
            # A resumed run starts past 0: the first report advances the bar to where the run is.
            done = m["step"] - (seen["step"] if seen["step"] is not None else 0)
            seen["step"] = m["step"]
            info = f"loss {m['loss']:.4f}"
            if "tokens_per_s" in m:
                info += f" {m['tokens_per_s']:,.0f} tok/s MFU {m['mfu']:.1%}"
            if "val_loss" in m:
                info += f" val {m['val_loss']:.4f}"
            advance(done, info)

        summary = train(cfg, resume=resume, force=force, log=output.log, on_step=on_step)
    output.result(summary, render_summary)
    if summary["signal"]:
        sys.exit(128 + summary["signal"])


def render_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    table = Table(title=f"{s['out']} ({s['status']})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("steps", f"{s['step']}/{s['total_steps']} ({s['tokens']:,} tokens)")
    if "loss" in s:
        table.add_row("train loss", f"{s['loss']:.4f} (ppl {s['ppl']:.2f})")
    if "val_loss" in s:
        first = f", from {s['initial_val_ppl']:.2f}" if "initial_val_ppl" in s else ""
        table.add_row("val loss", f"{s['val_loss']:.4f} (ppl {s['val_ppl']:.2f}{first})")
    if "tokens_per_s" in s:
        table.add_row(
            "throughput",
            f"{s['tokens_per_s']:,.0f} tokens/s, MFU {s['mfu']:.1%} of {s['peak_flops_per_device'] / 1e9:,.0f} "
            f"GFLOP/s x {s['devices']} ({s['peak_flops_source']})",
        )
    table.add_row("time", f"{s['elapsed_s']:.1f} s" + (f", cost {s['cost']:.4f}" if "cost" in s else ""))
    if s.get("skipped_steps"):
        table.add_row("skipped steps", str(s["skipped_steps"]))
    if "export" in s:
        table.add_row("model", s["export"])
    table.add_row("loss curve", s["plot"])
    stdout_console().print(table)
