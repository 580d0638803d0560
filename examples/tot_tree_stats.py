"""Grade the search trees of a Game-of-24 `vishwam tot` run after the fact, with the exact solver.

    python examples/tot_tree_stats.py RUN_DIR [--pass-at 1,5,20]

RUN_DIR is a `vishwam tot --out` directory. For a BFS/DFS run it prints how often the model's proposed
steps are right arithmetic, how its value judgements agree with the solver, and, per depth, on how many
puzzles the search generated (and kept) a right state that can still reach 24. For a best-of-k run
(`--method cot --samples k`) it prints the unbiased pass@k (Chen et al. 2021) of its samples.
None of this feeds back into a search: the solver only grades what the model did. docs/tot.md uses it.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from math import comb
from pathlib import Path

from vishwam_core.tot.game24 import Game24, check_path, solvable


def search_stats(trees: list[dict]) -> dict:
    task = Game24("compact")
    c: Counter = Counter()
    reach = {d: [0, 0] for d in (1, 2, 3)}
    for t in trees:
        nums = [int(v) for v in t["input"].split()]
        seen = {d: [False, False] for d in reach}
        for n in t["nodes"]:
            if n["parent"] is None or n["final"]:
                continue
            steps = check_path(nums, task.lines(n["state"]))
            before = task.left(t["input"], t["nodes"][n["parent"]]["state"])
            if not task.is_final(t["input"], n["state"]):  # a step: right arithmetic on what it was given
                c["proposals"] += 1
                c["proposals_right"] += before is not None and check_path(before, [n["step"]]) is not None
            left = task.left(t["input"], n["state"])
            judged = [j for j in n["judgements"] if j in ("sure", "likely", "impossible")]
            if left is not None and judged:
                truth = solvable(left, whole=True)
                said = Counter(judged).most_common(1)[0][0]
                c[f"{'solvable' if truth else 'unsolvable'}"] += 1
                c[f"{'solvable' if truth else 'unsolvable'}_{said}"] += 1
            if steps is not None and n["depth"] in seen:
                last = steps[-1].left
                good = solvable(list(last), whole=True) if n["depth"] < 3 else list(last) == [24]
                if good:
                    seen[n["depth"]][0] = True
                    seen[n["depth"]][1] |= bool(n["selected"])
        for d in reach:
            reach[d][0] += seen[d][0]
            reach[d][1] += seen[d][1]
    return {
        "puzzles": len(trees),
        "proposals_right": round(c["proposals_right"] / max(1, c["proposals"]), 3),
        "solvable_judged_sure": round(c["solvable_sure"] / max(1, c["solvable"]), 3),
        "unsolvable_judged_impossible": round(c["unsolvable_impossible"] / max(1, c["unsolvable"]), 3),
        "right_state_reaching_24_generated_kept": {f"depth {d}": v for d, v in reach.items()},
    }


def pass_at(trees: list[dict], ks: list[int]) -> dict:
    out = {}
    for k in ks:
        total = 0.0
        for t in trees:
            samples = [n for n in t["nodes"] if n["parent"] is not None]
            n, right = len(samples), sum(bool(s["correct"]) for s in samples)
            total += 1.0 if n - right < k else 1 - comb(n - right, k) / comb(n, k)
        out[f"pass@{k}"] = round(total / len(trees), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--pass-at", default="1,5,20", help="comma list of k for a best-of-k run")
    args = ap.parse_args()
    summary = json.loads((args.run_dir / "summary.json").read_text())
    trees = [json.loads(p.read_text()) for p in sorted((args.run_dir / "trees").glob("*.json"))]
    if summary["method"] in ("bfs", "dfs"):
        print(json.dumps(search_stats(trees), indent=1))
    else:
        print(json.dumps(pass_at(trees, [int(k) for k in args.pass_at.split(",")]), indent=1))


if __name__ == "__main__":
    main()
