"""Tree-of-Thoughts search: BFS and DFS over thought states, and the IO / CoT sampling baselines.

    trees = bfs(task, lm, puzzles, SearchConfig(breadth=5, n_evaluate=3))
    tree = dfs(task, lm, puzzle, SearchConfig(method="dfs", threshold=3.0, max_visits=50))

BFS runs its puzzles in lockstep: at each of `steps` levels, every frontier state of every puzzle asks
for next thoughts in ONE `lm.complete` call (propose: one completion listing several steps; sample:
`n_generate` independent one-step continuations), then every new state is valued in ONE more call
(`n_evaluate` samples of the value prompt, sure/likely/impossible summed as the paper does; or one vote
over all of a parent's children; or the task's heuristic, which calls no model). Selection keeps exactly
min(b, candidates) states per puzzle: the best-valued (greedy, ties to the earlier) or a draw without
replacement in proportion to value. The answer is the best-valued final state of the last frontier.

DFS expands the best child first, prunes children valued below `threshold` (never expanded), backtracks
when a subtree is exhausted, stops at the first final state valued at or above the threshold, and expands
at most `max_visits` nodes.

Values are cached by value prompt (two states with the same prompt have the same value distribution;
for Game of 24 that is "the same numbers left"), across puzzles of a run as the paper's task object
does; each hit saves n_evaluate LM calls and is counted. Every reply's calls and tokens are charged to
the puzzle that asked, so per-puzzle usage is exact inside shared batches. The verifier marks final nodes
only after the search: it never steers it.

This module knows nothing of tokens or the engine: it talks to a `LanguageModel` and a `Task`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vishwam_core.errors import VishwamError
from vishwam_core.tot.lm import LanguageModel, Reply, Request, Usage
from vishwam_core.tot.tasks import Puzzle, Task
from vishwam_core.tot.tree import Node, Tree

METHODS = ("bfs", "dfs", "io", "cot")
GENERATORS = ("propose", "sample")
EVALUATORS = ("value", "vote", "heuristic")
SELECTIONS = ("greedy", "sample")


@dataclass(frozen=True)
class SearchConfig:
    method: str = "bfs"  # bfs | dfs | io | cot
    generator: str = "propose"  # propose: one call lists several steps; sample: one step per call
    evaluator: str = "value"  # value | vote | heuristic
    selection: str = "greedy"  # greedy top-b | sample (in proportion to value)
    breadth: int = 5  # b: states kept per BFS level
    n_generate: int = 1  # propose calls (or sampled steps) per expanded state
    n_evaluate: int = 3  # value (or vote) samples per state
    steps: int | None = None  # levels; None: the task's
    threshold: float = 3.0  # DFS: children valued below it are pruned, finals at or above it accepted
    max_visits: int = 100  # DFS: the most nodes expanded per puzzle
    max_children: int | None = None  # keep at most this many proposals per expansion (None: all)
    samples: int = 1  # io / cot: completions per puzzle (k of best-of-k)
    temperature: float = 0.7  # every sampled call; io / cot with samples=1 are greedy
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("method", METHODS),
            ("generator", GENERATORS),
            ("evaluator", EVALUATORS),
            ("selection", SELECTIONS),
        ):
            if getattr(self, name) not in allowed:
                raise VishwamError(
                    f"--{name} must be one of {', '.join(allowed)}, not '{getattr(self, name)}'."
                )
        for name in ("breadth", "n_generate", "n_evaluate", "max_visits", "samples"):
            if getattr(self, name) < 1:
                raise VishwamError(
                    f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}."
                )
        if self.steps is not None and self.steps < 1:
            raise VishwamError(f"--steps must be at least 1, not {self.steps}.")
        if self.temperature < 0:
            raise VishwamError(f"--temperature must be >= 0, not {self.temperature}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValueCache:
    """Value prompt -> (score, labels); `hits` counts lookups that saved a call."""

    values: dict[str, tuple[float, list[str], list[str]]] = field(
        default_factory=dict
    )  # score, labels, texts
    hits: int = 0
    misses: int = 0


@dataclass
class _Run:
    """One puzzle's search in progress: its tree and what it has cost."""

    puzzle: Puzzle
    tree: Tree
    usage: Usage = field(default_factory=Usage)
    cache_hits: int = 0
    started: float = field(default_factory=time.perf_counter)

    def charge(self, reply: Reply) -> None:
        self.usage.add(reply)

    def finish(
        self,
        task: Task,
        candidates: Sequence[Node],
        answer: Node | None,
        answer_of: Callable[[Node], str | None] | None = None,
    ) -> Tree:
        tree = self.tree
        answer_of = answer_of or (lambda n: task.answer_of(self.puzzle.input, n.state))
        for node in tree.nodes:
            if node.final:
                node.correct = task.check(self.puzzle, answer_of(node))
        tree.answer_node = None if answer is None else answer.id
        tree.answer = None if answer is None else answer_of(answer)
        tree.solved = bool(answer is not None and answer.correct)
        tree.solved_any = any(n.final and n.correct for n in candidates)
        tree.usage = {
            **self.usage.to_dict(),
            "value_cache_hits": self.cache_hits,
            "nodes": len(tree.nodes),
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        return tree


def _new_run(task: Task, puzzle: Puzzle, cfg: SearchConfig) -> _Run:
    tree = Tree(
        task=task.name, puzzle_id=puzzle.id, input=puzzle.input, method=cfg.method, config=cfg.to_dict()
    )
    tree.add(None, "", selected=True)
    return _Run(puzzle, tree)


# ---- generation -------------------------------------------------------------------------------------
def _generate(
    task: Task, lm: LanguageModel, cfg: SearchConfig, items: Sequence[tuple[_Run, Node]]
) -> list[list[Node]]:
    """New children for each (run, node), from one `lm.complete` call for all of them."""
    requests = []
    for run, node in items:
        x = run.puzzle.input
        if cfg.generator == "propose":
            prompt, kind = task.propose_prompt(x, node.state), "propose"
        else:
            prompt, kind = task.sample_prompt(x, node.state), "sample"
        requests.append(
            Request(
                prompt,
                n=cfg.n_generate,
                temperature=cfg.temperature,
                max_tokens=task.max_tokens[kind],
                stop=task.stops[kind],
            )
        )
    replies = lm.complete(requests) if requests else []
    out = []
    for (run, node), reply in zip(items, replies, strict=True):
        run.charge(reply)
        node.outputs.extend(reply.texts[: reply.lm_calls])
        x = run.puzzle.input
        steps: list[str] = []
        for text in reply.texts:
            if cfg.generator == "propose":
                steps.extend(task.parse_proposals(x, node.state, text))
            else:
                step = task.parse_sample(x, node.state, text)
                if step:
                    steps.append(step)
        seen: set[str] = set()
        kids = []
        for step in steps:
            state = task.extend(node.state, step)
            if state in seen:  # the same thought listed twice is one child
                continue
            seen.add(state)
            kids.append(run.tree.add(node, state, step, final=task.is_final(x, state)))
            if cfg.max_children is not None and len(kids) >= cfg.max_children:
                break
        out.append(kids)
    return out


# ---- evaluation -------------------------------------------------------------------------------------
def _evaluate(
    task: Task,
    lm: LanguageModel,
    cfg: SearchConfig,
    groups: Sequence[tuple[_Run, list[Node]]],
    cache: ValueCache,
) -> None:
    """Score every node of every group (a group: one parent's children) with one `lm.complete` call."""
    if cfg.evaluator == "heuristic":
        for run, nodes in groups:
            for node in nodes:
                node.score = float(task.heuristic(run.puzzle.input, node.state))
                node.judgements = ["heuristic"]
        return
    if cfg.evaluator == "vote":
        asks = [(run, nodes) for run, nodes in groups if nodes]
        requests = [
            Request(
                task.vote_prompt(run.puzzle.input, [n.state for n in nodes]),
                n=cfg.n_evaluate,
                temperature=cfg.temperature,
                max_tokens=task.max_tokens["vote"],
                stop=task.stops["vote"],
            )
            for run, nodes in asks
        ]
        replies = lm.complete(requests) if requests else []
        for (run, nodes), reply in zip(asks, replies, strict=True):
            run.charge(reply)
            votes, picks = task.parse_votes(reply.texts, len(nodes))
            for node, v in zip(nodes, votes, strict=True):
                node.score = v
                node.judgements = picks
                node.value_texts = list(reply.texts[: reply.lm_calls])
        return
    pending: dict[str, int] = {}  # prompt -> index into requests
    askers: list[_Run] = []
    requests: list[Request] = []
    todo: list[tuple[_Run, Node, str | None]] = []
    for run, nodes in groups:
        for node in nodes:
            prompt = task.value_prompt(run.puzzle.input, node.state)
            todo.append((run, node, prompt))
            if prompt is None:
                continue
            if prompt in cache.values or prompt in pending:
                cache.hits += 1
                run.cache_hits += 1
                continue
            cache.misses += 1
            pending[prompt] = len(requests)
            askers.append(run)
            requests.append(
                Request(
                    prompt,
                    n=cfg.n_evaluate,
                    temperature=cfg.temperature,
                    max_tokens=task.max_tokens["value"],
                    stop=task.stops["value"],
                )
            )
    replies = lm.complete(requests) if requests else []
    for prompt, i in pending.items():
        askers[i].charge(replies[i])
        x = askers[i].puzzle.input
        score, labels = task.parse_value(x, "", replies[i].texts)
        cache.values[prompt] = (score, labels, list(replies[i].texts[: replies[i].lm_calls]))
    for _run, node, prompt in todo:
        if prompt is None:
            node.score, node.judgements = 0.0, ["not valued"]
        else:
            score, labels, texts = cache.values[prompt]
            node.score, node.judgements, node.value_texts = score, list(labels), texts


# ---- selection --------------------------------------------------------------------------------------
def select(candidates: Sequence[Node], breadth: int, how: str, rng: np.random.Generator) -> list[Node]:
    """Exactly min(breadth, len(candidates)) nodes: the best-valued (ties to the earlier node) or a
    draw without replacement in proportion to value (uniform where every value is 0)."""
    if len(candidates) <= breadth:
        return list(candidates)
    if how == "greedy":
        return sorted(candidates, key=lambda n: (-(n.score or 0.0), n.id))[:breadth]
    weights = np.array([max(n.score or 0.0, 0.0) for n in candidates], dtype=np.float64)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    positive = int((weights > 0).sum())
    if positive < breadth:  # fill with zero-valued ones so exactly `breadth` come out
        weights = weights + (weights == 0) * weights[weights > 0].min() * 1e-9
    picks = rng.choice(len(candidates), size=breadth, replace=False, p=weights / weights.sum())
    return [candidates[i] for i in sorted(picks)]


def _best(nodes: Sequence[Node]) -> Node | None:
    return min(nodes, key=lambda n: (-(n.score or 0.0), n.id)) if nodes else None


# ---- BFS --------------------------------------------------------------------------------------------
def bfs(
    task: Task,
    lm: LanguageModel,
    puzzles: Sequence[Puzzle],
    cfg: SearchConfig,
    cache: ValueCache | None = None,
) -> list[Tree]:
    cache = cache if cache is not None else ValueCache()
    rng = np.random.default_rng(cfg.seed)
    runs = [_new_run(task, p, cfg) for p in puzzles]
    frontiers = [[run.tree.nodes[0]] for run in runs]
    for _level in range(cfg.steps or task.steps):
        expand = [
            (run, node)
            for run, front in zip(runs, frontiers, strict=True)
            for node in front
            if not node.final
        ]
        if not expand:
            break
        kids = _generate(task, lm, cfg, expand)
        _evaluate(task, lm, cfg, [(run, k) for (run, _), k in zip(expand, kids, strict=True)], cache)
        by_run: dict[int, list[Node]] = {id(run): [] for run in runs}
        for (run, _), k in zip(expand, kids, strict=True):
            by_run[id(run)].extend(k)
        for i, run in enumerate(runs):
            # a final state reached early cannot grow; it stays a candidate against the new states
            candidates = [n for n in frontiers[i] if n.final] + by_run[id(run)]
            chosen = select(candidates, cfg.breadth, cfg.selection, rng)
            for node in chosen:
                node.selected = True
            frontiers[i] = chosen
    trees = []
    for run, front in zip(runs, frontiers, strict=True):
        finals = [n for n in front if n.final]
        trees.append(run.finish(task, finals, _best(finals)))
    return trees


# ---- DFS --------------------------------------------------------------------------------------------
def dfs(
    task: Task,
    lm: LanguageModel,
    puzzle: Puzzle,
    cfg: SearchConfig,
    cache: ValueCache | None = None,
) -> Tree:
    cache = cache if cache is not None else ValueCache()
    run = _new_run(task, puzzle, cfg)
    depth_limit = cfg.steps or task.steps
    visits = 0

    def visit(node: Node) -> Node | None:
        nonlocal visits
        if node.depth >= depth_limit or visits >= cfg.max_visits:
            return None
        visits += 1
        node.order = visits
        node.selected = True
        [kids] = _generate(task, lm, cfg, [(run, node)])
        _evaluate(task, lm, cfg, [(run, kids)], cache)
        for kid in sorted(kids, key=lambda n: (-(n.score or 0.0), n.id)):
            if (kid.score or 0.0) < cfg.threshold:
                kid.pruned = True
                continue
            if kid.final:
                kid.selected = True
                return kid
            found = visit(kid)
            if found is not None:
                return found
        return None  # backtrack

    answer = visit(run.tree.nodes[0])
    finals = [n for n in run.tree.nodes if n.final]
    return run.finish(task, finals, answer)


# ---- IO / CoT baselines -----------------------------------------------------------------------------
def sample_baseline(
    task: Task,
    lm: LanguageModel,
    puzzles: Sequence[Puzzle],
    cfg: SearchConfig,
) -> list[Tree]:
    """`samples` completions of the IO or CoT prompt per puzzle, all puzzles in one call; greedy when
    samples == 1. The chosen answer is the most frequent one (ties to the first); `solved_any` is
    best-of-k with the verifier as the oracle."""
    kind = cfg.method
    runs = [_new_run(task, p, cfg) for p in puzzles]
    greedy = cfg.samples == 1
    requests = [
        Request(
            task.io_prompt(r.puzzle.input) if kind == "io" else task.cot_prompt(r.puzzle.input),
            n=cfg.samples,
            temperature=0.0 if greedy else cfg.temperature,
            max_tokens=task.max_tokens[kind],
            stop=task.stops[kind],
        )
        for r in runs
    ]
    replies = lm.complete(requests)
    trees = []
    for run, reply in zip(runs, replies, strict=True):
        run.charge(reply)
        x = run.puzzle.input
        root = run.tree.nodes[0]
        leaves = []
        for text in reply.texts[: max(reply.lm_calls, 1)]:  # greedy copies are one completion
            answer = task.output_answer(x, text, kind)
            # every completion is a final output; one without an answer is a wrong one
            leaf = run.tree.add(root, text.strip() + "\n", text.strip(), final=True, selected=True)
            leaves.append((leaf, answer))
        answered = [(leaf, a) for leaf, a in leaves if a is not None]
        chosen = None
        if answered:
            top = Counter(a for _, a in answered).most_common(1)[0][0]
            chosen = next(leaf for leaf, a in answered if a == top)
        by_node = {leaf.id: a for leaf, a in leaves}
        answers = lambda n, by_node=by_node: by_node.get(n.id)  # noqa: E731
        trees.append(run.finish(task, [leaf for leaf, _ in leaves], chosen, answers))
    return trees
