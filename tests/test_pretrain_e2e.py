"""`vishwam pretrain` end to end on real shards written by `convert data` (a 512-token BPE trained by
`convert tokenizer`): the CLI's outputs, the real loader through checkpoints and resume, sft on chat
shards, and data that does not fit the model refused before training."""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import vishwam
from tests.test_pretrain_cli import _one_sentence
from vishwam_core.train import read_metrics, resolve_run_config, train

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def text_shards(bpe_dir, tmp_path_factory) -> Path:
    from vishwam_core.data import convert_data

    out = tmp_path_factory.mktemp("shards") / "email"
    convert_data(
        [str(STDLIB / "email")],
        bpe_dir,
        out,
        seq_len=32,
        val_fraction=0.25,
        include=["*.py"],
        max_chars=20_000,
    )
    splits = json.loads((out / "manifest.json").read_text())["splits"]
    assert splits["train"]["rows"] > 1000 and splits["val"]["rows"] > 100
    return out


@pytest.fixture(scope="module")
def chat_shards(bpe_dir, tmp_path_factory) -> Path:
    from vishwam_core.data import convert_data

    tmp = tmp_path_factory.mktemp("chat")
    rng = np.random.default_rng(0)
    with open(tmp / "chats.jsonl", "w") as f:
        for _ in range(120):
            a, b = (int(x) for x in rng.integers(0, 50, 2))
            messages = [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    out = tmp / "shards"
    convert_data([str(tmp / "chats.jsonl")], bpe_dir, out, seq_len=64, fmt="chat", val_fraction=0.2)
    return out


def _config(tmp_path: Path, **over) -> Path:
    """A run config file: the `test` preset widened to the 512-token vocabulary of the shards."""
    path = tmp_path / "run.json"
    cfg = {"model": {"name": "test", "overrides": {"vocab_size": 512}}, "data": {"batch_size": 8}}
    cfg.update(over)
    path.write_text(json.dumps(cfg))
    return path


def test_cli_trains_on_real_shards_and_prints_a_json_summary(text_shards, tmp_path):
    run_dir = tmp_path / "run"
    proc = vishwam(
        *("pretrain", "--data", text_shards, "--config", _config(tmp_path), "--out", run_dir),
        *("--steps", 6, "--eval-every", 3, "--json"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed" and summary["step"] == 6
    assert summary["val_ppl"] < summary["initial_val_ppl"]
    assert "Traceback" not in proc.stderr
    lineage = json.loads((run_dir / "model" / "vishwam.json").read_text())
    from vishwam_core.checkpoint import file_sha256

    assert lineage["data_manifest_hash"] == file_sha256(text_shards / "manifest.json")
    assert (run_dir / "model" / "tokenizer.json").read_text() == (text_shards / "tokenizer.json").read_text()
    assert json.loads((run_dir / "model" / "config.json").read_text())["vocab_size"] == 512


def test_cli_human_output_prints_plain_progress_lines_off_a_tty(text_shards, tmp_path):
    proc = vishwam(
        *("pretrain", "--data", text_shards, "--config", _config(tmp_path), "--out", tmp_path / "run"),
        *("--steps", 3, "--eval-every", 0),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step: 3/3 loss " in proc.stderr  # the plain line (stderr is a pipe here)
    assert "train loss" in proc.stdout and "loss curve" in proc.stdout
    quiet = vishwam(
        *("pretrain", "--data", text_shards, "--config", _config(tmp_path), "--out", tmp_path / "run2"),
        *("--steps", 2, "--eval-every", 0, "--quiet"),
    )
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_the_real_loader_resumes_exactly_through_checkpoints(text_shards, tmp_path):
    def flags(out: Path, steps: int) -> dict:
        return {
            "model": {"name": "test", "overrides": {"vocab_size": 512}},
            "data": {"path": str(text_shards), "batch_size": 8},
            "optim": {"schedule": "constant"},
            "out": str(out),
            "steps": steps,
            "checkpoint": {"every_steps": 2},
        }

    train(resolve_run_config(flags(tmp_path / "full", 6)), handle_signals=False)
    train(resolve_run_config(flags(tmp_path / "cut", 3)), handle_signals=False)
    train(resolve_run_config(flags(tmp_path / "cut", 6)), resume=True, handle_signals=False)
    full = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "full")]
    cut = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "cut")]
    assert cut == full and len(full) == 6

    from safetensors.numpy import load_file

    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("objective", ["sft", "lm"])
def test_chat_shards_train_with_either_objective(chat_shards, tmp_path, objective):
    summary = train(
        resolve_run_config(
            {
                "model": {"name": "test", "overrides": {"vocab_size": 512}},
                "data": {"path": str(chat_shards), "batch_size": 8, "objective": objective},
                "out": str(tmp_path / "run"),
                "steps": 4,
                "eval_every": 4,
            }
        ),
        handle_signals=False,
    )
    assert summary["status"] == "completed" and np.isfinite(summary["val_loss"])
    assert summary["val_loss"] < np.log(512)


def test_shards_whose_vocabulary_exceeds_the_model_are_refused(text_shards, tmp_path):
    proc = vishwam(
        "pretrain", "--data", text_shards, "--model", "test", "--out", tmp_path / "r", "--steps", 2
    )
    _one_sentence(proc, r"The shards' tokenizer has 512 tokens but the model's vocab_size is 256")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_shards_from_another_tokenizer_than_init_from_are_refused(text_shards, smollm2_dir, tmp_path):
    proc = vishwam(
        "pretrain", "--data", text_shards, "--init-from", smollm2_dir, "--out", tmp_path / "r", "--steps", 2
    )
    _one_sentence(proc, r"tokenized with a different tokenizer than .*'s; re-convert the data")


def test_not_a_shard_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = vishwam(
        "pretrain", "--data", tmp_path / "empty", "--model", "test", "--out", tmp_path / "r", "--steps", 2
    )
    _one_sentence(proc, r"has no manifest.json")


@pytest.fixture(autouse=True)
def _peak(monkeypatch):
    # MFU needs a CPU peak; give one instead of measuring it in every subprocess.
    monkeypatch.setenv("VISHWAM_CPU_PEAK_FLOPS", os.environ.get("VISHWAM_CPU_PEAK_FLOPS", "3.4e11"))
