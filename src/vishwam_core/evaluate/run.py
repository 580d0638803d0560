"""`vishwam eval`: checkpoints x tasks through lm-eval with the vishwam backend, plus perplexity.

Order of work, so bad input fails before any model loads:
1. every checkpoint is a model directory with its tokenizer;
2. every --include-path parses (YAML and JSONL errors name the file and line);
3. every task name resolves (local packs first; lm-eval's ~15k built-in tasks are indexed only when a
   name is not local), unknown names with the closest known ones;
4. every task's dataset loads (offline, a missing Hugging Face dataset is named with how to supply it).
Then per checkpoint: `lm_eval.simple_evaluate(model=VishwamLM(...))`, perplexity where asked, and the
outputs: OUT/CKPT/results.json (lm-eval's results), OUT/CKPT/samples/TASK.parquet, OUT/CKPT/perplexity.json,
and for all checkpoints OUT/report.md, OUT/report.json and OUT/vishwam.json (what produced it).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vishwam_core.config import did_you_mean
from vishwam_core.errors import VishwamError

Log = Callable[[str], None]


def _quiet_libraries() -> None:
    """lm-eval and datasets log and draw progress bars on stderr; vishwam reports progress itself."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ.get("VISHWAM_DEBUG", "") in ("", "0", "false"):
        for name in ("lm_eval", "lm-eval", "datasets", "fsspec"):
            logging.getLogger(name).setLevel(logging.ERROR)


def check_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise VishwamError(f"Checkpoint {path} does not exist.")
    if not path.is_dir() or not (path / "config.json").exists():
        raise VishwamError(
            f"{path} is not a model directory (no config.json); eval reads directories written by "
            "`vishwam convert model` or by pretraining's export."
        )
    if not (path / "tokenizer.json").exists():
        raise VishwamError(
            f"Checkpoint {path} has no tokenizer.json; copy in the tokenizer it was trained with "
            "(tokenizer.json and tokenizer_config.json) so prompts can be tokenized."
        )
    return path


GENERIC_NAMES = {"model", "export", "final", "hf", "checkpoint"}


def checkpoint_names(paths: list[Path]) -> list[str]:
    """Report-card column names: each directory's name as given (a symlink keeps its own), with the
    parent's in front of a generic one (runs/demo/model -> demo-model); repeats numbered."""
    names, seen = [], {}
    for p in paths:
        given = Path(os.path.abspath(p))
        base = f"{given.parent.name}-{given.name}" if given.name in GENERIC_NAMES else given.name
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _local_names(include_paths: list[Path]) -> set[str]:
    from vishwam_core.evaluate.tasks import check_task_dir, read_yaml

    names: set[str] = set()
    for p in include_paths:
        names.update(check_task_dir(p))
        for y in p.rglob("*.yaml"):
            cfg = read_yaml(y)
            if isinstance(cfg, dict):
                for key in ("group", "tag"):
                    value = cfg.get(key)
                    names.update([value] if isinstance(value, str) else value or [])
    return names


def resolve_tasks(tasks: list[str], include_paths: list[Path], log: Log):
    """A TaskManager that knows every name in `tasks` (and the names with patterns expanded)."""
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise VishwamError("No tasks to run; pass --tasks T1,T2 (or --perplexity PATH).")
    local = _local_names(include_paths)
    include = [str(p) for p in include_paths] or None
    wanted = [t for t in tasks if not any(c in t for c in "*?[")]
    if include and all(t in local for t in wanted) and len(wanted) == len(tasks):
        return TaskManager(include_path=include, include_defaults=False), list(tasks)
    log("Indexing lm-eval's built-in tasks (names not found in --include-path)")
    manager = TaskManager(include_path=include, include_defaults=True)
    known = set(manager.all_tasks)
    resolved: list[str] = []
    for t in tasks:
        if any(c in t for c in "*?["):
            matched = sorted(n for n in known if fnmatch.fnmatch(n, t))
            if not matched:
                raise VishwamError(f"No task matches '{t}'.")
            resolved += matched
        elif t in known:
            resolved.append(t)
        else:
            raise VishwamError(
                f"Unknown task '{t}'{did_you_mean(t, known)}; lm-eval's registry and --include-path do not have it "
                "(`vishwam convert tasks` builds a local pack)."
            )
    return manager, resolved


def _dataset_of(manager, task: str, exc: BaseException) -> str:
    entry = manager.task_index.get(task)
    cfg = (entry.cfg if entry is not None else None) or {}
    if cfg.get("dataset_path"):
        name = f" (config {cfg['dataset_name']})" if cfg.get("dataset_name") else ""
        return f"'{cfg['dataset_path']}'{name}"
    m = re.search(r"'([^']+)'", str(exc))
    return f"'{m.group(1)}'" if m else "its dataset"


def check_datasets(manager, tasks: list[str], log: Log) -> None:
    """Load each task once so a dataset that cannot be reached is named before any model loads."""
    for t in tasks:
        try:
            manager.load_task_or_group([t])
        except VishwamError:
            raise
        except (ConnectionError, FileNotFoundError, OSError) as e:
            home = os.environ.get("HF_HOME") or "~/.cache/huggingface"
            reason = str(e).split("\n")[0].rstrip(".")
            raise VishwamError(
                f"Task '{t}' needs the dataset {_dataset_of(manager, t, e)}, which is not in the datasets "
                f"cache under {home} and cannot be downloaded here ({reason}); run it once where the Hub "
                "is reachable to cache it, or convert the dataset's local files with `vishwam convert "
                "tasks FILE --out DIR` and pass --include-path DIR."
            ) from None
        except Exception as e:
            if type(e).__name__ in (
                "DatasetNotFoundError",
                "DataFilesNotFoundError",
                "LocalEntryNotFoundError",
            ):
                raise VishwamError(
                    f"Task '{t}' needs the dataset {_dataset_of(manager, t, e)}, which cannot be found "
                    f"({str(e).splitlines()[0]}); convert local files with `vishwam convert tasks` and pass --include-path."
                ) from None
            raise


def _results_json(results: dict) -> str:
    from lm_eval.utils import handle_non_serializable

    kept = {k: v for k, v in results.items() if k != "samples"}
    return json.dumps(kept, indent=2, default=handle_non_serializable, ensure_ascii=False)


def run_eval(
    checkpoints: list[str | Path],
    tasks: list[str],
    out: str | Path,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 64,
    include_paths: list[str | Path] | None = None,
    seed: int | None = None,
    perplexity: list[str | Path] | None = None,
    perplexity_split: str = "val",
    context: int | None = None,
    apply_chat_template: bool = False,
    confirm_run_unsafe_code: bool = False,
    max_gen_toks: int = 256,
    compile_cache: str | Path | None = None,
    command: str | None = None,
    log: Log = lambda _: None,
    progress: Callable[[str, str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every checkpoint on every task; returns the report card (plus paths)."""
    started = time.perf_counter()
    _quiet_libraries()
    paths = [check_checkpoint(c) for c in checkpoints]
    if not paths:
        raise VishwamError("Name at least one checkpoint directory to evaluate.")
    includes = [Path(p) for p in include_paths or []]
    perplexity_sources = [Path(p) for p in perplexity or []]
    for p in perplexity_sources:
        if not p.exists():
            raise VishwamError(f"--perplexity {p} does not exist.")
    manager, resolved = (None, [])
    if tasks:
        manager, resolved = resolve_tasks(tasks, includes, log)
        check_datasets(manager, resolved, log)
    elif not perplexity_sources:
        raise VishwamError("Nothing to evaluate; pass --tasks T1,T2 and/or --perplexity PATH.")

    import jax

    if compile_cache is not None and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(compile_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    from lm_eval import simple_evaluate

    from vishwam_core import __version__
    from vishwam_core.checkpoint import load_model, load_tokenizer
    from vishwam_core.evaluate.backend import VishwamLM
    from vishwam_core.evaluate.perplexity import (
        is_shard_dir,
        read_documents,
        shard_perplexity,
        text_perplexity,
    )
    from vishwam_core.evaluate.report import report_card, samples_table, task_scores

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = checkpoint_names(paths)
    seeds = (
        {}
        if seed is None
        else {
            k: seed for k in ("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed")
        }
    )
    documents = {str(p): read_documents(p) for p in perplexity_sources if not is_shard_dir(p)}
    entries, timings = [], {}
    for path, name in zip(paths, names, strict=True):
        log(f"Loading {path}")
        tokenizer = load_tokenizer(path)
        lm = VishwamLM(
            str(path),
            model=load_model(path),
            tokenizer=tokenizer,
            batch_size=batch_size,
            max_gen_toks=max_gen_toks,
            seed=seed or 0,
            progress=(lambda kind, done, total, _n=name: progress(_n, kind, done, total))
            if progress
            else None,
        )
        ckpt_dir = out / name
        (ckpt_dir / "samples").mkdir(parents=True, exist_ok=True)
        scores: list[dict] = []
        if resolved:
            log(f"Evaluating {name} on {', '.join(resolved)}")
            results = simple_evaluate(
                model=lm,
                tasks=resolved,
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=manager,
                log_samples=True,
                apply_chat_template=apply_chat_template,
                confirm_run_unsafe_code=confirm_run_unsafe_code,
                **seeds,
            )
            (ckpt_dir / "results.json").write_text(_results_json(results) + "\n", encoding="utf-8")
            scores = task_scores(results)
            import pyarrow.parquet as pq

            by_task = {s["task"]: s for s in scores}
            for task, samples in (results.get("samples") or {}).items():
                config = results["configs"].get(task, {})
                metric = by_task.get(task, {}).get("metric")
                pq.write_table(
                    samples_table(samples, config.get("output_type", ""), metric),
                    ckpt_dir / "samples" / f"{task}.parquet",
                )
        ppl: dict[str, Any] = {}
        for source in perplexity_sources:
            log(f"Perplexity of {name} on {source}")
            if is_shard_dir(source):
                ppl[str(source)] = shard_perplexity(
                    lm.model, tokenizer, source, path / "tokenizer.json", split=perplexity_split
                )
            else:
                ppl[str(source)] = text_perplexity(lm, documents[str(source)], context=context)
        if ppl:
            (ckpt_dir / "perplexity.json").write_text(json.dumps(ppl, indent=2) + "\n")
        timings[name] = {**lm.timings, "compile_seconds": round(lm.scorer.compile_seconds, 3)}
        entries.append({"name": name, "path": str(path), "scores": scores, "perplexity": ppl})
        del lm

    card = report_card(entries)
    header = f"# Report card\n\n{len(names)} checkpoint(s): " + ", ".join(
        f"`{n}` ({e['path']})" for n, e in zip(names, entries, strict=True)
    )
    settings = {
        "num_fewshot": num_fewshot,
        "limit": limit,
        "batch_size": batch_size,
        "seed": seed,
        "apply_chat_template": apply_chat_template,
    }
    markdown = (
        f"{header}\n\nSettings: {json.dumps(settings)}. Cells: score ± stderr (percent), centred = "
        "(score - chance) / (1 - chance).\n\n" + card["markdown"]
    )
    (out / "report.md").write_text(markdown, encoding="utf-8")
    report = {
        "out": str(out),
        **card,
        "markdown": markdown,
        "checkpoint_results": entries,
        "timings": timings,
    }
    (out / "report.json").write_text(
        json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2, default=str) + "\n"
    )
    import lm_eval

    manifest = {
        "kind": "vishwam eval",
        "command": command,
        "checkpoints": [
            {"name": n, "path": str(p.resolve()), "lineage": _lineage(p)}
            for n, p in zip(names, paths, strict=True)
        ],
        "tasks": resolved,
        "include_paths": [{"path": str(p.resolve()), "manifest": _lineage(p)} for p in includes],
        "perplexity": [str(p) for p in perplexity_sources],
        "settings": settings,
        "versions": {"vishwam": __version__, "lm_eval": lm_eval.__version__, "jax": jax.__version__},
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out / "vishwam.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def _lineage(directory: Path) -> dict | None:
    f = directory / "vishwam.json"
    try:
        return json.loads(f.read_text()) if f.exists() else None
    except json.JSONDecodeError:
        return None
