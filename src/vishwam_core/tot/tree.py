"""Search trees as data: nodes, the JSON file each search writes, and a self-contained HTML page of it.

A node is one thought: the partial solution `state` (every step so far, one per line), the `step` it
added, the evaluator's `score` and raw `judgements`, and what the search did with it (`selected` kept by
BFS or visited by DFS, `pruned` below the DFS threshold). Final nodes carry `correct`, set by the task's
verifier after the search (it never steers the search).

This module knows nothing of models or terminals; `vishwam tot show` draws the terminal view.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vishwam_core.errors import VishwamError

TREE_VERSION = 1


@dataclass
class Node:
    id: int
    parent: int | None
    depth: int
    state: str  # the partial solution: every step from the root, one per line
    step: str = ""  # the thought this node added ('' at the root)
    score: float | None = None  # the evaluator's value (None: not evaluated)
    judgements: list[str] = field(default_factory=list)  # parsed labels behind the score
    value_texts: list[str] = field(default_factory=list)  # the evaluator's completions, as generated
    outputs: list[str] = field(default_factory=list)  # the completions that made this node's children
    selected: bool = False  # kept by BFS selection / visited by DFS
    pruned: bool = False  # DFS: scored below the threshold, never expanded
    final: bool = False  # holds a final answer
    correct: bool | None = None  # the verifier on final nodes, after the search
    order: int | None = None  # DFS: the order nodes were expanded in


@dataclass
class Tree:
    task: str
    puzzle_id: str
    input: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    answer_node: int | None = None  # the node the search chose as its answer
    answer: str | None = None
    solved: bool = False  # the chosen answer verified
    solved_any: bool = False  # some final candidate the search ended with verified (best-of-k style)
    usage: dict[str, Any] = field(default_factory=dict)

    def add(self, parent: Node | None, state: str, step: str = "", **kw: Any) -> Node:
        node = Node(
            id=len(self.nodes),
            parent=None if parent is None else parent.id,
            depth=0 if parent is None else parent.depth + 1,
            state=state,
            step=step,
            **kw,
        )
        self.nodes.append(node)
        return node

    def children(self, node_id: int) -> list[Node]:
        return [n for n in self.nodes if n.parent == node_id]

    def path(self, node_id: int) -> list[Node]:
        """Root-to-node, the root first."""
        out = []
        cur: int | None = node_id
        while cur is not None:
            out.append(self.nodes[cur])
            cur = self.nodes[cur].parent
        return out[::-1]

    # ---- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"tree_version": TREE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tree:
        d = dict(d)
        if d.pop("tree_version", None) != TREE_VERSION:
            raise VishwamError(f"This is not a vishwam search tree of version {TREE_VERSION}.")
        node_fields = {f.name for f in fields(Node)}
        d["nodes"] = [Node(**{k: v for k, v in n.items() if k in node_fields}) for n in d.get("nodes", [])]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Tree:
        path = Path(path)
        if not path.is_file():
            raise VishwamError(f"{path} does not exist; give a tree JSON written by `vishwam tot --out DIR`.")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VishwamError(f"{path} is not valid JSON ({e}).") from None
        if not isinstance(data, dict) or "nodes" not in data:
            raise VishwamError(f"{path} is not a vishwam search tree (no 'nodes').")
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise VishwamError(f"{path} is not a readable vishwam search tree ({e}).") from None
        except VishwamError as e:
            raise VishwamError(f"{path}: {e}") from None


def node_label(node: Node) -> str:
    """One line for a node: its step (or 'root'), score and what became of it."""
    text = node.step.strip() or ("root" if node.parent is None else "(empty)")
    score = "" if node.score is None else f"[{node.score:.3g}] "
    marks = []
    if node.final:
        marks.append({True: "correct", False: "wrong", None: "final"}[node.correct])
    if node.pruned:
        marks.append("pruned")
    return f"{score}{text}" + (f"  ({', '.join(marks)})" if marks else "")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.3em} .meta{color:#555;margin-bottom:1em}
ul{list-style:none;padding-left:1.4em;border-left:1px dotted #bbb}
li{margin:.2em 0} summary{cursor:pointer}
.n{font-family:ui-monospace,monospace;white-space:pre-wrap;padding:.05em .3em;border-radius:3px}
.sel{background:#e3f4e3} .pruned{color:#999;text-decoration:line-through}
.correct{background:#b8e6b8;font-weight:bold} .wrong{background:#f6d2d2}
.answer{outline:2px solid #2a7}
.score{color:#06c;font-weight:bold}
"""


def to_html(tree: Tree) -> str:
    """A self-contained page (inline CSS, no scripts, no external files) of the whole tree."""
    kids: dict[int | None, list[Node]] = {}
    for n in tree.nodes:
        kids.setdefault(n.parent, []).append(n)

    def item(n: Node) -> str:
        cls = ["n"]
        if n.selected:
            cls.append("sel")
        if n.pruned:
            cls.append("pruned")
        if n.final and n.correct is not None:
            cls.append("correct" if n.correct else "wrong")
        if n.id == tree.answer_node:
            cls.append("answer")
        score = "" if n.score is None else f'<span class="score">{n.score:.3g}</span> '
        said = html.escape(" | ".join(n.value_texts))
        judge = (
            f' <small title="{said}">{html.escape(", ".join(n.judgements))}</small>' if n.judgements else ""
        )
        label = html.escape(n.step.strip() or ("root: " + tree.input if n.parent is None else "(empty)"))
        title = html.escape(n.state)
        head = f'{score}<span class="{" ".join(cls)}" title="{title}">{label}</span>{judge}'
        sub = kids.get(n.id, [])
        if not sub:
            return f"<li>{head}</li>"
        inner = "".join(item(c) for c in sub)
        return f"<li><details open><summary>{head}</summary><ul>{inner}</ul></details></li>"

    roots = "".join(item(n) for n in kids.get(None, []))
    u = tree.usage
    meta = (
        f"task {html.escape(tree.task)} · method {html.escape(tree.method)} · {len(tree.nodes)} nodes · "
        f"{'solved' if tree.solved else 'not solved'} · answer {html.escape(tree.answer or '-')} · "
        f"{u.get('lm_calls', 0)} LM calls, {u.get('prompt_tokens', 0)} prompt + "
        f"{u.get('completion_tokens', 0)} generated tokens"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>vishwam tot: {html.escape(tree.input)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(tree.input)}</h1><div class='meta'>{meta}</div><ul>{roots}</ul></body></html>\n"
    )
