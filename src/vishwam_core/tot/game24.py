"""Game of 24: puzzles, an exact solver, a verifier that parses (never evaluates), prompts, the task.

- Puzzles: the ToT paper's CSV (`Rank,Puzzles,...`, 1362 rows ranked by human solve time; shipped as
  package data, MIT), a file of one puzzle per line, or `all_solvable()`: every 4-multiset of 1..13 the
  solver can bring to 24 (exactly the CSV's 1362).
- Solver: depth-first over pairs with exact `Fraction` arithmetic (negative and fractional intermediates
  allowed), solvability memoised per sorted multiset.
- Verifier: the final expression is tokenised against a whitelist (digits, + - * / ( ) and spaces, at
  most 200 characters), parsed with `ast.parse(mode="eval")`, and walked: only integer literals and
  binary + - * / are accepted (no unary minus, no power, no names or calls), its leaves must be exactly
  the puzzle's four numbers, and its value, computed over `Fraction`, must be 24. Nothing is evaluated
  by Python: `__import__('os')` fails the whitelist, `9**9**9` parses to a power node and is refused.
- Prompts, two styles with one step format ("a op b = r (left: ...)", then "Answer: expr = 24"):
  `paper` is few-shot in the manner of the ToT paper (for pretrained instruct models); `compact` is
  zero-shot and short, the format `vishwam tot traces` teaches a model trained here.
"""

from __future__ import annotations

import ast
import csv
import io
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from importlib import resources
from pathlib import Path

from vishwam_core.errors import VishwamError
from vishwam_core.tot.tasks import Puzzle, Task, pick_span

TARGET = Fraction(24)
MAX_EXPRESSION_CHARS = 200
PROMPT_STYLES = ("paper", "compact")


# ---- numbers and steps --------------------------------------------------------------------------------
def fmt(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def fmt_numbers(values: Sequence[Fraction | int]) -> str:
    return " ".join(fmt(Fraction(v)) for v in sorted(Fraction(v) for v in values))


_NUM = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def parse_numbers(text: str) -> list[Fraction] | None:
    """'3 8/3 -4 2.5' -> Fractions; None when something else is there."""
    parts = text.replace(",", " ").split()
    if not parts or not all(_NUM.fullmatch(p) for p in parts):
        return None
    try:
        return [Fraction(p) for p in parts]
    except (ValueError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class Step:
    a: Fraction
    op: str
    b: Fraction
    result: Fraction
    left: tuple[Fraction, ...]

    def text(self) -> str:
        return f"{fmt(self.a)} {self.op} {fmt(self.b)} = {fmt(self.result)} (left: {fmt_numbers(self.left)})"


def _combine(
    a: Fraction, b: Fraction, whole: bool = False
) -> Iterator[tuple[Fraction, str, Fraction, Fraction]]:
    """(lhs, op, rhs, result) for every way to combine a pair (a >= b); commutative ops once. `whole`
    keeps only whole non-negative results (a - b, and a / b where b divides a), the way people play."""
    yield a, "+", b, a + b
    yield a, "*", b, a * b
    yield a, "-", b, a - b
    if a != b and not whole:
        yield b, "-", a, b - a
    if b != 0 and (not whole or (a / b).denominator == 1):
        yield a, "/", b, a / b
    if a != 0 and a != b and not whole:
        yield b, "/", a, b / a


def successors(numbers: Sequence[Fraction], whole: bool = False) -> Iterator[Step]:
    """Every step from a multiset: pick a pair (larger first), combine it, list what is left."""
    nums = sorted(Fraction(v) for v in numbers)
    seen = set()
    for i, j in itertools.combinations(range(len(nums)), 2):
        rest = [nums[k] for k in range(len(nums)) if k not in (i, j)]
        hi, lo = max(nums[i], nums[j]), min(nums[i], nums[j])
        for lhs, op, rhs, r in _combine(hi, lo, whole):
            step = Step(lhs, op, rhs, r, tuple(sorted([*rest, r])))
            if step not in seen:
                seen.add(step)
                yield step


@cache
def _solvable(key: tuple[Fraction, ...], whole: bool) -> bool:
    if len(key) == 1:
        return key[0] == TARGET
    for i, j in itertools.combinations(range(len(key)), 2):
        rest = key[:i] + key[i + 1 : j] + key[j + 1 :]
        for _, _, _, r in _combine(key[j], key[i], whole):  # key is sorted: key[j] >= key[i]
            if _solvable(tuple(sorted((*rest, r))), whole):
                return True
    return False


def solvable(numbers: Sequence[Fraction | int], whole: bool = False) -> bool:
    """Whether 24 can be reached (with `whole`: through whole non-negative numbers only)."""
    return _solvable(tuple(sorted(Fraction(v) for v in numbers)), whole)


def _plain_first(step: Step) -> tuple[bool, bool]:
    """Steps through whole non-negative numbers sort first: they read the way people write them."""
    return step.result.denominator != 1, step.result < 0


def solve(numbers: Sequence[int | Fraction], whole: bool = False) -> list[Step] | None:
    """A solution (a list of steps ending at 24), preferring whole non-negative intermediates; or None."""
    nums = tuple(sorted(Fraction(v) for v in numbers))
    if len(nums) == 1:
        return [] if nums[0] == TARGET else None
    for s in sorted(successors(nums, whole), key=_plain_first):
        if _solvable(s.left, whole):
            rest = solve(s.left, whole)
            assert rest is not None
            return [s, *rest]
    return None


def all_solutions(
    numbers: Sequence[int | Fraction], limit: int = 1000, whole: bool = False
) -> list[list[Step]]:
    """Distinct step sequences reaching 24 (at most `limit`)."""
    out: list[list[Step]] = []

    def walk(nums: tuple[Fraction, ...], path: list[Step]) -> None:
        if len(out) >= limit:
            return
        if len(nums) == 1:
            if nums[0] == TARGET:
                out.append(list(path))
            return
        for s in successors(nums, whole):
            if _solvable(s.left, whole):
                walk(s.left, [*path, s])

    walk(tuple(sorted(Fraction(v) for v in numbers)), [])
    return out


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def expression(numbers: Sequence[int | Fraction], steps: Sequence[Step]) -> str:
    """The single expression a step list builds from `numbers`, minimally parenthesised (a negative or
    fractional starting number is always bracketed)."""
    pool: list[tuple[Fraction, str, int]] = []
    for v in numbers:
        v = Fraction(v)
        plain = v.denominator == 1 and v >= 0
        pool.append((v, fmt(v) if plain else f"({fmt(v)})", 3))

    def take(v: Fraction) -> tuple[str, int]:
        for k, (val, e, p) in enumerate(pool):
            if val == v:
                pool.pop(k)
                return e, p
        raise VishwamError(f"A step uses {fmt(v)}, which is not among the numbers left.")

    for s in steps:
        le, lp = take(s.a)
        re_, rp = take(s.b)
        prec = _PREC[s.op]
        if lp < prec:
            le = f"({le})"
        if rp < prec or (rp == prec and s.op in "-/"):
            re_ = f"({re_})"
        pool.append((s.result, f"{le} {s.op} {re_}", prec))
    if len(pool) != 1:
        raise VishwamError("The steps do not use every number.")
    return pool[0][1]


def parse_step(line: str) -> Step | None:
    """'10 - 4 = 6 (left: 5 6 6)' -> Step, checked: the arithmetic holds. None otherwise."""
    m = re.fullmatch(
        r"\s*(-?[\d/.]+)\s*([-+*/×÷])\s*(-?[\d/.]+)\s*=\s*(-?[\d/.]+)\s*\(\s*left:\s*(.*?)\s*\)\s*",
        line,
        re.I,
    )
    if not m:
        return None
    nums = [parse_numbers(m.group(i)) for i in (1, 3, 4)]
    left = parse_numbers(m.group(5))
    if any(n is None or len(n) != 1 for n in nums) or left is None:
        return None
    (a,), (b,), (r,) = nums  # type: ignore[misc]
    op = {"×": "*", "÷": "/"}.get(m.group(2), m.group(2))
    if op == "/" and b == 0:
        return None
    want = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
    if want != r:
        return None
    return Step(a, op, b, r, tuple(sorted(left)))


def check_path(numbers: Sequence[int], lines: Sequence[str]) -> list[Step] | None:
    """The steps of a path if every one is right arithmetic on the numbers then left, and the numbers
    left are what it says; else None."""
    pool = sorted(Fraction(v) for v in numbers)
    steps = []
    for line in lines:
        step = parse_step(line)
        if step is None:
            return None
        rest = list(pool)
        for v in (step.a, step.b):
            if v not in rest:
                return None
            rest.remove(v)
        pool = sorted([*rest, step.result])
        if tuple(pool) != step.left:
            return None
        steps.append(step)
    return steps


# ---- verifier -------------------------------------------------------------------------------------
_ALLOWED = re.compile(r"[0-9+\-*/() ]*")


def extract_expression(answer: str | None) -> str | None:
    """The expression of an answer line: after the last 'Answer:', before '='; × and ÷ normalised."""
    if answer is None:
        return None
    text = answer
    if "answer:" in text.lower():
        text = text[text.lower().rfind("answer:") + len("answer:") :]
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.split("=")[0]
    return text.replace("×", "*").replace("÷", "/").replace("\u2212", "-").strip() or None


def explain(numbers: Sequence[int], answer: str | None) -> str | None:
    """None when `answer` solves the puzzle, else why not (one phrase)."""
    expr = extract_expression(answer)
    if expr is None:
        return "no expression"
    if len(expr) > MAX_EXPRESSION_CHARS:
        return "expression too long"
    if not _ALLOWED.fullmatch(expr):
        return "characters other than digits, + - * / and parentheses"
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "not an arithmetic expression"
    leaves: list[int] = []

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            leaves.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if b == 0:
                raise ZeroDivisionError
            return a / b
        raise ValueError(type(node).__name__)

    try:
        result = value(tree.body)
    except ZeroDivisionError:
        return "division by zero"
    except (ValueError, RecursionError):
        return "only numbers and + - * / are allowed"
    if sorted(leaves) != sorted(numbers):
        return f"uses {' '.join(map(str, sorted(leaves)))}, not {' '.join(map(str, sorted(numbers)))}"
    if result != TARGET:
        return f"equals {fmt(result)}, not 24"
    return None


def verify(numbers: Sequence[int], answer: str | None) -> bool:
    return explain(numbers, answer) is None


# ---- puzzles --------------------------------------------------------------------------------------
def _puzzle_numbers(text: str, where: str) -> list[int]:
    parts = text.split()
    if len(parts) != 4 or not all(p.isdigit() and 1 <= int(p) <= 1000 for p in parts):
        raise VishwamError(f"{where}: a puzzle is four whole numbers like '4 5 6 10', not {text.strip()!r}.")
    return [int(p) for p in parts]


def read_puzzles(path: str | Path | None = None) -> list[Puzzle]:
    """The ToT CSV (`Rank,Puzzles,...`) or one puzzle per line; None reads the bundled CSV."""
    if path is None:
        text = resources.files("vishwam_core.tot").joinpath("data/game24_puzzles.csv").read_text()
        name = "game24_puzzles.csv"
    else:
        path = Path(path)
        if not path.is_file():
            raise VishwamError(f"{path} does not exist.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise VishwamError(
                f"{path} is not UTF-8 text; give the ToT CSV or one puzzle per line."
            ) from None
        name = path.name
    lines = text.splitlines()
    if lines and "Puzzles" in lines[0].split(","):
        rows = list(csv.DictReader(io.StringIO(text)))
        out = []
        for lineno, row in enumerate(rows, 2):
            nums = _puzzle_numbers(row.get("Puzzles") or "", f"{name}:{lineno}")
            rank = (row.get("Rank") or str(lineno - 1)).strip()
            meta = {k: v for k, v in row.items() if k not in ("Rank", "Puzzles") and k}
            out.append(Puzzle(id=rank, input=" ".join(map(str, nums)), meta={"rank": rank, **meta}))
        return out
    out = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            nums = _puzzle_numbers(line, f"{name}:{lineno}")
            out.append(Puzzle(id=str(len(out) + 1), input=" ".join(map(str, nums))))
    if not out:
        raise VishwamError(f"{name} holds no puzzles.")
    return out


def all_solvable(lo: int = 1, hi: int = 13) -> list[tuple[int, int, int, int]]:
    """Every multiset of four numbers in lo..hi that reaches 24, in sorted order."""
    return [c for c in itertools.combinations_with_replacement(range(lo, hi + 1), 4) if solvable(c)]


# ---- prompts --------------------------------------------------------------------------------------
PAPER_IO = """Use the four numbers and + - * / (each number exactly once) to make 24.
Input: 2 3 4 12
Answer: 12 * (4 - 3) * 2 = 24
Input: 1 5 5 9
Answer: (5 + 1) * (9 - 5) = 24
Input: 3 4 7 10
Answer: (10 - 4) * (7 - 3) = 24
Input: 1 2 6 13
Answer: 13 - 1 + 2 * 6 = 24
Input: {input}
Answer:"""

PAPER_COT = """Use the four numbers and + - * / to make 24. Each step combines two numbers and lists the numbers left; the last step leaves 24. Then write the answer as one expression.
Input: 2 3 4 12
Steps:
4 - 3 = 1 (left: 1 2 12)
12 * 2 = 24 (left: 1 24)
24 * 1 = 24 (left: 24)
Answer: (12 * 2) * (4 - 3) = 24
Input: 1 5 5 9
Steps:
5 + 1 = 6 (left: 5 6 9)
9 - 5 = 4 (left: 4 6)
6 * 4 = 24 (left: 24)
Answer: (5 + 1) * (9 - 5) = 24
Input: 3 4 7 10
Steps:
10 - 4 = 6 (left: 3 6 7)
7 - 3 = 4 (left: 4 6)
6 * 4 = 24 (left: 24)
Answer: (10 - 4) * (7 - 3) = 24
Input: {input}
Steps:
"""

PAPER_PROPOSE = """Pick two of the numbers, combine them with + - * or /, and write the numbers left. List eight different next steps, one per line.
Input: 3 5 7 12
Possible next steps:
3 + 5 = 8 (left: 7 8 12)
12 - 7 = 5 (left: 3 5 5)
5 * 7 = 35 (left: 3 12 35)
12 / 3 = 4 (left: 4 5 7)
7 - 3 = 4 (left: 4 5 12)
5 + 12 = 17 (left: 3 7 17)
3 * 7 = 21 (left: 5 12 21)
12 - 5 = 7 (left: 3 7 7)
Input: {input}
Possible next steps:
"""

PAPER_VALUE = """Judge whether the numbers can reach 24 using + - * / with each number exactly once. Try a few combinations, then answer sure, likely or impossible.
2 12
2 * 12 = 24
sure
1 5 5
5 * 5 = 25, 25 - 1 = 24
sure
4 9 11
11 - 9 = 2, 4 + 2 = 6; 9 + 11 = 20, 20 + 4 = 24
sure
2 6 9
9 - 6 = 3, 3 * 2 = 6; 9 + 6 + 2 = 17; I cannot get 24 yet, but the numbers are in a fair range
likely
10 13
10 + 13 = 23, 13 - 10 = 3, 10 * 13 = 130, 13 / 10 = 1.3
impossible
1 1 2
1 + 1 + 2 = 4, (1 + 1) * 2 = 4; the numbers are all too small
impossible
6 6 13
6 + 6 + 13 = 25, 13 - 6 = 7, 7 * 6 = 42; 6 * 6 - 13 = 23
impossible
{input}
"""

PAPER_JUDGE = """Use the numbers of the input and + - * / to make 24. Given an input and an answer, judge whether the answer is correct: it must use each input number exactly once, no other numbers, and equal 24. Answer sure or impossible.
Input: 4 4 6 8
Answer: (4 + 8) * (6 - 4) = 24
Judge:
sure
Input: 2 9 10 12
Answer: 2 * 12 * (10 - 9) = 24
Judge:
sure
Input: 4 9 10 13
Answer: (13 - 9) * (10 - 4) = 24
Judge:
sure
Input: 4 4 6 8
Answer: (4 + 8) * (6 - 4) + 1 = 25
Judge:
impossible
Input: 2 9 10 12
Answer: 2 * (12 - 10) = 24
Judge:
impossible
Input: {input}
Answer: {answer}
Judge:
"""

COMPACT_IO = "Numbers: {input}\nAnswer:\n"
COMPACT_COT = "Numbers: {input}\nSteps:\n"
COMPACT_PROPOSE = "Numbers: {input}\nNext steps:\n"
COMPACT_VALUE = "Numbers: {input}\nCan they make 24?\n"
COMPACT_JUDGE = "Numbers: {input}\nAnswer: {answer}\nCorrect?\n"

PROMPTS = {
    "paper": {
        "io": PAPER_IO,
        "cot": PAPER_COT,
        "propose": PAPER_PROPOSE,
        "value": PAPER_VALUE,
        "judge": PAPER_JUDGE,
    },
    "compact": {
        "io": COMPACT_IO,
        "cot": COMPACT_COT,
        "propose": COMPACT_PROPOSE,
        "value": COMPACT_VALUE,
        "judge": COMPACT_JUDGE,
    },
}

_STEP = re.compile(r"^(.*?)=\s*(.*?)\s*\(\s*left:\s*(.*?)\s*\)\s*$", re.I)


def _clean(line: str) -> str:
    """Drop list markers a model may add ('1. ', '- ', '* ')."""
    return re.sub(r"^\s*(?:\d+[.)]\s+|[-*•]\s+)", "", line).strip()


class Game24(Task):
    """Four numbers to 24 in three steps plus an answer: `steps` = 4, as in the ToT paper."""

    name = "game24"
    steps = 4

    def __init__(self, prompts: str = "paper"):
        if prompts not in PROMPT_STYLES:
            raise VishwamError(f"--prompts must be one of {', '.join(PROMPT_STYLES)}, not '{prompts}'.")
        self.style = prompts
        self.templates = PROMPTS[prompts]
        self.max_tokens = {"io": 48, "cot": 160, "propose": 200, "sample": 40, "value": 64, "vote": 64}
        if prompts == "compact":
            self.max_tokens = {"io": 40, "cot": 120, "propose": 160, "sample": 32, "value": 40, "vote": 64}
        self.stops = {
            "io": ("\n",),
            "cot": ("\n\n", "\nInput:", "\nNumbers:"),
            "propose": ("\n\n", "\nInput:", "\nNumbers:"),
            "sample": ("\n",),
            "value": ("\n\n", "\nInput:", "\nNumbers:"),
            "vote": ("\n\n",),
        }

    def describe(self) -> dict:
        return {"name": self.name, "steps": self.steps, "prompts": self.style}

    def puzzles(self, source=None, span=None) -> list[Puzzle]:
        return pick_span(read_puzzles(source), span)

    # ---- states --------------------------------------------------------------------------------
    def lines(self, y: str) -> list[str]:
        return [ln.strip() for ln in y.strip().splitlines() if ln.strip()]

    def left(self, x: str, y: str) -> list[Fraction] | None:
        """The numbers a state has left: the root's four, else what its last step says."""
        lines = self.lines(y)
        if not lines:
            return parse_numbers(x)
        m = _STEP.match(lines[-1])
        return parse_numbers(m.group(3)) if m else None

    def is_final(self, x: str, y: str) -> bool:
        lines = self.lines(y)
        return bool(lines) and lines[-1].lower().startswith("answer:")

    def answer_of(self, x: str, y: str) -> str | None:
        for line in reversed(self.lines(y)):
            if line.lower().startswith("answer:"):
                return line[len("answer:") :].strip()
        return None

    def output_answer(self, x: str, text: str, kind: str) -> str | None:
        found = self.answer_of(x, text)
        if found is not None or kind == "cot":  # a CoT answer is its 'Answer:' line, nothing else
            return found
        lines = self.lines(text)  # an IO completion is the expression itself
        return lines[0] if lines else None

    # ---- prompts -------------------------------------------------------------------------------
    def io_prompt(self, x: str) -> str:
        return self.templates["io"].format(input=x)

    def cot_prompt(self, x: str) -> str:
        return self.templates["cot"].format(input=x)

    def _answer_step(self, x: str, y: str) -> bool:
        left = self.left(x, y)
        return left is not None and len(left) == 1

    def propose_prompt(self, x: str, y: str) -> str:
        if self._answer_step(x, y) or len(self.lines(y)) >= self.steps - 1:
            return self.cot_prompt(x) + y  # every number used: ask for the answer, as the paper does
        left = self.left(x, y)
        return self.templates["propose"].format(input=fmt_numbers(left) if left else x)

    def parse_proposals(self, x: str, y: str, text: str) -> list[str]:
        lines = [_clean(ln) for ln in text.splitlines() if ln.strip()]
        if self._answer_step(x, y) or len(self.lines(y)) >= self.steps - 1:
            answers = [ln for ln in lines if ln.lower().startswith("answer:")]
            return answers[:1]
        return [ln for ln in lines if _STEP.match(ln)]

    def parse_sample(self, x: str, y: str, text: str) -> str | None:
        lines = [_clean(ln) for ln in text.splitlines() if ln.strip()]
        return lines[0] if lines else None

    def value_prompt(self, x: str, y: str) -> str | None:
        if self.is_final(x, y):
            return self.templates["judge"].format(input=x, answer=self.answer_of(x, y))
        if len(self.lines(y)) >= self.steps:
            return None  # all steps spent and no answer: worth nothing (the paper's rule)
        left = self.left(x, y)
        if left is None:
            return None
        return self.templates["value"].format(input=fmt_numbers(left))

    def heuristic(self, x: str, y: str) -> float:
        """An ORACLE, not a model: the exact solver's verdict (20 or 0.001). For ablations only."""
        if self.is_final(x, y):
            return 20.0 if verify(_ints(x), self.answer_of(x, y)) else 0.001
        left = self.left(x, y)
        return 20.0 if left is not None and solvable(left) else 0.001

    def check(self, puzzle: Puzzle, answer: str | None) -> bool:
        return verify(_ints(puzzle.input), answer)

    def explain(self, puzzle: Puzzle, answer: str | None) -> str | None:
        return explain(_ints(puzzle.input), answer)

    def preflight_prompts(self, x: str) -> dict[str, list[str]]:
        """Root prompts plus the deepest ones: the answer step after three steps, and its judgement."""
        nums = _ints(x)
        steps = solve(nums) or _any_steps(nums)
        y = "".join(s.text() + "\n" for s in steps)
        final = y + f"Answer: {expression(nums, steps)} = 24\n"
        out = super().preflight_prompts(x)
        out["propose"].append(self.propose_prompt(x, y))
        out["sample"].append(self.sample_prompt(x, y))
        out["value"].append(self.value_prompt(x, final) or "")
        out["cot"] = [self.cot_prompt(x) + final]  # a CoT prompt plus a whole solution's length
        return out

    def trace_records(self, puzzle: Puzzle, path: Sequence[str]) -> list[dict]:
        """A verified path as training records in the trace format: the CoT completion, a 'sure'
        judgement (with the path's own rest as the witness) for every state on it, and the answer's."""
        from vishwam_core.tot.traces import path_records

        return path_records(self, puzzle, path)


def _any_steps(numbers: Sequence[int]) -> list[Step]:
    """Three steps that use every number (for unsolvable inputs: the context check needs a length)."""
    steps, nums = [], tuple(Fraction(v) for v in numbers)
    while len(nums) > 1:
        step = next(iter(successors(nums)))
        steps.append(step)
        nums = step.left
    return steps


def _ints(x: str) -> list[int]:
    return [int(v) for v in x.split()]
