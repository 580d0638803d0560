"""Exact resume: a run killed with SIGKILL at a random step, or stopped by SIGTERM, then `--resume`d,
ends bit-identical to an uninterrupted run (parameters and every loss in metrics.jsonl). Each run is a
subprocess (tests/fake_shards.py), as a real job would be."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 16


def _spec(tmp_path: Path, run_dir: Path, resume: bool = False) -> Path:
    spec = tmp_path / f"spec-{run_dir.name}-{int(resume)}.json"
    spec.write_text(
        json.dumps(
            {
                "flags": {
                    "model": {"name": "test"},
                    "data": {"path": "fake", "batch_size": 8},
                    "out": str(run_dir),
                    "steps": STEPS,
                    "eval_every": 5,
                    "checkpoint": {"every_steps": 1, "keep": 2},  # async saves, the default
                },
                "resume": resume,
                "cache": str(ROOT / ".pytest_cache" / "jax_cache"),
            }
        )
    )
    return spec


def _start(spec: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_shards.py"), str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def _stop_at(proc: subprocess.Popen, metrics: Path, step: int, sig: int) -> None:
    """Send `sig` once metrics.jsonl shows `step` (polling the file; no timing is asserted)."""
    while proc.poll() is None:
        if metrics.exists() and any(
            json.loads(line).get("step", 0) >= step and "loss" in line
            for line in metrics.read_text().splitlines()
            if line.endswith("}")
        ):
            proc.send_signal(sig)
            return
        time.sleep(0.01)


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("loss", r.get("val_loss"))) for r in records]


def _params(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    run_dir = tmp / "full"
    rc, out, err = _finish(_start(_spec(tmp, run_dir)))
    assert rc == 0, err[-3000:]
    return tmp, run_dir


def _assert_identical(a: Path, b: Path) -> None:
    assert _losses(a) == _losses(b)  # every train and val loss, bit for bit
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


def test_kill_9_at_a_random_step_then_resume_is_bit_identical(uninterrupted):
    tmp, full = uninterrupted
    kill_at = random.randint(3, STEPS - 5)
    run_dir = tmp / "killed"
    proc = _start(_spec(tmp, run_dir))
    _stop_at(proc, run_dir / "metrics.jsonl", kill_at, signal.SIGKILL)
    rc, _, err = _finish(proc)
    assert rc == -signal.SIGKILL, f"the run ended before the kill at step {kill_at}: {err[-2000:]}"
    saved = sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").iterdir() if p.name[5:].isdigit())
    assert saved and saved[-1] < STEPS and not (run_dir / "model").exists()
    rc, out, err = _finish(_start(_spec(tmp, run_dir, resume=True)))
    assert rc == 0, err[-3000:]
    assert f"Resumed {run_dir} from step {saved[-1]}." in err, (kill_at, err[-2000:])
    _assert_identical(run_dir, full)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes_identically(uninterrupted):
    tmp, full = uninterrupted
    run_dir = tmp / "term"
    proc = _start(_spec(tmp, run_dir))
    _stop_at(proc, run_dir / "metrics.jsonl", 4, signal.SIGTERM)
    rc, out, err = _finish(proc)
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "interrupted" and 4 <= summary["step"] < STEPS
    assert f"SIGTERM at step {summary['step']}: checkpoint saved" in err
    assert (run_dir / "checkpoints" / f"step_{summary['step']}").is_dir()
    rc, out, err = _finish(_start(_spec(tmp, run_dir, resume=True)))
    assert rc == 0, err[-3000:]
    assert f"from step {summary['step']}." in err
    _assert_identical(run_dir, full)
