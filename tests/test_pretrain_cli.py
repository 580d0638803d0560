"""`vishwam pretrain` as users run it: flags map onto the run config, and bad input is one sentence."""

from __future__ import annotations

import inspect
import re

import pytest

from tests.test_cli import vishwam
from vishwam_cli.pretrain import FLAG_PATHS, overrides_from_flags, pretrain
from vishwam_core.train import describe_config, resolve_run_config


def test_every_flag_maps_to_a_described_config_field():
    options = set(inspect.signature(pretrain).parameters) - {"config", "resume", "force", "json_", "quiet"}
    assert options == set(FLAG_PATHS)
    described = describe_config()
    for path in FLAG_PATHS.values():
        assert ".".join(path) in described


def test_flags_become_overrides_and_win_over_the_config_file(tmp_path):
    file = tmp_path / "run.json"
    file.write_text('{"optim": {"lr": 0.5, "b1": 0.8}, "data": {"batch_size": 4}}')
    values = dict.fromkeys(FLAG_PATHS)
    values.update(
        data=tmp_path / "shards",
        model="test",
        out=tmp_path / "run",
        steps=7,
        lr=0.01,
        decay_exclude="norms, embeddings",
        grad_clip=0.0,
        eval_every=0,
        mesh="data=1",
        save_every=3,
        async_save=False,
    )
    over = overrides_from_flags(values)
    assert over["data"] == {"path": str(tmp_path / "shards")}
    cfg = resolve_run_config(over, config_file=file)
    assert (cfg.optim.lr, cfg.optim.b1, cfg.data.batch_size) == (0.01, 0.8, 4)
    assert cfg.optim.decay_exclude == ["norms", "embeddings"] and cfg.optim.grad_clip is None
    assert cfg.eval_every is None
    assert (cfg.checkpoint.every_steps, cfg.checkpoint.async_save, cfg.steps) == (3, False, 7)


def _one_sentence(proc, pattern: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_dir(tmp_path):
    proc = vishwam(
        "pretrain", "--data", tmp_path / "nope", "--model", "test", "--out", tmp_path / "r", "--steps", 2
    )
    _one_sentence(proc, r"Data directory .*nope does not exist")


def test_mesh_whose_product_is_not_the_device_count(tmp_path):
    proc = vishwam(
        "pretrain",
        "--data",
        tmp_path,
        "--model",
        "test",
        "--out",
        tmp_path / "r",
        "--steps",
        2,
        "--mesh",
        "data=3",
    )
    _one_sentence(proc, r"Mesh 'data=3' has 3 slots but there are 1 devices")


def test_batch_not_divisible_by_data_times_fsdp(tmp_path):
    proc = vishwam(
        "pretrain",
        *("--data", tmp_path, "--model", "test", "--out", tmp_path / "r", "--steps", 2),
        *("--mesh", "data=2,fsdp=2", "--batch-size", 6),
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    _one_sentence(proc, r"--batch-size 6 is not divisible by data x fsdp = 4")


def test_out_dir_with_another_runs_checkpoints(tmp_path):
    (tmp_path / "r" / "checkpoints" / "step_3").mkdir(parents=True)
    proc = vishwam("pretrain", "--data", tmp_path, "--model", "test", "--out", tmp_path / "r", "--steps", 2)
    _one_sentence(proc, r"already holds a run's checkpoints \(latest step 3\); pass --resume .* or --force")


@pytest.mark.parametrize(
    "args, pattern",
    [
        (("--lr", "-1"), "lr must be positive"),
        (("--schedule", "steps"), "schedule must be one of"),
        (("--objective", "rlhf"), "objective must be one of"),
        (("--model", "gpt-9"), "neither a preset"),
        (("--tokens", "100"), "exactly one of --steps and --tokens"),
    ],
)
def test_bad_flags(tmp_path, args, pattern):
    base = {"--data": str(tmp_path), "--model": "test", "--out": str(tmp_path / "r"), "--steps": "2"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    proc = vishwam("pretrain", *[x for kv in base.items() for x in kv])
    _one_sentence(proc, pattern)
