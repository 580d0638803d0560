"""`vishwam convert ...`: bring models and data into vishwam's file formats, and look inside the result."""

from __future__ import annotations

from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

import typer

from vishwam_cli.options import Force, Json, Quiet, parse_dtype
from vishwam_cli.output import Output

app = typer.Typer(
    help="Convert models into HF model directories, text into token shards, benchmarks into task packs; train tokenizers.",
    no_args_is_help=True,
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


# ---- data -------------------------------------------------------------------------------------------
class DataFormat(StrEnum):
    text = "text"
    chat = "chat"
    instruct = "instruct"
    preference = "preference"


class Packing(StrEnum):
    concat = "concat"
    documents = "documents"


class OutputFormat(StrEnum):
    parquet = "parquet"
    safetensors = "safetensors"


class OnError(StrEnum):
    fail = "fail"
    skip = "skip"


class IdDtype(StrEnum):
    int32 = "int32"
    uint16 = "uint16"


class StdinFormat(StrEnum):
    text = "text"
    jsonl = "jsonl"
    csv = "csv"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


Sources = Annotated[
    list[str],
    typer.Argument(help="Files, directories, globs (quote them) or '-' for stdin.", show_default=False),
]
TextField = Annotated[
    str | None, typer.Option(help="Record field holding the text (or the messages list for --format chat).")
]
Include = Annotated[
    list[str] | None,
    typer.Option(help="In directories, take only paths matching this glob (repeatable; * crosses /)."),
]
Exclude = Annotated[
    list[str] | None, typer.Option(help="In directories, skip paths matching this glob (repeatable).")
]
OnErrorOpt = Annotated[
    OnError,
    typer.Option(help="On a bad document (undecodable, unparsable, missing field): fail or skip and count."),
]
StdinOpt = Annotated[
    StdinFormat | None,
    typer.Option(help="How to read '-': text (default for --format text) or jsonl/csv records."),
]


@app.command("data")
def data(
    sources: Sources,
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", "-t", help="A model directory or a tokenizer.json.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The shard directory to write.")],
    seq_len: Annotated[
        int | None, typer.Option(help="Tokens per training sequence; rows hold seq_len + 1. Default 1024.")
    ] = None,
    fmt: Annotated[
        DataFormat | None,
        typer.Option(
            "--format", help="text, chat (messages), instruct (prompt/response) or preference pairs."
        ),
    ] = None,
    text_field: TextField = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="Share of documents (by seeded content hash) held out. Default 0.01."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the train/val split. Default 0.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Stop after the document that brings the total to this many tokens.")
    ] = None,
    shard_rows: Annotated[int | None, typer.Option(help="Rows per shard file. Default ~16M tokens.")] = None,
    output_format: Annotated[
        OutputFormat | None, typer.Option(help="parquet or safetensors token shards. Default parquet.")
    ] = None,
    on_error: OnErrorOpt = OnError.fail,
    pack: Annotated[
        Packing | None,
        typer.Option(
            help="concat (EOS-joined stream) or documents (segment ids). Default: concat for text, documents for chat and instruct."
        ),
    ] = None,
    include: Include = None,
    exclude: Exclude = None,
    min_chars: Annotated[int, typer.Option(help="Drop documents shorter than this many characters.")] = 1,
    max_chars: Annotated[
        int | None, typer.Option(help="Drop documents longer than this many characters.")
    ] = None,
    dedup: Annotated[bool, typer.Option(help="Drop exact duplicate documents (by content hash).")] = True,
    id_dtype: Annotated[
        IdDtype | None, typer.Option(help="Token id dtype on disk; uint16 halves shards for vocabs <= 65536.")
    ] = None,
    stdin_format: StdinOpt = None,
    append: Annotated[
        bool, typer.Option(help="Add to an existing shard directory (same tokenizer and settings).")
    ] = False,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Tokenize and pack text, code, JSONL, CSV or Parquet into train/val shards with a manifest."""
    import shlex
    import sys

    from vishwam_core.data import convert_data

    output = Output(json_, quiet)
    output.log(f"Converting {len(sources)} source(s) -> {out}")
    with output.progress("tokens") as advance:
        summary = convert_data(
            sources,
            tokenizer,
            out,
            seq_len=seq_len,
            fmt=_value(fmt),
            text_field=text_field,
            val_fraction=val_fraction,
            seed=seed,
            max_tokens=max_tokens,
            shard_rows=shard_rows,
            output_format=_value(output_format),
            on_error=on_error.value,
            pack=_value(pack),
            include=include,
            exclude=exclude,
            min_chars=min_chars,
            max_chars=max_chars,
            dedup=dedup,
            id_dtype=_value(id_dtype),
            append=append,
            force=force,
            stdin_format=_value(stdin_format),
            progress=advance,
            command=shlex.join(["vishwam", *sys.argv[1:]]),
        )
    output.result(summary, render_data_summary)


def render_data_summary(s: dict) -> None:
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    table = Table(title=s["out"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "format",
        f"{s['format']}, packing {s['pack'] or 'pairs'}, seq_len {s['seq_len']}, {s['output_format']}",
    )
    table.add_row(
        "documents",
        f"{s['documents']['kept']:,} kept of {s['documents']['read']:,} read from {_n(s['sources'], 'source')}",
    )
    if s["filters"]:
        table.add_row("dropped", ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in s["filters"].items()))
    for split, info in s["splits"].items():
        table.add_row(
            split,
            f"{_n(info['documents'], 'document')}, {_n(info['tokens'], 'token')}, {_n(info['rows'], 'row')}",
        )
    if s["stopped_at_max_tokens"]:
        table.add_row("stopped", "at --max-tokens")
    rate = f", {s['tokens_per_second']:,} tokens/s" if s["tokens_per_second"] else ""
    table.add_row("time", f"{s['seconds']:.1f} s{rate}")
    table.add_row(
        "files", f"{len(s['files'])} ({', '.join(s['files'][:3])}{', ...' if len(s['files']) > 3 else ''})"
    )
    stdout_console().print(table)


# ---- tokenizer ----------------------------------------------------------------------------------------
@app.command("tokenizer")
def tokenizer_cmd(
    sources: Sources,
    vocab_size: Annotated[int, typer.Option(help="Tokens in the vocabulary, special tokens included.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The directory to write the tokenizer files to.")],
    text_field: TextField = None,
    include: Include = None,
    exclude: Exclude = None,
    on_error: OnErrorOpt = OnError.fail,
    min_frequency: Annotated[int, typer.Option(help="Merge only pairs seen at least this often.")] = 2,
    max_documents: Annotated[int | None, typer.Option(help="Train on at most this many documents.")] = None,
    stdin_format: StdinOpt = None,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a byte-level BPE tokenizer (special tokens and a ChatML chat template included)."""
    from vishwam_core.data import convert_tokenizer

    output = Output(json_, quiet)
    output.log(f"Training a {vocab_size}-token byte-level BPE -> {out}")
    summary = convert_tokenizer(
        sources,
        out,
        vocab_size,
        text_field=text_field,
        include=include,
        exclude=exclude,
        on_error=on_error.value,
        min_frequency=min_frequency,
        max_documents=max_documents,
        force=force,
        stdin_format=_value(stdin_format),
    )
    output.result(summary, render_tokenizer_summary)


def render_tokenizer_summary(s: dict) -> None:
    from vishwam_cli.console import stdout_console

    console = stdout_console()
    console.print(f"[bold]{s['out']}[/bold]: byte-level BPE, {s['vocab_size']:,} tokens", highlight=False)
    if s["vocab_size"] < s["requested_vocab_size"]:
        console.print(
            f"  (asked for {s['requested_vocab_size']:,}; the text holds no more pairs seen --min-frequency times)"
        )
    console.print(
        f"  trained on {s['documents']:,} documents ({s['characters']:,} characters) from {s['sources']:,} file(s)"
        f" in {s['seconds']:.1f} s",
        highlight=False,
    )
    sp = s["special_tokens"]
    console.print(
        f"  special tokens: bos {sp['bos']}, eos {sp['eos']}, pad {sp['pad']}; ChatML chat template",
        highlight=False,
    )


# ---- inspect ------------------------------------------------------------------------------------------
@app.command("inspect")
def inspect_cmd(
    directory: Annotated[Path, typer.Argument(help="A shard directory written by `vishwam convert data`.")],
    samples: Annotated[int, typer.Option(help="Decoded sample rows to show.")] = 3,
    split: Annotated[str, typer.Option(help="The split to sample rows from.")] = "train",
    chars: Annotated[int, typer.Option(help="Show at most this many characters per sample.")] = 400,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Summarise a shard directory: manifest, token-length histogram, decoded sample rows."""
    from vishwam_core.data import inspect_data

    output = Output(json_, quiet)
    output.result(inspect_data(directory, samples=samples, split=split, chars=chars), render_inspect)


def render_inspect(s: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    console = stdout_console()
    table = Table(title=s["directory"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "format",
        f"{s['format']}, packing {s['pack'] or 'pairs'}, seq_len {s['seq_len']}, {s['output_format']}",
    )
    table.add_row("columns", ", ".join(f"{k} {v}" for k, v in s["columns"].items()))
    t = s["tokenizer"]
    table.add_row("tokenizer", f"{t['source']} ({t['vocab_size']:,} tokens, sha256 {t['sha256'][:12]})")
    for split, info in s["splits"].items():
        table.add_row(
            split,
            f"{_n(info['documents'], 'document')}, {_n(info['tokens'], 'token')}, {_n(info['rows'], 'row')} in "
            f"{_n(info['shards'], 'shard')}, {info['padding_tokens']:,} padding",
        )
    table.add_row("sources", f"{s['sources']:,} over {_n(s['runs'], 'run')}")
    if s["filters"]:
        table.add_row("dropped", ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in s["filters"].items()))
    table.add_row("command", escape(s["command"]))
    console.print(table)
    for split, info in s["splits"].items():
        hist = info["length_histogram"]
        if not hist["documents"]:
            continue
        console.print(f"\n[bold]{split}: document length in tokens[/bold]")
        top = max(hist["documents"])
        first = next(i for i, c in enumerate(hist["documents"]) if c)
        for lo, count in zip(hist["bin_edges"][first:], hist["documents"][first:], strict=False):
            bar = "█" * round(40 * count / top) if top else ""
            console.print(f"  {lo:>9,} - {2 * lo - 1:<9,} {bar} {count:,}", highlight=False)
    for sample in s["samples"]:
        console.print(
            f"\n[bold]{s['sample_split']} row {sample['row']}[/bold] ({sample['tokens']:,} tokens, "
            f"{sample['targets']:,} targets)"
        )
        if "documents" in sample:
            for i, doc in enumerate(sample["documents"], 1):
                console.print(f"[dim]-- segment {i}[/dim]")
                console.print(escape(doc), highlight=False)
        else:
            console.print(escape(sample["text"]), highlight=False)
        if "rejected" in sample:
            console.print("[dim]-- rejected[/dim]")
            console.print(escape(sample["rejected"]), highlight=False)


class TaskFormat(StrEnum):
    bigbench = "bigbench"
    humaneval = "humaneval"
    gsm8k = "gsm8k"
    mmlu = "mmlu"
    arc = "arc"
    openbookqa = "openbookqa"
    mbpp = "mbpp"
    domain = "domain"


@app.command("tasks")
def tasks_cmd(
    src: Annotated[
        str,
        typer.Argument(
            help="A BIG-bench task.json, task directory or bigbench sdist tarball; HumanEval.jsonl.gz (or "
            "'humaneval'); GSM8K, ARC/OpenBookQA or MBPP JSONL; MMLU CSVs; or a domain pack.yaml.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The task pack directory to write.")],
    fmt: Annotated[
        TaskFormat | None,
        typer.Option("--format", help="What SRC is (default: told from its name and fields)."),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            help="BIG-bench task names to take (comma-separated or repeated), e.g. date_understanding."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Task name for a single-task source.")] = None,
    samples: Annotated[
        int, typer.Option(help="HumanEval/MBPP: completions per problem (>1 samples at T=0.8 for pass@k).")
    ] = 1,
    max_gen_toks: Annotated[
        int | None, typer.Option(help="Override the generative tasks' max_gen_toks.")
    ] = None,
    train: Annotated[
        Path | None,
        typer.Option(help="GSM8K: the train JSONL, the few-shot pool of the 5-shot `gsm8k` task."),
    ] = None,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Turn local benchmark files into an lm-eval task pack (YAML + JSONL) for `vishwam eval --include-path`."""
    import shlex
    import sys

    from vishwam_core.evaluate.tasks import convert_tasks

    output = Output(json_, quiet)
    names = [n.strip() for t in task or [] for n in t.split(",") if n.strip()]
    output.log(f"Converting {src} -> {out}")
    summary = convert_tasks(
        src,
        out,
        fmt=_value(fmt),
        names=names,
        name=name,
        samples=samples,
        max_gen_toks=max_gen_toks,
        train=train,
        force=force,
        command=shlex.join(["vishwam", *sys.argv[1:]]),
    )
    output.result(summary, render_tasks_summary)


def render_tasks_summary(s: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    table = Table(title=f"{escape(s['out'])} ({s['source']['format']})", title_justify="left")
    table.add_column("task", style="bold")
    table.add_column("type")
    table.add_column("documents", justify="right")
    for t in s["tasks"]:
        table.add_row(escape(t["task"]), t["output_type"], f"{t['documents']:,}")
    stdout_console().print(table)
    if s["groups"]:
        stdout_console().print(f"groups: {', '.join(s['groups'])}")
    stdout_console().print(
        f"Use it with: vishwam eval CKPT --include-path {escape(s['out'])} --tasks TASK", highlight=False
    )
