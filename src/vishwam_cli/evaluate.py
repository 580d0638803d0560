"""`vishwam eval`: checkpoints x lm-eval tasks (and perplexity) -> results, per-sample Parquet, report card."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from vishwam_cli.options import Json, Quiet
from vishwam_cli.output import Output


def _limit(value: str | None) -> int | float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise typer.BadParameter(f"'{value}' is neither a count nor a fraction.") from None
    if number <= 0:
        raise typer.BadParameter("--limit must be positive.")
    return number if number < 1 else int(number)


def eval_cmd(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="One or more model directories; several give a side-by-side report card."),
    ],
    tasks: Annotated[
        str | None,
        typer.Option(
            "--tasks", "-t", help="Comma-separated lm-eval task, group or tag names (patterns allowed)."
        ),
    ] = None,
    num_fewshot: Annotated[
        int | None, typer.Option(help="Few-shot examples (default: each task's own).")
    ] = None,
    limit: Annotated[
        str | None, typer.Option(help="At most this many documents per task (or a fraction below 1).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Continuations (or prompts) scored together.")] = 64,
    include_path: Annotated[
        list[Path] | None,
        typer.Option(help="A task pack directory (from `vishwam convert tasks`); repeatable."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for lm-eval's sampling and few-shot choice (default: lm-eval's).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for results, samples and the report card.")
    ] = Path("eval-results"),
    perplexity: Annotated[
        list[Path] | None,
        typer.Option(
            help="Text file/directory/JSONL, or a shard directory, to measure perplexity on; repeatable."
        ),
    ] = None,
    perplexity_split: Annotated[str, typer.Option(help="Which split of a shard directory.")] = "val",
    context: Annotated[
        int | None, typer.Option(help="Window of text perplexity in tokens (default: min(context, 2048)).")
    ] = None,
    apply_chat_template: Annotated[
        bool, typer.Option(help="Render prompts through the model's chat template (lm-eval's option).")
    ] = False,
    max_gen_toks: Annotated[
        int, typer.Option(help="New tokens for generative tasks that do not set their own.")
    ] = 256,
    confirm_run_unsafe_code: Annotated[
        bool,
        typer.Option(
            help="Let lm-eval's own code tasks (unsafe_code: true) execute code unsandboxed; vishwam packs need not."
        ),
    ] = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate checkpoints on lm-eval tasks with the vishwam backend; print and write a report card."""
    import shlex
    import sys

    from vishwam_core.analysis import cache_dir
    from vishwam_core.evaluate.run import run_eval

    output = Output(json_, quiet)
    last: dict[tuple[str, str], float] = {}

    def progress(name: str, kind: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last.get((name, kind), 0) >= 5:
            last[(name, kind)] = now
            output.log(f"[{name}] {kind}: {done:,}/{total:,}")

    report = run_eval(
        checkpoints,
        [t.strip() for t in (tasks or "").split(",") if t.strip()],
        out,
        num_fewshot=num_fewshot,
        limit=_limit(limit),
        batch_size=batch_size,
        include_paths=include_path,
        seed=seed,
        perplexity=perplexity,
        perplexity_split=perplexity_split,
        context=context,
        apply_chat_template=apply_chat_template,
        confirm_run_unsafe_code=confirm_run_unsafe_code,
        max_gen_toks=max_gen_toks,
        compile_cache=cache_dir() / "xla",
        command=shlex.join(["vishwam", *sys.argv[1:]]),
        log=output.log,
        progress=progress,
    )
    output.result(report, render_report)


def render_report(r: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    names = r["checkpoints"]
    table = Table(
        title="Report card (score ± stderr, %; centred = (score - chance) / (1 - chance))",
        title_justify="left",
    )
    table.add_column("task", style="bold")
    table.add_column("metric")
    table.add_column("chance", justify="right")
    for n in names:
        table.add_column(escape(n), justify="right")
    for row in r["rows"]:
        cells = []
        for n in names:
            c = row["cells"].get(n)
            if c is None or c["value"] is None:
                cells.append("-")
                continue
            text = f"{100 * c['value']:.1f}" + (
                f" ± {100 * c['stderr']:.1f}" if c["stderr"] is not None else ""
            )
            if c["centred"] is not None:
                text += f"\n[dim]centred {100 * c['centred']:.1f}[/dim]"
            cells.append(text)
        chance = "-" if row["chance"] is None else f"{100 * row['chance']:.1f}"
        table.add_row(escape(row["alias"]), row["metric"], chance, *cells)
    if r["mean_centred"]:
        table.add_row(
            "mean centred",
            "",
            "",
            *(f"{100 * r['mean_centred'][n]:.1f}" if n in r["mean_centred"] else "-" for n in names),
        )
    for row in r["perplexity"]:
        cells = []
        for n in names:
            s = row["cells"].get(n)
            cells.append(
                "-" if s is None else f"{s['bits_per_byte']:.4f} bpb\nppl {s['token_perplexity']:.2f}"
            )
        table.add_row(f"perplexity: {escape(Path(row['source']).name)}", "bits/byte", "", *cells)
    console = stdout_console()
    console.print(table)
    console.print(
        f"Wrote {escape(r['out'])}/report.md, results.json and samples/*.parquet per checkpoint.",
        highlight=False,
    )
