"""`vishwam tot CKPT ...` (run a method over puzzles), `vishwam tot show TREE.json` and
`vishwam tot traces OUT.jsonl`. Parses options, calls `vishwam_core.tot`, renders the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from vishwam_cli.options import Force, Json, Quiet
from vishwam_cli.output import Output


class _RunByDefault(TyperGroup):
    """`vishwam tot CKPT ...` means `vishwam tot run CKPT ...`; `show` and `traces` are subcommands.
    (A checkpoint directory literally named 'show' or 'traces' is given as ./show.)"""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    no_args_is_help=True,
    help="Tree-of-Thoughts search (BFS, DFS) and IO/CoT baselines over any checkpoint: "
    "`vishwam tot CKPT --task game24 --range 900:1000 --method bfs`.",
)

TASK_HELP = (
    "game24, or a JSONL task file: first line {'task': {name, steps, checker: number|exact, io_prompt, "
    "cot_prompt, propose_prompt, value_prompt}} (templates over {input} and {steps}), then one "
    "{'id', 'input', 'target'} per line."
)


@app.command("run")
def run(
    checkpoint: Annotated[
        Path, typer.Argument(help="A model directory (any vishwam / HF Llama-family dir).")
    ],
    task: Annotated[str, typer.Option(help=TASK_HELP)] = "game24",
    puzzles: Annotated[
        Path | None,
        typer.Option(
            help="Puzzle file: the ToT CSV (Rank,Puzzles,...) or one '4 5 6 10' per line (default: bundled CSV)."
        ),
    ] = None,
    range_: Annotated[
        str | None,
        typer.Option(
            "--range", help="Rows a:b (from 0, b exclusive) of the puzzles; the paper's test set is 900:1000."
        ),
    ] = None,
    method: Annotated[str, typer.Option(help="bfs | dfs | io | cot.")] = "bfs",
    breadth: Annotated[int, typer.Option(help="BFS: states kept per step (b).")] = 5,
    n_evaluate: Annotated[int, typer.Option(help="Value (or vote) samples per state.")] = 3,
    n_generate: Annotated[int, typer.Option(help="Propose calls, or sampled steps, per expanded state.")] = 1,
    samples: Annotated[
        int, typer.Option(help="IO / CoT: completions per puzzle (best-of-k); 1 is greedy.")
    ] = 1,
    generator: Annotated[
        str, typer.Option(help="propose (one call lists steps) | sample (one step per call).")
    ] = "propose",
    evaluator: Annotated[
        str, typer.Option(help="value | vote | heuristic (game24: the exact solver, an oracle).")
    ] = "value",
    selection: Annotated[
        str, typer.Option(help="greedy (top-b) | sample (in proportion to value).")
    ] = "greedy",
    threshold: Annotated[
        float, typer.Option(help="DFS: prune children valued below this; accept finals at or above.")
    ] = 3.0,
    max_visits: Annotated[int, typer.Option(help="DFS: the most nodes expanded per puzzle.")] = 100,
    steps: Annotated[int | None, typer.Option(help="Thought steps (default: the task's; game24: 4).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of every sampled call.")] = 0.7,
    seed: Annotated[int, typer.Option(help="Seed of sampling and of sampled selection.")] = 0,
    prompts: Annotated[
        str,
        typer.Option(
            help="game24 prompts: paper (few-shot, for instruct models) | compact (the traces' format)."
        ),
    ] = "paper",
    chat: Annotated[
        bool | None,
        typer.Option(
            "--chat/--no-chat",
            help="Wrap prompts in the chat template (default: with --prompts paper, if the tokenizer has one).",
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option(help="Most sequences per engine call (bounds KV cache memory).")
    ] = 32,
    batch_puzzles: Annotated[int, typer.Option(help="BFS / IO / CoT: puzzles searched in lockstep.")] = 8,
    out: Annotated[
        Path | None, typer.Option(help="Write summary.json, results.parquet, trees/*.json here.")
    ] = None,
    export_traces: Annotated[
        Path | None,
        typer.Option(
            help="Write the verified root-to-leaf paths as loss-masked instruct (chat with --chat) shards here, "
            "for `vishwam pretrain --objective sft`; the records also go to OUT/traces.jsonl."
        ),
    ] = None,
    traces_seq_len: Annotated[
        int | None,
        typer.Option(
            help="Tokens per shard row for --export-traces (default: min(1024, the model's context))."
        ),
    ] = None,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Run Tree-of-Thoughts search (or an IO / CoT baseline) with a model over a task's puzzles."""
    from vishwam_core.errors import VishwamError
    from vishwam_core.tot.run import load_task, run_tot
    from vishwam_core.tot.search import SearchConfig

    output = Output(json_, quiet)
    the_task = load_task(task, prompts)
    cfg = SearchConfig(
        method=method,
        generator=generator,
        evaluator=evaluator,
        selection=selection,
        breadth=breadth,
        n_generate=n_generate,
        n_evaluate=n_evaluate,
        steps=steps,
        threshold=threshold,
        max_visits=max_visits,
        samples=samples,
        temperature=temperature,
        seed=seed,
    )
    chosen = the_task.puzzles(puzzles, range_)
    for path in (out, export_traces):
        if path is not None and path.exists() and not force:
            raise VishwamError(f"{path} already exists; pass --force to replace it.")

    from vishwam_core.checkpoint import load_model, load_tokenizer
    from vishwam_core.generate import Engine
    from vishwam_core.tot.lm import EngineLM

    output.log(f"Loading {checkpoint}")
    tokenizer = load_tokenizer(checkpoint)
    use_chat = chat if chat is not None else (prompts == "paper" and bool(tokenizer.chat_template))
    model = load_model(checkpoint)
    lm = EngineLM(Engine(model), tokenizer, chat=use_chat, seed=seed, max_batch=max_batch)
    output.log(
        f"{the_task.name}: {method} over {len(chosen)} puzzles"
        + (f" (b={breadth}, n_evaluate={n_evaluate})" if method == "bfs" else "")
        + (f", {samples} samples each" if method in ("io", "cot") else "")
        + f", prompts {prompts}{', chat template' if use_chat else ''}"
    )
    with output.progress("Puzzles", total=len(chosen)) as advance:
        result = run_tot(
            lm,
            the_task,
            chosen,
            cfg,
            out=out,
            force=force,
            export_traces=export_traces,
            tokenizer=checkpoint,
            chat=use_chat,
            traces_seq_len=traces_seq_len or min(1024, model.cfg.max_seq_len),
            log=output.log,
            batch_puzzles=batch_puzzles,
            progress=advance,
            source={
                "checkpoint": str(checkpoint),
                "puzzles": str(puzzles or "bundled"),
                "range": range_,
                "chat": use_chat,
            },
        )
    output.result(result.summary, render_summary)


def render_summary(s: dict) -> None:
    from rich.table import Table

    from vishwam_cli.console import stdout_console

    u = s["usage"]
    table = Table(
        title=f"{s['task']['name']} · {s['method']} · {s['puzzles']} puzzles",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="cyan")
    table.add_column()
    table.add_row(
        "success", f"{s['success']:.1%} ({s['solved']}/{s['puzzles']}): the method's own answer, verified"
    )
    table.add_row(
        "success (any)",
        f"{s['success_any']:.1%} ({s['solved_any']}/{s['puzzles']}): some final candidate verified",
    )
    table.add_row("LM calls / puzzle", f"{s['mean_lm_calls']:g}")
    table.add_row(
        "tokens / puzzle", f"{s['mean_prompt_tokens']:g} prompt + {s['mean_completion_tokens']:g} generated"
    )
    table.add_row("nodes / puzzle", f"{s['mean_nodes']:g}")
    table.add_row("value cache hits", str(s["value_cache_hits"]))
    table.add_row("engine calls", f"{u['engine_calls']} ({u['lm_calls']} sequences)")
    table.add_row("time", f"{s['seconds']:g} s ({s['generated_tokens_per_s']:g} generated tokens/s)")
    if "traces" in s:
        shards = s.get("traces_shards")
        table.add_row(
            "traces", f"{s['traces']} records" + (f" -> shards in {shards['out']}" if shards else "")
        )
    if "out" in s:
        table.add_row("written to", s["out"])
    stdout_console().print(table)


@app.command("show")
def show(
    tree: Annotated[
        Path, typer.Argument(help="A tree JSON from `vishwam tot --out DIR` (DIR/trees/ID.json).")
    ],
    html: Annotated[
        Path | None, typer.Option(help="Also write a self-contained HTML page of the tree here.")
    ] = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Draw a search tree: scores, what was kept or pruned, which answers verified."""
    from vishwam_core.tot.tree import Tree, to_html

    output = Output(json_, quiet)
    t = Tree.load(tree)
    if html is not None:
        html.write_text(to_html(t), encoding="utf-8")
        output.log(f"Wrote {html}")
    output.result(t.to_dict(), render_tree)


def render_tree(d: dict) -> None:
    from rich.markup import escape
    from rich.tree import Tree as RichTree

    from vishwam_cli.console import stdout_console
    from vishwam_core.tot.tree import Tree, node_label

    t = Tree.from_dict(d)
    kids: dict[int | None, list] = {}
    for n in t.nodes:
        kids.setdefault(n.parent, []).append(n)

    def style(n) -> str:
        if n.final and n.correct:
            return "bold green"
        if n.final and n.correct is False:
            return "red"
        if n.pruned:
            return "dim strike"
        return "green" if n.selected else "dim"

    def grow(branch, n) -> None:
        for c in kids.get(n.id, []):
            mark = " <- answer" if c.id == t.answer_node else ""
            grow(branch.add(f"[{style(c)}]{escape(node_label(c))}{mark}[/]"), c)

    head = f"[bold]{escape(t.input)}[/] · {t.method} · {'solved' if t.solved else 'not solved'}"
    if t.answer:
        head += f" · answer {escape(t.answer)}"
    root = RichTree(head)
    for r in kids.get(None, []):
        grow(root, r)
    con = stdout_console()
    con.print(root)
    u = t.usage
    con.print(
        f"{len(t.nodes)} nodes · {u.get('lm_calls', 0)} LM calls · {u.get('prompt_tokens', 0)} prompt + "
        f"{u.get('completion_tokens', 0)} generated tokens · green: kept, struck: pruned, bold: verified answer"
    )


@app.command("traces")
def traces(
    out: Annotated[Path, typer.Argument(help="The JSONL file of instruct records to write.")],
    puzzles: Annotated[
        Path | None,
        typer.Option(help="Puzzles to make traces for (default: every solvable 4-tuple of 1..13)."),
    ] = None,
    hold_out: Annotated[
        str | None,
        typer.Option(
            help="Rows a:b of the bundled CSV kept out of the traces (e.g. 900:1000, the paper's test set)."
        ),
    ] = None,
    prompts: Annotated[str, typer.Option(help="Prompt style the records use: compact | paper.")] = "compact",
    cot_per_puzzle: Annotated[int, typer.Option(help="Distinct CoT solutions per puzzle.")] = 2,
    max_proposals: Annotated[int, typer.Option(help="Steps listed per propose record.")] = 8,
    seed: Annotated[int, typer.Option(help="Same seed, same records.")] = 0,
    whole_numbers: Annotated[
        bool,
        typer.Option(
            "--whole-numbers/--any-numbers",
            help="Play through whole non-negative numbers only (1346 of the 1362 puzzles allow it) or allow fractions and negatives.",
        ),
    ] = True,
    force: Force = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Write solver-made Game-of-24 training records (cot, io, propose, value, judge) in the search's format."""
    import collections

    from vishwam_core.errors import VishwamError
    from vishwam_core.tot.game24 import Game24, all_solvable, read_puzzles
    from vishwam_core.tot.tasks import pick_span
    from vishwam_core.tot.traces import solver_traces, write_jsonl

    output = Output(json_, quiet)
    if out.exists() and not force:
        raise VishwamError(f"{out} already exists; pass --force to replace it.")
    task = Game24(prompts)
    if puzzles is None:
        pool = [tuple(p) for p in all_solvable()]
    else:
        pool = [tuple(sorted(int(v) for v in p.input.split())) for p in read_puzzles(puzzles)]
    held: set[tuple[int, ...]] = set()
    if hold_out:
        held = {tuple(sorted(int(v) for v in p.input.split())) for p in pick_span(read_puzzles(), hold_out)}
    keep = [p for p in pool if p not in held]
    records = list(
        solver_traces(
            keep,
            task,
            seed=seed,
            cot_per_puzzle=cot_per_puzzle,
            max_proposals=max_proposals,
            whole=whole_numbers,
        )
    )
    made = len({r["puzzle"] for r in records})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    n = write_jsonl(records, tmp)
    tmp.replace(out)
    kinds = collections.Counter(r["kind"] for r in records)
    output.result(
        {
            "out": str(out),
            "records": n,
            "kinds": dict(kinds),
            "puzzles": made,
            "held_out": len(pool) - len(keep),
            "skipped": len(keep) - made,
            "whole_numbers": whole_numbers,
            "prompts": prompts,
            "seed": seed,
        },
        lambda r: output_plain(r),
    )


def output_plain(r: dict) -> None:
    from vishwam_cli.console import stdout_console

    kinds = ", ".join(f"{k} {v}" for k, v in r["kinds"].items())
    stdout_console().print(
        f"Wrote {r['records']} records ({kinds}) for {r['puzzles']} puzzles "
        f"({r['held_out']} held out, {r['skipped']} without a solution in the chosen numbers) to {r['out']}"
    )
