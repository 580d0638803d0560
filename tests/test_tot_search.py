"""The Tree-of-Thoughts engine on scripted fake models: BFS keeps exactly b states per step and the
best-valued ones, DFS backtracks below the threshold, the value cache saves counted calls, usage is
charged to the right puzzle, and JSONL template tasks plug in."""

import json
import random

import numpy as np
import pytest

from vishwam_core.errors import VishwamError
from vishwam_core.tot.lm import FunctionLM
from vishwam_core.tot.search import SearchConfig, ValueCache, bfs, dfs, sample_baseline, select
from vishwam_core.tot.tasks import Puzzle, Task, TemplateTask, check_number, value_labels, value_score
from vishwam_core.tot.tree import Node, Tree, to_html


class ToyTask(Task):
    """States are lines 'r.2.1'...; proposals and values come from the scripted model."""

    name = "toy"
    steps = 3

    def __init__(self, value_key=lambda step: step):
        self.value_key = value_key

    def puzzles(self, source=None, span=None):
        return [Puzzle("p", "toy")]

    def io_prompt(self, x):
        return f"IO {x}"

    def cot_prompt(self, x):
        return f"COT {x}\n"

    def propose_prompt(self, x, y):
        last = y.strip().splitlines()[-1] if y.strip() else "r"
        return f"PROPOSE {x} {last}"

    def value_prompt(self, x, y):
        return f"VALUE {self.value_key(y.strip().splitlines()[-1])}"

    def parse_value(self, x, y, texts):
        return float(sum(float(t) for t in texts)), list(texts)

    def is_final(self, x, y):
        return y.strip().splitlines()[-1].startswith("ans")

    def answer_of(self, x, y):
        last = y.strip().splitlines()[-1] if y.strip() else ""
        return last[len("ans ") :] if last.startswith("ans") else None

    def check(self, puzzle, answer):
        return answer == "42"


def scripted(children, values, fanout=4):
    """A fake model: PROPOSE lists `children[state]` (default: fanout numbered children); VALUE answers
    `values[key]`."""

    def fn(prompt, n, temperature, call):
        kind, rest = prompt.split(" ", 1)
        if kind == "PROPOSE":
            last = rest.split(" ", 1)[1]
            kids = children.get(last, [f"{last}.{k}" for k in range(1, fanout + 1)])
            return ["\n".join(kids)] * n
        if kind == "VALUE":
            return [str(values[rest])] * n
        if kind in ("IO", "COT"):
            return [f"ans {40 + (call + i) % 3}" for i in range(n)]
        raise AssertionError(prompt)

    return fn


def test_bfs_keeps_exactly_b_states_per_step_and_the_best_valued():
    rng = random.Random(0)
    values = {}

    class RandomValues(dict):
        def __missing__(self, key):
            self[key] = rng.randrange(1000)
            return self[key]

    values = RandomValues()
    lm = FunctionLM(scripted({}, values))
    b, steps = 3, 3
    [tree] = bfs(ToyTask(), lm, [Puzzle("p", "toy")], SearchConfig(breadth=b, n_evaluate=1, steps=steps))
    # level by level, recompute the expected frontier independently of the search's bookkeeping
    frontier = [tree.nodes[0]]
    for depth in range(1, steps + 1):
        kids = [n for n in tree.nodes if n.depth == depth]
        assert {k.parent for k in kids} == {f.id for f in frontier}, "only kept states were expanded"
        assert len(kids) == 4 * len(frontier)
        for k in kids:
            assert k.score == values[k.step]
        expected = sorted(kids, key=lambda n: (-n.score, n.id))[:b]
        kept = [k for k in kids if k.selected]
        assert len(kept) == b
        assert {k.id for k in kept} == {e.id for e in expected}
        assert min(k.score for k in kept) >= max(k.score for k in kids if not k.selected)
        frontier = kept
    # one proposal batch and one value batch per level
    assert lm.usage.batches == 2 * steps


def test_bfs_with_fewer_candidates_than_b_keeps_them_all():
    children = {"r": ["r.1", "r.2"]}
    values = {"r.1": 1, "r.2": 2, **{f"r.{i}.{k}": 1 for i in (1, 2) for k in range(1, 5)}}
    lm = FunctionLM(scripted(children, values))
    [tree] = bfs(ToyTask(), lm, [Puzzle("p", "toy")], SearchConfig(breadth=5, n_evaluate=1, steps=2))
    assert sum(n.selected for n in tree.nodes if n.depth == 1) == 2
    assert sum(n.selected for n in tree.nodes if n.depth == 2) == 5


def test_bfs_answers_with_the_best_valued_final_state_and_verifies_after():
    children = {"r": ["a", "b"], "a": ["ans 41", "ans 42"], "b": ["ans 43"]}
    values = {"a": 5, "b": 4, "ans 41": 9, "ans 42": 3, "ans 43": 1}
    lm = FunctionLM(scripted(children, values))
    [tree] = bfs(ToyTask(), lm, [Puzzle("p", "toy")], SearchConfig(breadth=2, n_evaluate=1, steps=2))
    finals = {n.step: n for n in tree.nodes if n.final}
    assert tree.answer == "41" and not tree.solved  # the search trusts its values, not the verifier
    assert tree.solved_any  # but "ans 42" was among the final candidates
    assert finals["ans 42"].correct and finals["ans 41"].correct is False


def test_dfs_backtracks_below_the_threshold():
    children = {"r": ["a", "b", "c"], "a": ["a1", "a2"], "b": ["ans 42", "b2"]}
    values = {"a": 10, "b": 5, "c": 1, "a1": 1, "a2": 2, "ans 42": 20, "b2": 9}
    lm = FunctionLM(scripted(children, values))
    tree = dfs(ToyTask(), lm, Puzzle("p", "toy"), SearchConfig(method="dfs", threshold=3, n_evaluate=1))
    by = {n.step: n for n in tree.nodes}
    assert by["a"].order == 2 and by["b"].order == 3, "the best child first, then back to the next"
    assert by["a1"].pruned and by["a2"].pruned and by["a1"].order is None
    assert by["c"].order is None and not by["c"].pruned, "never reached: b's subtree held an answer"
    assert tree.answer == "42" and tree.solved
    assert [n.step for n in tree.path(tree.answer_node)] == ["", "b", "ans 42"]
    assert not by["b2"].selected  # the first accepted final ends the search


def test_dfs_prunes_everything_below_the_threshold_and_stops_at_the_visit_cap():
    values = {"r.1": 1, "r.2": 1, "r.3": 1, "r.4": 1}
    lm = FunctionLM(scripted({}, values))
    tree = dfs(ToyTask(), lm, Puzzle("p", "toy"), SearchConfig(method="dfs", threshold=3, n_evaluate=1))
    assert [n.order for n in tree.nodes] == [1, None, None, None, None]
    assert all(n.pruned for n in tree.nodes[1:]) and tree.answer is None

    class High(dict):
        def __missing__(self, key):
            return 10

    lm = FunctionLM(scripted({}, High()))
    tree = dfs(
        ToyTask(), lm, Puzzle("p", "toy"), SearchConfig(method="dfs", threshold=3, n_evaluate=1, max_visits=5)
    )
    assert sorted(n.order for n in tree.nodes if n.order is not None) == [1, 2, 3, 4, 5]
    assert lm.usage.batches == 2 * 5


def test_value_cache_avoids_repeated_calls_and_counts_them():
    # every state's value prompt depends only on the last digit of its step: 4 distinct prompts
    task = ToyTask(value_key=lambda step: step.rsplit(".", 1)[-1])
    values = {"1": 4, "2": 3, "3": 2, "4": 1}
    lm = FunctionLM(scripted({}, values))
    cache = ValueCache()
    cfg = SearchConfig(breadth=2, n_evaluate=3, temperature=0.7, steps=3)
    [tree] = bfs(task, lm, [Puzzle("p", "toy")], cfg, cache)
    valued = [n for n in tree.nodes if n.parent is not None]
    value_calls = [p for p in lm.prompts if p.startswith("VALUE")]
    assert len(value_calls) == 4 * 3, "each distinct prompt sampled n_evaluate times, once"
    assert cache.misses == 4 and cache.hits == len(valued) - 4 == tree.usage["value_cache_hits"]
    assert all(n.score == 3 * values[n.step.rsplit(".", 1)[-1]] for n in valued)
    # a second run sharing the cache makes no value call at all
    before = len(lm.prompts)
    bfs(task, lm, [Puzzle("q", "toy")], cfg, cache)
    assert not [p for p in lm.prompts[before:] if p.startswith("VALUE")]

    # with a distinct prompt per state, every state costs n_evaluate calls
    class Values(dict):
        def __missing__(self, key):
            return 1

    lm2 = FunctionLM(scripted({}, Values()))
    [tree2] = bfs(ToyTask(), lm2, [Puzzle("p", "toy")], cfg, ValueCache())
    valued2 = [n for n in tree2.nodes if n.parent is not None]
    assert len([p for p in lm2.prompts if p.startswith("VALUE")]) == 3 * len(valued2)
    assert tree2.usage["value_cache_hits"] == 0


def test_lockstep_bfs_charges_each_puzzle_exactly_and_batches_once_per_phase():
    class Values(dict):
        def __missing__(self, key):
            return len(key)

    class PerPuzzle(ToyTask):
        def value_prompt(self, x, y):  # the input is in the prompt: no sharing across puzzles
            return f"VALUE {x}|{y.strip().splitlines()[-1]}"

    lm = FunctionLM(scripted({}, Values()))
    puzzles = [Puzzle(str(i), f"toy{i}") for i in range(3)]
    trees = bfs(PerPuzzle(), lm, puzzles, SearchConfig(breadth=2, n_evaluate=2, temperature=0.5, steps=2))
    assert lm.usage.batches == 4
    for key in ("lm_calls", "prompt_tokens", "completion_tokens"):
        assert sum(t.usage[key] for t in trees) == getattr(lm.usage, key)
    # puzzles with their own inputs share no prompts, so each pays the same here
    assert len({t.usage["lm_calls"] for t in trees}) == 1 and trees[0].usage["lm_calls"] > 0
    # with the input left out of the value prompt, the first puzzle pays and the others hit the cache
    lm = FunctionLM(scripted({}, Values()))
    trees = bfs(ToyTask(), lm, puzzles, SearchConfig(breadth=2, n_evaluate=2, temperature=0.5, steps=2))
    assert trees[1].usage["value_cache_hits"] > 0 and trees[0].usage["lm_calls"] > trees[1].usage["lm_calls"]
    assert sum(t.usage["lm_calls"] for t in trees) == lm.usage.lm_calls


def test_sampled_selection_keeps_exactly_b_and_never_a_worthless_state_when_it_can():
    rng = np.random.default_rng(0)
    nodes = [Node(i, 0, 1, str(i), score=s) for i, s in enumerate([0, 5, 0, 1, 20, 0, 3])]
    for _ in range(50):
        picked = select(nodes, 3, "sample", rng)
        assert len(picked) == 3 and len({n.id for n in picked}) == 3
        assert all(n.score > 0 for n in picked)
    counts = {}
    for _ in range(300):
        for n in select(nodes, 1, "sample", rng):
            counts[n.id] = counts.get(n.id, 0) + 1
    assert counts[4] > counts.get(3, 0)  # drawn in proportion to value: 20 vs 1
    assert len(select(nodes, 10, "sample", rng)) == len(nodes)


def test_value_labels_map_as_the_paper():
    labels = value_labels(["2 + 2 = 4\nsure", "maybe\nLikely", "no way: impossible", "hmm", "sure\n\n"])
    assert labels == ["sure", "likely", "impossible", "none", "sure"]
    assert value_score(labels) == pytest.approx(20 + 1 + 0.001 + 0 + 20)


def test_io_and_cot_baselines_pick_the_most_frequent_answer_and_count_best_of_k():
    lm = FunctionLM(scripted({}, {}))
    [greedy] = sample_baseline(ToyTask(), lm, [Puzzle("p", "toy")], SearchConfig(method="cot"))
    assert greedy.usage["lm_calls"] == 1 and len(greedy.nodes) == 2
    [tree] = sample_baseline(ToyTask(), lm, [Puzzle("p", "toy")], SearchConfig(method="io", samples=5))
    answers = [ToyTask().answer_of("toy", n.state) for n in tree.nodes[1:]]
    assert tree.usage["lm_calls"] == 5 and len(answers) == 5
    assert tree.answer == max(set(answers), key=lambda a: (answers.count(a), -answers.index(a)))
    assert tree.solved_any == ("42" in answers) and tree.solved == (tree.answer == "42")


def test_search_config_rejects_nonsense():
    with pytest.raises(VishwamError, match="--method must be one of"):
        SearchConfig(method="mcts")
    with pytest.raises(VishwamError, match="--breadth must be at least 1"):
        SearchConfig(breadth=0)


def test_tree_round_trips_through_json_and_html_escapes(tmp_path):
    t = Tree(task="toy", puzzle_id="p", input="<b>x</b>", method="bfs")
    root = t.add(None, "", selected=True)
    t.add(root, "<script>1</script>\n", "<script>1</script>", score=2.0, final=True, correct=False)
    t.save(tmp_path / "t.json")
    back = Tree.load(tmp_path / "t.json")
    assert back == t
    page = to_html(back)
    assert "<script>" not in page and "&lt;script&gt;" in page and page.startswith("<!doctype html>")
    (tmp_path / "bad.json").write_text(json.dumps({"nodes": [], "tree_version": 99}))
    with pytest.raises(VishwamError, match="not a vishwam search tree of version 1"):
        Tree.load(tmp_path / "bad.json")


# ---- a JSONL template task (GSM8K-style numeric answers) ---------------------------------------------
ARITH = [
    {
        "task": {
            "name": "arith",
            "steps": 2,
            "checker": "number",
            "io_prompt": "Q: {input}\nA:",
            "cot_prompt": "Q: {input}\nSteps:\n",
            "propose_prompt": "Q: {input}\n{steps}Next:\n",
            "value_prompt": "Q: {input}\n{steps}Judge:\n",
        }
    },
    {"id": "a", "input": "Tom has 3 apples and buys 4 more. How many?", "target": "7"},
    {"id": "b", "input": "A box holds 6 eggs. How many in 3 boxes?", "target": "18"},
]


def test_a_jsonl_template_task_plugs_in(tmp_path):
    path = tmp_path / "arith.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ARITH) + "\n")
    task = TemplateTask(path)
    puzzles = task.puzzles()
    assert [p.target for p in puzzles] == ["7", "18"] and task.steps == 2
    right = {"a": "7", "b": "18"}

    def fn(prompt, n, temperature, call):
        pid = "a" if "apples" in prompt else "b"
        if prompt.endswith("Next:\n"):
            if "Steps so far" in prompt or prompt.count("\n") > 2:  # second step: answers
                return [f"Answer: {right[pid]}\nAnswer: {int(right[pid]) + 1}"] * n
            return ["I add them.\nI multiply them."] * n
        if prompt.endswith("Judge:\n"):
            last = prompt.strip().splitlines()[-2]
            good = last in ("I add them.", "I multiply them.") or last == f"Answer: {right[pid]}"
            return ["sure" if good else "impossible"] * n
        raise AssertionError(prompt)

    lm = FunctionLM(fn)
    trees = bfs(task, lm, puzzles, SearchConfig(breadth=2, n_evaluate=1))
    assert [t.answer for t in trees] == ["7", "18"] and all(t.solved for t in trees)


@pytest.mark.parametrize(
    "answer,ok",
    [
        ("7", True),
        ("7.0", True),
        ("$7", True),
        ("#### 7", True),
        ("it is 7 apples", True),
        ("8", False),
        ("", False),
    ],
)
def test_number_checker_grades_like_gsm8k(answer, ok):
    assert check_number(answer, "7") is ok


def test_template_task_errors_are_one_sentence(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "x"}) + "\n")
    with pytest.raises(VishwamError, match="has no task header line"):
        TemplateTask(bad)
    bad.write_text(json.dumps({"task": {**ARITH[0]["task"], "checker": "fuzzy"}}) + "\n")
    with pytest.raises(VishwamError, match="unknown checker 'fuzzy'"):
        TemplateTask(bad)
    bad.write_text(json.dumps({"task": ARITH[0]["task"]}) + "\n{not json\n")
    with pytest.raises(VishwamError, match=r"bad.jsonl:2 is not valid JSON"):
        TemplateTask(bad)
