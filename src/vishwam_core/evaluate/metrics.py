"""Scoring functions that vishwam's task packs name in their YAML (`!function vishwam_core.evaluate.metrics.X`).

lm-eval calls them; they see one document and its responses, or (filters) all responses at once.
- GSM8K: `extract_answer` finds the final number of a solution ("#### n", else "The answer is n", else
  the last number), `numeric_equal` compares two of them as decimals (1,234.50 == 1234.5).
- BIG-bench generative: BIG-bench's own exact_str_match after its output_regex.
- HumanEval / MBPP: `execute_*` filters run every completion in the sandbox (in parallel, once),
  `code_results` turns the outcomes into pass@k.

Standard library only (plus the sandbox): lm-eval imports this module while it loads a task.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# A number as written in a solution: optional sign and $, thousands separators, decimals.
_NUMBER = re.compile(r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_MARKERS = (re.compile(r"####"), re.compile(r"[Tt]he (?:final )?answer is:?"))
BIGBENCH_OUTPUT_REGEX = r"[^\.\?\!\;\n]+"  # BIG-bench's default when a task sets neither regex nor stop


def parse_number(text: str) -> Decimal | None:
    """'-$1,234.50' -> Decimal('-1234.5'); None when `text` holds no number."""
    m = _NUMBER.search(text)
    if not m:
        return None
    cleaned = m.group(0).replace(",", "").replace("$", "").replace(" ", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value.normalize() if value != 0 else Decimal(0)


def extract_answer(solution: str) -> str | None:
    """The final answer of a GSM8K-style solution as a canonical number string, or None.

    Order: the text after the last '####' (the dataset's own marker), else after the last 'The answer
    is', else the last number anywhere in the text."""
    for marker in _MARKERS:
        found = list(marker.finditer(solution))
        if found:
            last = found[-1]
            value = parse_number(solution[last.end() :])
            if value is not None:
                return _canonical(value)
    numbers = _NUMBER.findall(solution)
    if not numbers:
        return None
    value = parse_number(numbers[-1])
    return None if value is None else _canonical(value)


def _canonical(value: Decimal) -> str:
    return format(value, "f")


def numeric_equal(prediction: str | None, target: str | None) -> bool:
    return prediction is not None and target is not None and Decimal(prediction) == Decimal(target)


def gsm8k_results(doc: dict, results: list[str]) -> dict[str, float]:
    """exact_match: the extracted final numbers of response and reference are equal."""
    target = extract_answer(doc["answer"])
    return {"exact_match": float(numeric_equal(extract_answer(results[0]), target))}


def bigbench_exact_str_match(doc: dict, results: list[str]) -> dict[str, float]:
    """BIG-bench's exact_str_match: cut at the task's stop string, take the first match of its output
    regex, and compare with each target (surrounding whitespace stripped, which BIG-bench's own prompt
    format, ending in 'A: ', never produced)."""
    text = results[0].strip()
    stop = doc.get("stop_string")
    if stop:
        index = text.find(stop)
        if index > 0:
            text = text[: index + len(stop)]
    regex = doc.get("output_regex") or (None if stop else BIGBENCH_OUTPUT_REGEX)
    if regex:
        text = next(iter(re.findall(regex, text)), "")
    return {"exact_str_match": float(text.strip() in [t.strip() for t in doc["targets"]])}


# ---- code execution ---------------------------------------------------------------------------
def _execute(programs_per_doc: list[list[str]], timeout_s: float) -> list[list[dict]]:
    from vishwam_core.evaluate.sandbox import Limits, run_programs

    flat = [p for programs in programs_per_doc for p in programs]
    outcomes = iter(run_programs(flat, Limits(timeout_s=timeout_s)))
    return [[next(outcomes).__dict__ for _ in programs] for programs in programs_per_doc]


def execute_humaneval(resps: list[list[str]], docs: list[dict]) -> list[list[dict]]:
    """lm-eval custom filter: run prompt + each completion + the tests in the sandbox."""
    from vishwam_core.evaluate.sandbox import humaneval_program

    programs = [
        [humaneval_program(doc["prompt"], r, doc["test"], doc["entry_point"]) for r in resp]
        for resp, doc in zip(resps, docs, strict=True)
    ]
    return _attach(resps, _execute(programs, timeout_s=docs[0].get("timeout_s", 10.0) if docs else 10.0))


def execute_mbpp(resps: list[list[str]], docs: list[dict]) -> list[list[dict]]:
    """lm-eval custom filter: run each completion, the setup code and the asserts in the sandbox."""
    from vishwam_core.evaluate.sandbox import mbpp_program

    programs = [
        [mbpp_program(r, doc["test_list"], doc.get("test_setup_code", "")) for r in resp]
        for resp, doc in zip(resps, docs, strict=True)
    ]
    return _attach(resps, _execute(programs, timeout_s=docs[0].get("timeout_s", 10.0) if docs else 10.0))


def _attach(resps: list[list[str]], outcomes: list[list[dict]]) -> list[list[dict]]:
    return [
        [{"completion": r, **o} for r, o in zip(resp, outs, strict=True)]
        for resp, outs in zip(resps, outcomes, strict=True)
    ]


def code_results(doc: dict, results: list) -> dict[str, float]:
    """pass@k for every k the pack asked for (doc['pass_k']) from the sandbox outcomes of n samples."""
    from vishwam_core.evaluate.sandbox import pass_at_k

    outcomes = results[0]
    n, c = len(outcomes), sum(bool(o["passed"]) for o in outcomes)
    return {f"pass@{k}": pass_at_k(n, c, k) for k in doc.get("pass_k", [1])}
