"""Tree of Thoughts: search (BFS, DFS) over any model, tasks and verifiers, training traces.

- `search`: SearchConfig, bfs, dfs, the IO/CoT baselines, the value cache;
- `lm`: the text interface the search calls (`EngineLM` over the generation engine, `FunctionLM`);
- `tasks`: the Task interface and JSONL template tasks; `game24`: the Game of 24;
- `tree`: the saved trees and their HTML page; `traces`: solver-made and ToT-found training records;
- `run`: one method over many puzzles, written to a directory (what `vishwam tot` calls).

Knows nothing of generation internals: every model call goes through `vishwam_core.chat`.
"""
