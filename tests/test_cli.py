"""The CLI frame: help, version, output modes, and one clear sentence for every bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def vishwam(*args, env=None, check_rc=None):
    proc = subprocess.run(
        [sys.executable, "-m", "vishwam_cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.stdout, proc.stderr)
    return proc


def registered_commands() -> set[str]:
    from typer.main import get_command

    from vishwam_cli.main import app

    return set(get_command(app).commands)


def test_help_lists_the_commands_and_does_not_import_jax():
    code = (
        "import sys; sys.argv=['vishwam', '--help']\n"
        "from vishwam_cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'jax' not in sys.modules and 'flax' not in sys.modules, 'help imported jax'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for name in registered_commands():
        assert name in proc.stdout


def test_readme_lists_exactly_the_registered_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- commands -->")[1].split("<!-- /commands -->")[0]
    listed = set(re.findall(r"^\| `vishwam (\w+)", block, flags=re.M))
    assert listed == registered_commands()


def test_every_leaf_command_accepts_json_and_quiet():
    from typer.main import get_command

    from vishwam_cli.main import app

    def leaves(cmd, path=()):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from leaves(sub, (*path, name))
        else:
            yield path, cmd

    found = list(leaves(get_command(app)))
    assert found
    for path, cmd in found:
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {"--json", "--quiet"} <= opts, path


def test_version():
    from vishwam_core import __version__

    assert vishwam("--version", check_rc=0).stdout.strip() == f"vishwam {__version__}"


def test_usage_error_exits_2():
    assert vishwam("convert", "model").returncode == 2
    assert vishwam("no-such-command").returncode == 2


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(
        tf.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2
        )
    )
    path = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(path)
    return path


def test_convert_model_json_summary(hf_dir, tmp_path):
    proc = vishwam("convert", "model", hf_dir, tmp_path / "out", "--json", check_rc=0)
    summary = json.loads(proc.stdout)
    assert summary["architecture"]["model_type"] == "llama"
    assert summary["parameters"] == 64 * 32 * 2 + 4 * 32 * 32 + 3 * 32 * 48 + 3 * 32
    assert {f["name"] for f in summary["files"]} >= {"config.json", "model.safetensors", "vishwam.json"}
    quiet = vishwam("convert", "model", hf_dir, tmp_path / "out2", "--quiet", check_rc=0)
    assert quiet.stdout == "" and quiet.stderr == ""


def _assert_one_sentence_failure(proc, out: Path, pattern: str):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temp dir left behind"


def test_missing_source(tmp_path):
    _assert_one_sentence_failure(
        vishwam("convert", "model", tmp_path / "nope.gguf", tmp_path / "out"),
        tmp_path / "out",
        "does not exist",
    )


def test_truncated_gguf(smollm2_gguf, tmp_path):
    bad = tmp_path / "truncated.gguf"
    with open(smollm2_gguf, "rb") as f:
        bad.write_bytes(f.read(40_000_000))
    _assert_one_sentence_failure(
        vishwam("convert", "model", bad, tmp_path / "out"), tmp_path / "out", "truncated"
    )


def test_corrupt_gguf(smollm2_gguf, tmp_path):
    with open(smollm2_gguf, "rb") as f:
        head = bytearray(f.read(4096))
    head[8:24] = b"\xff" * 16  # tensor and key counts become absurd
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(bytes(head))
    _assert_one_sentence_failure(
        vishwam("convert", "model", bad, tmp_path / "out"), tmp_path / "out", "not a readable GGUF"
    )
    not_gguf = tmp_path / "random.gguf"
    not_gguf.write_bytes(os.urandom(1000))
    _assert_one_sentence_failure(
        vishwam("convert", "model", not_gguf, tmp_path / "out"), tmp_path / "out", "neither a GGUF file"
    )


def test_safetensors_with_a_wrong_shape(hf_dir, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    tensors = load_file(str(bad / "model.safetensors"))
    tensors["model.layers.0.mlp.up_proj.weight"] = tensors["model.layers.0.mlp.up_proj.weight"][:40]
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    _assert_one_sentence_failure(
        vishwam("convert", "model", bad, tmp_path / "out"),
        tmp_path / "out",
        r"up_proj.weight has shape \(40, 32\) but the config needs \(48, 32\)",
    )


def test_truncated_safetensors(hf_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    _assert_one_sentence_failure(
        vishwam("convert", "model", bad, tmp_path / "out"),
        tmp_path / "out",
        "not a readable safetensors file",
    )


def test_unsupported_architecture(tmp_path):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(
        json.dumps(
            {
                "model_type": "gpt2",
                "architectures": ["GPT2LMHeadModel"],
                "n_layer": 2,
                "n_embd": 32,
                "n_head": 2,
                "vocab_size": 64,
            }
        )
    )
    _assert_one_sentence_failure(
        vishwam("convert", "model", gpt2, tmp_path / "out"),
        tmp_path / "out",
        "Unsupported architecture 'GPT2LMHeadModel'",
    )


def test_out_already_present_without_force(hf_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = vishwam("convert", "model", hf_dir, out)
    assert proc.returncode == 1 and "already exists; pass --force" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    vishwam("convert", "model", hf_dir, out, "--force", "--quiet", check_rc=0)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_debug_env_shows_the_traceback(tmp_path):
    proc = vishwam("convert", "model", tmp_path / "nope", tmp_path / "out", env={"VISHWAM_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr
