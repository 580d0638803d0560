"""`vishwam tot`: a method over a task's puzzles with one model, every result written down.

    result = run_tot(lm, Game24("paper"), puzzles, SearchConfig(method="bfs"), out="runs/tot")

writes, atomically (`checkpoint.atomic_directory`):

    out/summary.json      success, mean LM calls and tokens per puzzle, the config, what produced it
    out/results.parquet   one row per puzzle (solved, answer, why not, calls, tokens, tree file)
    out/trees/ID.json     each search tree (`vishwam tot show` draws one)
    out/traces.jsonl      with export_traces: records from every verified root-to-leaf path

and with `export_traces=DIR`, those records as loss-masked shards in DIR, made by the data module
(`vishwam_core.data.convert_data`, format `instruct`, or `chat` when the run used the chat template, so
training sees exactly the tokens inference fed): ready for `vishwam pretrain --objective sft`.

Success is reported twice, never mixed: `success` is the answer the method chose itself (BFS: the
best-valued final state; DFS: the first final state at or above the threshold; IO/CoT: the most frequent
answer of the k samples) checked by the verifier; `success_any` is whether any final candidate verifies
(best-of-k with the verifier as oracle: the paper's "best of k" for IO/CoT, any of the b final states for
BFS). Before the first puzzle, the longest prompts of the first puzzle are checked against the model's
context, so a too-short context fails in one sentence instead of halfway.
"""

from __future__ import annotations

import difflib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vishwam_core import __version__
from vishwam_core.errors import VishwamError
from vishwam_core.tot.lm import LanguageModel
from vishwam_core.tot.search import SearchConfig, ValueCache, bfs, dfs, sample_baseline
from vishwam_core.tot.tasks import Puzzle, Task, TemplateTask
from vishwam_core.tot.tree import Tree

BUILTIN_TASKS = ("game24",)


@dataclass
class RunResult:
    summary: dict[str, Any]  # what summary.json holds
    trees: list[Tree]
    records: list[dict[str, Any]]  # ToT-found training records (with export_traces)


def load_task(spec: str, prompts: str = "paper") -> Task:
    """'game24' or a JSONL task file."""
    if spec == "game24":
        from vishwam_core.tot.game24 import Game24

        return Game24(prompts)
    path = Path(spec)
    if path.suffix in (".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise VishwamError(f"Task file {path} does not exist.")
        return TemplateTask(path)
    close = difflib.get_close_matches(spec, BUILTIN_TASKS, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise VishwamError(
        f"Unknown task '{spec}'{hint}; use {', '.join(BUILTIN_TASKS)} or a JSONL task file (see `vishwam tot --help`)."
    )


def preflight(task: Task, lm: LanguageModel, puzzle: Puzzle, cfg: SearchConfig) -> None:
    prompts = task.preflight_prompts(puzzle.input)
    if cfg.method in ("io", "cot"):
        kinds = [cfg.method]
    else:
        kinds = [cfg.generator, "value" if cfg.evaluator == "value" else None]
    for kind in kinds:
        if kind and prompts.get(kind):
            lm.check_fits(prompts[kind], task.max_tokens[kind], f"{task.name} {kind}")


def run_search(
    task: Task,
    lm: LanguageModel,
    puzzles: Sequence[Puzzle],
    cfg: SearchConfig,
    batch_puzzles: int = 8,
    cache: ValueCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Tree]:
    """Trees for every puzzle: BFS and the baselines `batch_puzzles` puzzles per lockstep batch, DFS one
    puzzle at a time."""
    if not puzzles:
        raise VishwamError("No puzzles to run.")
    preflight(task, lm, puzzles[0], cfg)
    cache = cache if cache is not None else ValueCache()
    trees: list[Tree] = []
    if cfg.method == "dfs":
        for p in puzzles:
            trees.append(dfs(task, lm, p, cfg, cache))
            if progress:
                progress(1)
        return trees
    for start in range(0, len(puzzles), batch_puzzles):
        chunk = puzzles[start : start + batch_puzzles]
        if cfg.method == "bfs":
            trees.extend(bfs(task, lm, chunk, cfg, cache))
        else:
            trees.extend(sample_baseline(task, lm, chunk, cfg))
        if progress:
            progress(len(chunk))
    return trees


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def summarize(
    task: Task, cfg: SearchConfig, puzzles: Sequence[Puzzle], trees: Sequence[Tree]
) -> dict[str, Any]:
    n = len(trees)
    u = [t.usage for t in trees]
    return {
        "task": task.describe(),
        "method": cfg.method,
        "puzzles": n,
        "solved": sum(t.solved for t in trees),
        "success": round(sum(t.solved for t in trees) / n, 4) if n else 0.0,
        "solved_any": sum(t.solved_any for t in trees),
        "success_any": round(sum(t.solved_any for t in trees) / n, 4) if n else 0.0,
        "mean_lm_calls": _mean([x["lm_calls"] for x in u]),
        "mean_prompt_tokens": _mean([x["prompt_tokens"] for x in u]),
        "mean_completion_tokens": _mean([x["completion_tokens"] for x in u]),
        "mean_nodes": _mean([x["nodes"] for x in u]),
        "value_cache_hits": sum(x.get("value_cache_hits", 0) for x in u),
        "config": cfg.to_dict(),
    }


def results_table(task: Task, puzzles: Sequence[Puzzle], trees: Sequence[Tree]):
    import pyarrow as pa

    by_id = {p.id: p for p in puzzles}
    rows: dict[str, list] = {
        k: []
        for k in (
            "id",
            "input",
            "method",
            "solved",
            "solved_any",
            "answer",
            "why_not",
            "lm_calls",
            "prompt_tokens",
            "completion_tokens",
            "value_cache_hits",
            "nodes",
            "seconds",
            "final_states",
            "tree",
        )
    }
    for t in trees:
        finals = [n.state.strip() for n in t.nodes if n.final and (n.selected or t.method == "dfs")]
        values = {
            "id": t.puzzle_id,
            "input": t.input,
            "method": t.method,
            "solved": t.solved,
            "solved_any": t.solved_any,
            "answer": t.answer,
            "why_not": None if t.solved else (task.explain(by_id[t.puzzle_id], t.answer) or "unsolved"),
            "lm_calls": t.usage["lm_calls"],
            "prompt_tokens": t.usage["prompt_tokens"],
            "completion_tokens": t.usage["completion_tokens"],
            "value_cache_hits": t.usage.get("value_cache_hits", 0),
            "nodes": t.usage["nodes"],
            "seconds": t.usage["seconds"],
            "final_states": finals,
            "tree": f"trees/{_safe(t.puzzle_id)}.json",
        }
        for k, v in values.items():
            rows[k].append(v)
    return pa.table(rows)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "puzzle"


def run_tot(
    lm: LanguageModel,
    task: Task,
    puzzles: Sequence[Puzzle],
    cfg: SearchConfig,
    out: str | Path | None = None,
    force: bool = False,
    export_traces: str | Path | None = None,
    tokenizer: str | Path | None = None,
    chat: bool = False,
    traces_seq_len: int = 1024,
    batch_puzzles: int = 8,
    progress: Callable[[int], None] | None = None,
    source: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> RunResult:
    """Run, summarise and (with `out`) write everything; `export_traces` needs `tokenizer` (the model
    directory) for the shards."""
    from vishwam_core.checkpoint import atomic_directory

    for path in (out, export_traces):
        if path is not None and Path(path).exists() and not force:
            raise VishwamError(f"{path} already exists; pass --force to replace it.")
    if export_traces is not None and tokenizer is None:
        raise VishwamError("Exporting traces as shards needs the model's tokenizer.")
    started = time.perf_counter()
    cache = ValueCache()
    trees = run_search(task, lm, puzzles, cfg, batch_puzzles, cache, progress)
    seconds = time.perf_counter() - started
    summary = summarize(task, cfg, puzzles, trees)
    summary.update(
        {
            "usage": lm.usage.to_dict(),
            "seconds": round(seconds, 2),
            "generated_tokens_per_s": round(lm.usage.completion_tokens / seconds, 2) if seconds else 0.0,
            "source": source or {},
            "vishwam_version": __version__,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        }
    )
    records: list[dict[str, Any]] = []
    if export_traces is not None:
        from vishwam_core.tot.traces import search_traces

        records = search_traces(task, puzzles, trees)
        summary["traces"] = len(records)
    if out is not None:
        import pyarrow.parquet as pq

        with atomic_directory(out, force=force) as tmp:
            (tmp / "trees").mkdir()
            for t in trees:
                t.save(tmp / "trees" / f"{_safe(t.puzzle_id)}.json")
            pq.write_table(results_table(task, puzzles, trees), tmp / "results.parquet")
            if export_traces is not None:
                from vishwam_core.tot.traces import write_jsonl

                write_jsonl(records, tmp / "traces.jsonl")
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        summary["out"] = str(out)
    if export_traces is not None:
        if records:
            shards = export_shards(records, tokenizer, export_traces, chat, traces_seq_len, force)
            summary["traces_shards"] = {
                "out": str(export_traces),
                **{k: shards.get(k) for k in ("format", "splits")},
            }
            if out is not None:
                (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        else:
            log(f"No verified root-to-leaf path: nothing to export, {export_traces} not written.")
    return RunResult(summary, trees, records)


def export_shards(
    records: Sequence[dict[str, Any]],
    tokenizer: str | Path,
    out: str | Path,
    chat: bool,
    seq_len: int = 1024,
    force: bool = False,
) -> dict[str, Any]:
    """Instruct (or chat) records -> loss-masked shards in `out`, through `vishwam_core.data`."""
    import tempfile

    from vishwam_core.data import convert_data
    from vishwam_core.tot.traces import write_jsonl

    def as_record(r: dict[str, Any]) -> dict[str, Any]:
        if not chat:
            return r
        turns = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
        return {"messages": turns, **{k: v for k, v in r.items() if k not in ("prompt", "response")}}

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "traces.jsonl"
        write_jsonl((as_record(r) for r in records), src)
        return convert_data(
            [str(src)],
            tokenizer,
            out,
            seq_len=seq_len,
            fmt="chat" if chat else "instruct",
            force=force,
            command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        )
