"""What a Tree-of-Thoughts task supplies: puzzles, prompts, parsers and a verifier.

The search (`vishwam_core.tot.search`) sees a task only through `Task`: how to ask for next thoughts
(propose: one call listing several; sample: one continuation per call), how to ask for and read a value
(sure / likely / impossible, mapped to 20 / 1 / 0.001 as in the ToT paper) or a vote, when a state is
final, and how to check a final answer. The verifier (`check`) runs only after a search, never inside it.

A thought state `y` is text: every step so far, one per line. Two tasks ship: `game24` (its own module)
and `TemplateTask`, read from a JSONL task file whose first line holds prompt templates and a checker and
whose other lines are puzzles:

    {"task": {"name": "arith", "steps": 3, "checker": "number",
              "io_prompt": "Q: {input}\\nA: The answer is",
              "cot_prompt": "Q: {input}\\nThink step by step; end with 'Answer: N'.\\n",
              "propose_prompt": "Q: {input}\\n{steps}Possible next steps:\\n",
              "value_prompt": "Q: {input}\\n{steps}Is this on track? (sure/likely/impossible)\\n"}}
    {"id": "1", "input": "Tom has 3 apples and buys 4 more. How many has he?", "target": "7"}

Templates are Python format strings over {input} and {steps} (the state so far, possibly empty).
Checkers: `number` (the last number in the answer equals the target numerically: '7', '7.0', '$7' and
'#### 7' all match 7, as GSM8K grading does) and `exact` (case- and space-insensitive string equality).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from vishwam_core.errors import VishwamError

VALUE_OF = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}  # the ToT paper's mapping
_LABEL = re.compile(r"\b(sure|likely|impossible)\b", re.I)


@dataclass(frozen=True)
class Puzzle:
    id: str
    input: str
    target: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def value_labels(texts: Sequence[str]) -> list[str]:
    """The sure/likely/impossible label of each value completion: the last one on its last non-empty
    line, else the last one anywhere, else 'none'."""
    labels = []
    for text in texts:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        found = _LABEL.findall(lines[-1]) if lines else []
        found = found or _LABEL.findall(text)
        labels.append(found[-1].lower() if found else "none")
    return labels


def value_score(labels: Sequence[str]) -> float:
    """The paper sums the mapped labels over the n samples."""
    return float(sum(VALUE_OF.get(label, 0.0) for label in labels))


class Task(ABC):
    """The interface the search and the runner use. Subclasses fill the prompts and the checker."""

    name: str = "task"
    steps: int = 3  # thought steps from the root to a final answer (BFS depth)
    # new tokens and stop strings per kind of call
    max_tokens: dict[str, int] = {"io": 64, "cot": 192, "propose": 160, "sample": 48, "value": 64, "vote": 64}
    stops: dict[str, tuple[str, ...]] = {
        "io": ("\n\n",),
        "cot": ("\n\n",),
        "propose": ("\n\n",),
        "sample": ("\n",),
        "value": ("\n\n",),
        "vote": ("\n\n",),
    }

    # ---- puzzles -------------------------------------------------------------------------------
    @abstractmethod
    def puzzles(self, source: str | Path | None = None, span: str | None = None) -> list[Puzzle]:
        """The puzzles of `source` (a file; None: the task's own set), `span` 'a:b' picks rows a..b-1."""

    # ---- baselines -----------------------------------------------------------------------------
    @abstractmethod
    def io_prompt(self, x: str) -> str: ...

    @abstractmethod
    def cot_prompt(self, x: str) -> str: ...

    def output_answer(self, x: str, text: str, kind: str) -> str | None:
        """The final answer inside an IO or CoT (`kind`) completion, or None."""
        return self.answer_of(x, text)

    # ---- thoughts ------------------------------------------------------------------------------
    @abstractmethod
    def propose_prompt(self, x: str, y: str) -> str: ...

    def parse_proposals(self, x: str, y: str, text: str) -> list[str]:
        """Each non-empty line of a propose completion is one candidate next step."""
        return [ln.strip() for ln in text.splitlines() if ln.strip()]

    def sample_prompt(self, x: str, y: str) -> str:
        return self.cot_prompt(x) + y

    def parse_sample(self, x: str, y: str, text: str) -> str | None:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[0] if lines else None

    def extend(self, y: str, step: str) -> str:
        return y + step.strip() + "\n"

    @abstractmethod
    def is_final(self, x: str, y: str) -> bool: ...

    @abstractmethod
    def answer_of(self, x: str, y: str) -> str | None:
        """The final answer a state (or a completion) holds, or None."""

    # ---- evaluation ----------------------------------------------------------------------------
    @abstractmethod
    def value_prompt(self, x: str, y: str) -> str | None:
        """The value prompt for a state, or None where the state is worthless without asking."""

    def parse_value(self, x: str, y: str, texts: Sequence[str]) -> tuple[float, list[str]]:
        labels = value_labels(texts)
        return value_score(labels), labels

    def vote_prompt(self, x: str, ys: Sequence[str]) -> str:
        choices = "".join(f"Choice {i + 1}:\n{y}\n" for i, y in enumerate(ys))
        return (
            f"{self.cot_prompt(x)}\nWhich partial solution below is most promising? "
            f"Compare them, then end with 'The best choice is N'.\n{choices}"
        )

    def parse_votes(self, texts: Sequence[str], n_choices: int) -> tuple[list[float], list[str]]:
        votes = [0.0] * n_choices
        picks = []
        for text in texts:
            m = re.findall(r"best choice is\s*(\d+)", text, flags=re.I)
            pick = int(m[-1]) - 1 if m else -1
            if 0 <= pick < n_choices:
                votes[pick] += 1
                picks.append(str(pick + 1))
            else:
                picks.append("none")
        return votes, picks

    def preflight_prompts(self, x: str) -> dict[str, list[str]]:
        """The longest prompts of each kind a search of `x` will send, to check the context up front."""
        return {
            "io": [self.io_prompt(x)],
            "cot": [self.cot_prompt(x)],
            "propose": [self.propose_prompt(x, "")],
            "sample": [self.sample_prompt(x, "")],
            "value": [p for p in [self.value_prompt(x, "")] if p is not None],
        }

    def trace_records(self, puzzle: Puzzle, path: Sequence[str]) -> list[dict[str, Any]]:
        """Training records from a verified root-to-leaf path (`path`: the states, root first): by default
        the whole path as one CoT completion."""
        return [{"kind": "cot", "prompt": self.cot_prompt(puzzle.input), "response": path[-1].strip()}]

    def explain(self, puzzle: Puzzle, answer: str | None) -> str | None:
        """Why an answer fails (None: it does not, or the task cannot say)."""
        return None

    def heuristic(self, x: str, y: str) -> float:
        raise VishwamError(f"Task '{self.name}' has no heuristic evaluator; use --evaluator value or vote.")

    # ---- verification --------------------------------------------------------------------------
    @abstractmethod
    def check(self, puzzle: Puzzle, answer: str | None) -> bool:
        """True when `answer` solves `puzzle`. Runs after the search, never inside it."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps}


# ---- checkers ---------------------------------------------------------------------------------------
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def last_number(text: str) -> Fraction | None:
    """The last number in `text` ('1,234', '-3.5', '7/2'), exactly, or None."""
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    try:
        return Fraction(found[-1].replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def check_number(answer: str | None, target: str) -> bool:
    want = last_number(target)
    got = last_number(answer or "")
    return want is not None and got is not None and got == want


def check_exact(answer: str | None, target: str) -> bool:
    def norm(s: str) -> str:
        return " ".join(s.lower().split()).strip(" .")

    return answer is not None and norm(answer) == norm(target)


CHECKERS = {"number": check_number, "exact": check_exact}
TEMPLATE_KEYS = ("io_prompt", "cot_prompt", "propose_prompt", "value_prompt")


class TemplateTask(Task):
    """A task from a JSONL file: prompt templates, a checker, and puzzles with targets.

    A state is final when its last step starts with `answer_prefix` ('Answer:' by default); the answer is
    the text after it. IO completions are answers as they stand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header, self._rows = _read_task_file(self.path)
        self.name = str(header.get("name") or self.path.stem)
        self.steps = int(header.get("steps", 3))
        if self.steps < 1:
            raise VishwamError(f"{self.path}: 'steps' must be at least 1, not {self.steps}.")
        checker = header.get("checker", "number")
        if checker not in CHECKERS:
            raise VishwamError(f"{self.path}: unknown checker '{checker}'; use one of {', '.join(CHECKERS)}.")
        self._check = CHECKERS[checker]
        self.answer_prefix = str(header.get("answer_prefix", "Answer:"))
        missing = [k for k in TEMPLATE_KEYS if not isinstance(header.get(k), str)]
        if missing:
            raise VishwamError(f"{self.path}: the task header lacks {', '.join(missing)}.")
        self.templates = {k: header[k] for k in TEMPLATE_KEYS}
        for key, template in self.templates.items():
            try:
                template.format(input="", steps="")
            except (KeyError, IndexError, ValueError) as e:
                raise VishwamError(
                    f"{self.path}: {key} is not a template over {{input}} and {{steps}} ({e!r})."
                ) from None
        self.max_tokens = {**Task.max_tokens, **header.get("max_tokens", {})}

    def puzzles(self, source=None, span=None) -> list[Puzzle]:
        rows = self._rows if source is None else _read_task_file(Path(source), need_header=False)[1]
        return pick_span(rows, span)

    def io_prompt(self, x: str) -> str:
        return self.templates["io_prompt"].format(input=x, steps="")

    def cot_prompt(self, x: str) -> str:
        return self.templates["cot_prompt"].format(input=x, steps="")

    def propose_prompt(self, x: str, y: str) -> str:
        return self.templates["propose_prompt"].format(input=x, steps=y)

    def value_prompt(self, x: str, y: str) -> str | None:
        return self.templates["value_prompt"].format(input=x, steps=y)

    def _last_step(self, y: str) -> str:
        lines = [ln.strip() for ln in y.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def is_final(self, x: str, y: str) -> bool:
        return self._last_step(y).startswith(self.answer_prefix)

    def answer_of(self, x: str, y: str) -> str | None:
        for line in reversed(y.strip().splitlines()):
            if line.strip().startswith(self.answer_prefix):
                return line.strip()[len(self.answer_prefix) :].strip()
        return None

    def output_answer(self, x: str, text: str, kind: str) -> str | None:
        found = self.answer_of(x, text)
        if found is not None or kind == "cot":  # a CoT answer is its 'Answer:' line, nothing else
            return found
        return text.strip() or None

    def check(self, puzzle: Puzzle, answer: str | None) -> bool:
        return puzzle.target is not None and self._check(answer, puzzle.target)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "file": str(self.path)}


def pick_span(rows: list[Puzzle], span: str | None) -> list[Puzzle]:
    """`span` 'a:b' (0-based, b exclusive, like a Python slice) -> rows[a:b]."""
    if span is None:
        return rows
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", span)
    if not m:
        raise VishwamError(f"--range must look like 900:1000 (rows a to b-1, from 0), not '{span}'.")
    a = int(m.group(1)) if m.group(1) else 0
    b = int(m.group(2)) if m.group(2) else len(rows)
    if not 0 <= a < b <= len(rows):
        raise VishwamError(
            f"--range {span} is outside the {len(rows)} puzzles (use a:b with 0 <= a < b <= {len(rows)})."
        )
    return rows[a:b]


def _read_task_file(path: Path, need_header: bool = True) -> tuple[dict[str, Any], list[Puzzle]]:
    if not path.is_file():
        raise VishwamError(f"{path} does not exist.")
    header: dict[str, Any] | None = None
    rows: list[Puzzle] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise VishwamError(f"{path}:{lineno} is not valid JSON ({e.msg}).") from None
            if not isinstance(obj, dict):
                raise VishwamError(f"{path}:{lineno} is not a JSON object.")
            if "task" in obj:
                if header is not None or not isinstance(obj["task"], dict):
                    raise VishwamError(
                        f"{path}:{lineno}: one 'task' header object is allowed, on its own line."
                    )
                header = obj["task"]
                continue
            if not isinstance(obj.get("input"), str):
                raise VishwamError(f"{path}:{lineno} has no string 'input'.")
            target = obj.get("target")
            rows.append(
                Puzzle(
                    id=str(obj.get("id", len(rows))),
                    input=obj["input"],
                    target=None if target is None else str(target),
                    meta={k: v for k, v in obj.items() if k not in ("id", "input", "target")},
                )
            )
    if header is None and need_header:
        raise VishwamError(f'{path} has no task header line ({{"task": {{...}}}}); see `vishwam tot --help`.')
    return header or {}, rows
