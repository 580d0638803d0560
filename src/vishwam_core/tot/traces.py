"""Training traces in the search's own step format: solver-made ones to teach a model to propose and to
value, and ToT-found ones (verified root-to-leaf paths) to fine-tune on what the search discovered.

Every record is an instruct pair `{"kind", "prompt", "response", "puzzle"}` (solver-made ones also carry
`text` = prompt + response, for `vishwam convert tokenizer`) whose prompt is exactly what the search sends (`Game24` prompts of one style), so a model trained on them is then searched with the
same prompts. Kinds:

- `cot`: the CoT prompt -> every step and the answer ("Answer: expr = 24");
- `io`: the IO prompt -> the answer expression;
- `propose`: the propose prompt at a state -> up to `max_proposals` distinct next steps in random order,
  at least one of which still reaches 24 where any does (so proposing is learnable, valuing is needed);
- `value`: the value prompt at a state -> "expr = 24" then "sure" where the solver reaches 24 from it,
  else "impossible" (states on and off solution paths, about half each);
- `judge`: the final-answer judgement -> "sure" for a right answer, "impossible" for a corrupted one.

ToT-found traces come only from paths whose every step is right arithmetic and whose answer the verifier
accepts: their CoT, a "sure" value for each state on them (the path's own rest as the witness), and the
answer's judgement. Shards for `vishwam pretrain --objective sft` are made from these records by the
data module (`--format instruct`); this module writes only the JSONL.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from vishwam_core.tot.game24 import (
    Game24,
    Step,
    all_solutions,
    check_path,
    expression,
    solvable,
    solve,
    successors,
    verify,
)
from vishwam_core.tot.tasks import Puzzle, Task

KINDS = ("cot", "io", "propose", "value", "judge")


def _steps_text(steps: Sequence[Step]) -> str:
    return "".join(s.text() + "\n" for s in steps)


def value_response(left: Sequence[Fraction], witness: Sequence[Step] | None) -> str:
    """'expr = 24\\nsure' with the witness steps, or 'impossible'."""
    if witness is None:
        return "impossible"
    return f"{expression(left, witness)} = 24\nsure"


def _proposals(left: Sequence[Fraction], rng: random.Random, max_proposals: int, whole: bool) -> list[Step]:
    options = list(successors(left, whole))
    good = [s for s in options if solvable(s.left, whole)]
    picked = rng.sample(options, min(max_proposals, len(options)))
    if good and not any(s in good for s in picked):
        picked[rng.randrange(len(picked))] = rng.choice(good)
    rng.shuffle(picked)
    return picked


def _corrupt(numbers: Sequence[int], expr: str, rng: random.Random) -> str | None:
    """A wrong answer near a right one: one number changed, or one operator swapped."""
    for _ in range(20):
        chars = list(expr)
        if rng.random() < 0.5:
            spots = [i for i, c in enumerate(chars) if c in "+-*/"]
            i = rng.choice(spots)
            chars[i] = rng.choice([o for o in "+-*/" if o != chars[i]])
            wrong = "".join(chars)
        else:
            digits = [str(v) for v in numbers]
            old = rng.choice(digits)
            wrong = expr.replace(old, str(rng.choice([v for v in range(1, 14) if str(v) != old])), 1)
        if wrong != expr and not verify(numbers, wrong):
            return wrong
    return None


def solver_traces(
    puzzles: Iterable[Sequence[int]],
    task: Game24 | None = None,
    seed: int = 0,
    cot_per_puzzle: int = 2,
    max_proposals: int = 8,
    kinds: Sequence[str] = KINDS,
    whole: bool = True,
) -> Iterator[dict[str, Any]]:
    """Records for every puzzle, made by the exact solver (no model). Same inputs and seed, same records.

    With `whole` (the default) the game is played through whole non-negative numbers only: proposals
    list only such steps, and 'sure' means 24 is reachable that way. 1346 of the 1362 puzzles (all 100
    of the paper's test rows) can be solved so; the other 16 get no records."""
    task = task or Game24("compact")
    rng = random.Random(seed)
    for numbers in puzzles:
        numbers = [int(v) for v in numbers]
        x = " ".join(map(str, numbers))
        pool = all_solutions(numbers, limit=200, whole=whole)
        if not pool:
            continue
        chosen = rng.sample(pool, min(cot_per_puzzle, len(pool)))
        path = chosen[0]
        answer = expression(numbers, path)

        def rec(kind: str, prompt: str, response: str, x: str = x) -> dict[str, Any]:
            # `text` lets `vishwam convert tokenizer` train on exactly what the model will read
            return {
                "kind": kind,
                "prompt": prompt,
                "response": response,
                "puzzle": x,
                "text": prompt + response,
            }

        if "cot" in kinds:
            for sol in chosen:
                final = _steps_text(sol) + f"Answer: {expression(numbers, sol)} = 24"
                yield rec("cot", task.cot_prompt(x), final)
        if "io" in kinds:
            yield rec("io", task.io_prompt(x), f"{answer} = 24")
        # states to teach at: on the solution path and off it, at depths 0, 1 and 2
        root = tuple(Fraction(v) for v in numbers)
        states: list[list[Step]] = [[]]
        for depth in (1, 2):
            states.append(list(path[:depth]))
            parent = list(path[: depth - 1])
            here = parent[-1].left if parent else root
            off = [s for s in successors(here, whole) if not solvable(s.left, whole)]
            states.append([*parent, rng.choice(off or list(successors(here, whole)))])
        if "propose" in kinds:
            for prefix in states:
                left = prefix[-1].left if prefix else root
                steps = _proposals(left, rng, max_proposals, whole)
                yield rec(
                    "propose",
                    task.propose_prompt(x, _steps_text(prefix)),
                    "\n".join(s.text() for s in steps),
                )
        if "value" in kinds:
            valued = [p for p in states if p]
            valued.append(list(path))  # one number left: 24
            last = path[1].left
            off_last = [s for s in successors(last, whole) if s.left[0] != 24]
            if off_last:
                valued.append([*path[:2], rng.choice(off_last)])
            for prefix in valued:
                left = prefix[-1].left
                witness = solve(left, whole) if solvable(left, whole) else None
                yield rec(
                    "value", task.value_prompt(x, _steps_text(prefix)) or "", value_response(left, witness)
                )
        if "judge" in kinds:
            final = _steps_text(path) + f"Answer: {answer} = 24\n"
            yield rec("judge", task.value_prompt(x, final) or "", "sure")
            wrong = _corrupt(numbers, answer, rng)
            if wrong is not None:
                bad = _steps_text(path) + f"Answer: {wrong} = 24\n"
                yield rec("judge", task.value_prompt(x, bad) or "", "impossible")


def path_records(task: Game24, puzzle: Puzzle, path: Sequence[str]) -> list[dict[str, Any]]:
    """Records from one verified ToT path (states root first); [] if any step is wrong arithmetic."""
    numbers = [int(v) for v in puzzle.input.split()]
    final = path[-1]
    answer = task.answer_of(puzzle.input, final)
    lines = task.lines(final)
    steps = check_path(numbers, [ln for ln in lines if not ln.lower().startswith("answer:")])
    if steps is None or not verify(numbers, answer):
        return []
    x = puzzle.input
    out = [{"kind": "cot", "prompt": task.cot_prompt(x), "response": final.strip(), "puzzle": x}]
    for i in range(1, len(steps) + 1):
        prompt = task.value_prompt(x, _steps_text(steps[:i]))
        if prompt is not None:
            response = value_response(steps[i - 1].left, steps[i:])
            out.append({"kind": "value", "prompt": prompt, "response": response, "puzzle": x})
    judge = task.value_prompt(x, final)
    if judge is not None:
        out.append({"kind": "judge", "prompt": judge, "response": "sure", "puzzle": x})
    return out


def search_traces(task: Task, puzzles: Sequence[Puzzle], trees: Sequence[Any]) -> list[dict[str, Any]]:
    """Records from every verified root-to-leaf path of every tree, each distinct record once."""
    by_id = {p.id: p for p in puzzles}
    out, seen = [], set()
    for tree in trees:
        puzzle = by_id[tree.puzzle_id]
        for node in tree.nodes:
            if node.final and node.correct and tree.method in ("bfs", "dfs"):
                states = [n.state for n in tree.path(node.id)]
                for r in task.trace_records(puzzle, states):
                    key = (r["prompt"], r["response"])
                    if key not in seen:
                        seen.add(key)
                        out.append({**r, "source": f"tot-{tree.method}", "puzzle_id": puzzle.id})
    return out


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n
