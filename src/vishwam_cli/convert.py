"""`vishwam convert ...`: bring models (and later data and task packs) into vishwam's file formats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vishwam_cli.options import Force, Json, Quiet, parse_dtype
from vishwam_cli.output import Output

app = typer.Typer(
    help="Convert models into Hugging Face-compatible vishwam model directories.", no_args_is_help=True
)


@app.command("model")
def model(
    src: Annotated[
        str, typer.Argument(help="A GGUF file, a Hugging Face model directory, or 'smollm2-135m-instruct'.")
    ],
    out: Annotated[Path, typer.Argument(help="The model directory to write.")],
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Parameter dtype to store: f32 | bf16 | f16 (default: f32 for GGUF, the source's for HF)."
        ),
    ] = None,
    max_shard_size: Annotated[
        str, typer.Option(help="Split model.safetensors above this size (e.g. 5GB, 500MB).")
    ] = "5GB",
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Import a model into a Hugging Face model directory (config.json + safetensors + tokenizer)."""
    from vishwam_core.checkpoint import convert_model, parse_size

    output = Output(json_, quiet)
    output.log(f"Converting {src} -> {out}")
    with output.progress("Reading tensors") as advance:
        summary = convert_model(
            src,
            out,
            dtype=parse_dtype(dtype),
            force=force,
            max_shard_bytes=parse_size(max_shard_size),
            progress=advance,
        )
    output.result(summary, render_model_summary)


def render_model_summary(s: dict) -> None:
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    a = s["architecture"]
    table = Table(title=f"{s['out']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", f"{s['source']['kind']}: {s['source']['path']}")
    table.add_row(
        "architecture",
        f"{a['model_type']}: {a['n_layers']} layers, d_model {a['d_model']}, "
        f"{a['attention']} {a['n_heads']}/{a['n_kv_heads']} heads x {a['head_dim']}, ffn {a['ffn_dim']}",
    )
    table.add_row("vocab", f"{a['vocab_size']} ({'tied' if a['tie_embeddings'] else 'untied'} embeddings)")
    table.add_row("positions", a["positions"])
    table.add_row("parameters", f"{s['parameters']:,}")
    table.add_row("dtype", s["dtype"])
    table.add_row("files", ", ".join(f"{f['name']} ({f['bytes']:,} B)" for f in s["files"]))
    stdout_console().print(table)
