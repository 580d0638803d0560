"""Outputs of an evaluation: per-sample Parquet and the report card across checkpoints.

- `samples_table`: one row per document of an lm-eval task (prompt, target, response or the
  choices' loglikelihoods, the primary metric as `correct`, every metric, the document as JSON).
- `task_scores`: the primary metric of each task in an lm-eval results dict (the first metric of the
  task's metric_list, under its first filter), its stderr, the chance level (multiple choice: the
  mean of 1 / number of choices over the documents; generative: 0) and the centred score
  (score - chance) / (1 - chance), as nanochat's CORE metric reports it.
- `report_card`: tasks x checkpoints, as a dict and as Markdown; `mean centred` averages the centred
  scores of the tasks every checkpoint has.

Knows nothing of models; reads lm-eval's dicts.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _jsonable(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False, default=str)


def primary_metric(results: dict, task: str) -> tuple[str, str] | None:
    """(metric, filter) that stands for `task`: its config's first metric under its first filter."""
    row = results["results"].get(task, {})
    config = results.get("configs", {}).get(task, {})
    wanted = [m.get("metric") for m in config.get("metric_list", []) if isinstance(m, dict)]
    keys = [k for k in row if "," in k and "_stderr" not in k]
    for metric in [*wanted, *(k.split(",")[0] for k in keys)]:
        for k in keys:
            name, filt = k.split(",", 1)
            if name == str(metric):
                return name, filt
    return None


def chance_level(samples: list[dict], output_type: str) -> float:
    if output_type == "multiple_choice" and samples:
        return sum(1.0 / max(1, len(s["arguments"])) for s in samples) / len(samples)
    return 0.0


def _number(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def task_scores(results: dict) -> list[dict[str, Any]]:
    """One entry per task (and group) in lm-eval's results, in its order."""
    samples = results.get("samples") or {}
    out = []
    for task, row in results["results"].items():
        found = primary_metric(results, task)
        if found is None:
            continue
        metric, filt = found
        value = _number(row.get(f"{metric},{filt}"))
        stderr = _number(row.get(f"{metric}_stderr,{filt}"))
        config = results.get("configs", {}).get(task, {})
        output_type = config.get("output_type", "group" if task in results.get("groups", {}) else "")
        task_samples = [s for s in samples.get(task, []) if s.get("filter", filt) == filt]
        chance = chance_level(task_samples, output_type) if task_samples else None
        centred = None
        if value is not None and chance is not None and chance < 1:
            centred = (value - chance) / (1 - chance)
        out.append(
            {
                "task": task,
                "alias": row.get("alias", task).strip(" -"),
                "metric": metric,
                "filter": filt,
                "value": value,
                "stderr": stderr,
                "chance": chance,
                "centred": centred,
                "samples": len(task_samples)
                or (results.get("n-samples", {}).get(task, {}) or {}).get("effective"),
                "output_type": output_type,
            }
        )
    return out


def samples_table(samples: list[dict], output_type: str, metric: str | None):
    """lm-eval's logged samples of one task -> a pyarrow Table, one row per document (and filter)."""
    import pyarrow as pa

    rows = []
    for s in samples:
        args = s.get("arguments") or []
        prompt = args[0][0] if args and isinstance(args[0], (list, tuple)) else None
        metrics = {k: s[k] for k in s.get("metrics", []) if k in s}
        row = {
            "doc_id": int(s["doc_id"]),
            "filter": s.get("filter"),
            "prompt": prompt,
            "target": s["target"] if isinstance(s.get("target"), str) else _jsonable(s.get("target")),
            "response": None,
            "choices": None,
            "loglikelihoods": None,
            "is_greedy": None,
            "correct": _number(metrics.get(metric)) if metric else None,
            "metrics": _jsonable(metrics),
            "doc": _jsonable(s.get("doc")),
        }
        if output_type in ("multiple_choice", "loglikelihood"):
            resps = [
                r[0] if isinstance(r, (list, tuple)) and r and isinstance(r[0], (list, tuple)) else r
                for r in s["resps"]
            ]
            row["loglikelihoods"] = [float(r[0]) for r in resps]
            row["is_greedy"] = [bool(r[1]) for r in resps]
            row["choices"] = [a[1] for a in args]
            best = max(range(len(resps)), key=lambda i: resps[i][0]) if resps else None
            row["response"] = args[best][1] if best is not None else None
        elif output_type == "loglikelihood_rolling":
            row["loglikelihoods"] = [float(r[0]) for r in s["resps"]]
        else:
            filtered = s.get("filtered_resps")
            raw = s.get("resps")
            value = filtered if filtered is not None else raw
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            row["response"] = value if isinstance(value, str) else _jsonable(value)
        rows.append(row)
    schema = pa.schema(
        [
            ("doc_id", pa.int64()),
            ("filter", pa.string()),
            ("prompt", pa.string()),
            ("target", pa.string()),
            ("response", pa.string()),
            ("choices", pa.list_(pa.string())),
            ("loglikelihoods", pa.list_(pa.float64())),
            ("is_greedy", pa.list_(pa.bool_())),
            ("correct", pa.float64()),
            ("metrics", pa.string()),
            ("doc", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _cell(value: float | None, stderr: float | None, percent: bool) -> str:
    if value is None:
        return "-"
    if percent:
        text = f"{100 * value:.1f}"
        return f"{text} ± {100 * stderr:.1f}" if stderr is not None else text
    text = f"{value:.4f}"
    return f"{text} ± {stderr:.4f}" if stderr is not None else text


def report_card(checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """checkpoints: [{"name", "scores": task_scores(...), "perplexity": {source: summary}}] -> the
    card as {"checkpoints", "rows": [...], "mean_centred": {ckpt: x}, "markdown"}."""
    names = [c["name"] for c in checkpoints]
    rows: dict[str, dict[str, Any]] = {}
    for c in checkpoints:
        for s in c["scores"]:
            row = rows.setdefault(
                s["task"],
                {
                    "task": s["task"],
                    "alias": s["alias"],
                    "metric": s["metric"],
                    "chance": s["chance"],
                    "cells": {},
                },
            )
            row["cells"][c["name"]] = {k: s[k] for k in ("value", "stderr", "centred", "samples")}
    ppl_rows: dict[str, dict[str, Any]] = {}
    for c in checkpoints:
        for source, summary in (c.get("perplexity") or {}).items():
            row = ppl_rows.setdefault(source, {"source": source, "cells": {}})
            row["cells"][c["name"]] = summary
    mean_centred = {}
    complete = [
        r for r in rows.values() if all(r["cells"].get(n, {}).get("centred") is not None for n in names)
    ]
    for n in names:
        if complete:
            mean_centred[n] = sum(r["cells"][n]["centred"] for r in complete) / len(complete)
    lines = ["| task | metric | chance | " + " | ".join(names) + " |", "|" + " --- |" * (3 + len(names))]
    for r in rows.values():
        cells = []
        for n in names:
            cell = r["cells"].get(n)
            if cell is None:
                cells.append("-")
                continue
            text = _cell(cell["value"], cell["stderr"], percent=True)
            if cell["centred"] is not None:
                text += f" (centred {100 * cell['centred']:.1f})"
            cells.append(text)
        chance = "-" if r["chance"] is None else f"{100 * r['chance']:.1f}"
        lines.append(f"| {r['alias']} | {r['metric']} | {chance} | " + " | ".join(cells) + " |")
    if mean_centred:
        lines.append(
            f"| **mean centred** ({len(complete)} tasks) | | | "
            + " | ".join(f"**{100 * mean_centred[n]:.1f}**" if n in mean_centred else "-" for n in names)
            + " |"
        )
    for r in ppl_rows.values():
        cells = []
        for n in names:
            s = r["cells"].get(n)
            cells.append(
                "-" if s is None else f"{s['bits_per_byte']:.4f} bpb, ppl {s['token_perplexity']:.2f}"
            )
        lines.append(
            f"| perplexity: {r['source']} | bits/byte (lower is better) | | " + " | ".join(cells) + " |"
        )
    markdown = "\n".join(lines) + "\n"
    return {
        "checkpoints": names,
        "rows": list(rows.values()),
        "perplexity": list(ppl_rows.values()),
        "mean_centred": mean_centred,
        "markdown": markdown,
    }
