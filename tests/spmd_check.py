"""Subprocess half of tests/test_train_spmd.py: train the `test` preset on each mesh given, on however
many (fake) devices XLA_FLAGS provides, and write per mesh the losses and every parameter's sharding
as the arrays report it (spec and the shape of one device's shard). With RUN_DIR, also run `train()`
for 3 steps on the first mesh and resume it to 5 steps on the last one (orbax reshards on restore).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/spmd_check.py OUT.json RUN_DIR|- MESH...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = 5


def flags(spec: str, steps: int, out: str) -> dict:
    # A constant schedule, so a 3-step run resumed to 5 steps follows the 5-step run exactly.
    return {
        "model": {"name": "test"},
        "data": {"path": "fake", "batch_size": 8},
        "optim": {"schedule": "constant"},
        "out": out,
        "steps": steps,
        "mesh": {"spec": spec},
        "checkpoint": {"async_save": False},
    }


def main(out: str, run_dir: str, meshes: list[str]) -> None:
    import jax

    from tests.fake_shards import markov_source
    from vishwam_core.config import ModelConfig
    from vishwam_core.sharding import make_mesh
    from vishwam_core.train import Trainer, resolve_run_config

    source = markov_source()
    result = {"devices": jax.device_count()}
    for spec in meshes:
        cfg = resolve_run_config(flags(spec, STEPS, "unused"))
        mesh = make_mesh(spec)
        with jax.set_mesh(mesh):
            tr = Trainer(ModelConfig.from_name("test"), cfg, mesh, STEPS, 32)
            state = tr.init_state()
            batches = iter(
                source.loader(
                    "train", batch_size=8, seed=0, process_index=0, process_count=1, prefetch=0, state=None
                )
            )
            losses = []
            for _ in range(STEPS):
                state, m = tr.step_fn(state, tr.to_global(next(batches)))
                losses.append(float(m["loss"]))
        mu = state["opt_state"][1][0].mu  # clip_by_global_norm, then adamw's ScaleByAdamState

        def describe(x):
            return {"spec": str(x.sharding.spec), "shard_shape": list(x.addressable_shards[0].data.shape)}

        result[spec] = {
            "losses": losses,
            "params": jax.tree.map(describe, state["params"]),
            "mu": jax.tree.map(describe, mu),
        }
    if run_dir != "-":
        from vishwam_core.train import read_metrics, train

        train(resolve_run_config(flags(meshes[0], 3, run_dir)), source=source, handle_signals=False)
        resumed = resolve_run_config(flags(meshes[-1], STEPS, run_dir))
        summary = train(resumed, source=source, resume=True, handle_signals=False)
        result["resumed"] = {
            "mesh": summary["mesh"],
            "losses": [r["loss"] for r in read_metrics(run_dir) if "loss" in r],
        }
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
