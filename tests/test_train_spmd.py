"""SPMD on 8 fake CPU devices (in subprocesses: the device count is fixed when jax starts): every mesh
gives the single-device losses, parameters land where the rules table says, and a checkpoint written
on one mesh resumes on another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MESHES = ["data=8", "fsdp=8", "data=2,tensor=4"]


def spmd_run(tmp_path: Path, devices: int, run_dir: str, *meshes: str) -> dict:
    out = tmp_path / f"spmd{devices}.json"
    cache = ROOT / ".pytest_cache" / "jax_cache"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "spmd_check.py"), str(out), run_dir, *meshes],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spmd")
    single = spmd_run(tmp, 1, "-", "data=1")
    multi = spmd_run(tmp, 8, str(tmp / "run"), *MESHES)
    assert single["devices"] == 1 and multi["devices"] == 8
    return single, multi


@pytest.mark.parametrize("mesh", MESHES)
def test_every_mesh_gives_the_single_device_losses(runs, mesh):
    single, multi = runs
    want = single["data=1"]["losses"]
    got = multi[mesh]["losses"]
    assert len(got) == 5
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) <= 1e-5 * abs(w), (mesh, got, want)


# One device's shard of each parameter of the `test` preset (vocab 256, d 64, q 64, kv 32, ffn 128,
# 2 layers), worked out by hand from LOGICAL_AXIS_RULES: embed -> fsdp, heads/mlp/vocab -> tensor.
EXPECTED_SHARDS = {
    "data=8": {  # pure data parallelism: every parameter whole on every device
        ("embed",): [256, 64],
        ("lm_head",): [64, 256],
        ("blocks", "wq"): [2, 64, 64],
        ("blocks", "w_down"): [2, 128, 64],
        ("blocks", "attn_norm"): [2, 64],
    },
    "fsdp=8": {  # the model dimension split 8 ways
        ("embed",): [256, 8],
        ("lm_head",): [8, 256],
        ("blocks", "wq"): [2, 8, 64],
        ("blocks", "wk"): [2, 8, 32],
        ("blocks", "wo"): [2, 64, 8],
        ("blocks", "w_gate"): [2, 8, 128],
        ("blocks", "w_down"): [2, 128, 8],
        ("blocks", "attn_norm"): [2, 64],
        ("final_norm",): [64],
    },
    "data=2,tensor=4": {  # heads, mlp and vocab split 4 ways (Megatron column/row)
        ("embed",): [64, 64],
        ("lm_head",): [64, 64],
        ("blocks", "wq"): [2, 64, 16],
        ("blocks", "wk"): [2, 64, 8],
        ("blocks", "wv"): [2, 64, 8],
        ("blocks", "wo"): [2, 16, 64],
        ("blocks", "w_gate"): [2, 64, 32],
        ("blocks", "w_up"): [2, 64, 32],
        ("blocks", "w_down"): [2, 32, 64],
        ("blocks", "mlp_norm"): [2, 64],
        ("final_norm",): [64],
    },
}
EXPECTED_SPECS = {
    ("embed",): "P('tensor', 'fsdp')",
    ("blocks", "wq"): "P(None, 'fsdp', 'tensor')",
    ("blocks", "wo"): "P(None, 'tensor', 'fsdp')",
    ("blocks", "attn_norm"): "P(None, None)",
}


def _at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@pytest.mark.parametrize("mesh", MESHES)
def test_parameter_shardings_follow_the_rules_table(runs, mesh):
    _, multi = runs
    params, mu = multi[mesh]["params"], multi[mesh]["mu"]
    for path, shape in EXPECTED_SHARDS[mesh].items():
        assert _at(params, path)["shard_shape"] == shape, (mesh, path)
    for path, spec in EXPECTED_SPECS.items():
        assert _at(params, path)["spec"] == spec, (mesh, path)
    assert mu == params  # Adam's moments live where their parameters do, after 5 donated steps


def test_a_checkpoint_from_one_mesh_resumes_on_another(runs):
    single, multi = runs
    resumed = multi["resumed"]
    assert resumed["mesh"] == {"data": 2, "fsdp": 1, "tensor": 4}  # written on data=8
    want = single["data=1"]["losses"]
    assert len(resumed["losses"]) == 5
    for g, w in zip(resumed["losses"], want, strict=True):
        assert abs(g - w) <= 1e-5 * abs(w), (resumed["losses"], want)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_hosts(spec: Path) -> list[str]:
    """Run tests/fake_shards.py SPEC as two jax.distributed processes of 4 CPU devices each; their
    stdouts (one JSON summary line per run)."""
    port = _free_port()
    procs = []
    for i in range(2):
        env = {
            **os.environ,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "fake_shards.py"), str(spec)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
        )
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


def test_two_hosts_reading_their_own_rows_train_and_resume_as_one_device(runs, tmp_path):
    """Two processes x 4 CPU devices joined by jax.distributed (gloo): each loads only its half of every
    global batch; 3 steps, then a resume (each process restoring its own loader state) to 5, equal
    the single-device run."""
    single, _ = runs
    run_dir = tmp_path / "run"

    def flags(steps: int) -> dict:
        return {
            "model": {"name": "test"},
            "data": {"path": "fake", "batch_size": 8},
            "optim": {"schedule": "constant"},
            "out": str(run_dir),
            "steps": steps,
            "mesh": {"spec": "data=2,tensor=4"},
            "checkpoint": {"async_save": False},
        }

    spec = tmp_path / "spec.json"
    cache = str(ROOT / ".pytest_cache" / "jax_cache")
    spec.write_text(
        json.dumps({"flags": flags(3), "cache": cache, "then": [{"flags": flags(5), "resume": True}]})
    )
    # Per host: the summaries of the 3-step run and of its resume, the last two stdout lines.
    summaries = [[json.loads(line) for line in out.strip().splitlines()[-2:]] for out in _two_hosts(spec)]
    assert [s[0]["devices"] for s in summaries] == [8, 8]
    assert [(s[0]["step"], s[1]["step"]) for s in summaries] == [(3, 5), (3, 5)]
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    want = single["data=1"]["losses"]
    assert len(losses) == 5
    for g, w in zip(losses, want, strict=True):
        assert abs(g - w) <= 1e-5 * abs(w), (losses, want)
