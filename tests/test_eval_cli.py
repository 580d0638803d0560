"""`vishwam eval` and `vishwam convert tasks` from the command line: the report card across several
checkpoints, the files it writes, output modes, and one sentence (exit 1) for each kind of bad input."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIGBENCH = Path(__file__).parent / "data" / "bigbench"


def vishwam(*args, env=None):
    base = {**os.environ, "VISHWAM_CACHE_DIR": str(ROOT / ".pytest_cache" / "vishwam_cache")}
    return subprocess.run(
        [sys.executable, "-m", "vishwam_cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=ROOT,
    )


def one_sentence_failure(proc, pattern: str) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs")
    for src, name in ((BIGBENCH / "date_understanding", "mc"), (BIGBENCH / "object_counting", "gen")):
        proc = vishwam("convert", "tasks", src, "--out", root / name, "--max-gen-toks", "8", "--json")
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, smollm2_tokenizer):
    """A random 2-layer model that shares SmolLM2's tokenizer: a second column for the report card."""
    from vishwam_core.checkpoint import save_model
    from vishwam_core.config import ModelConfig
    from vishwam_core.model import init_model

    cfg = ModelConfig.from_name("test").replace(
        vocab_size=smollm2_tokenizer.vocab_size, max_seq_len=1024, name="tiny"
    )
    out = tmp_path_factory.mktemp("ckpt") / "tiny-random"
    save_model(out, init_model(cfg, seed=3), tokenizer=smollm2_tokenizer)
    return out


def test_convert_tasks_cli(packs, tmp_path):
    summary = json.loads((packs / "mc" / "vishwam.json").read_text())
    assert summary["tasks"] == [
        {"task": "date_understanding", "output_type": "multiple_choice", "documents": 369}
    ]
    assert summary["command"].startswith("vishwam convert tasks")
    human = vishwam("convert", "tasks", BIGBENCH / "date_understanding", "--out", tmp_path / "p")
    assert human.returncode == 0 and "date_understanding" in human.stdout and "369" in human.stdout
    quiet = vishwam("convert", "tasks", BIGBENCH / "date_understanding", "--out", tmp_path / "q", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": \n')
    one_sentence_failure(
        vishwam("convert", "tasks", bad, "--out", tmp_path / "b"), r"broken.jsonl line 2: not valid JSON"
    )


def test_report_card_across_two_checkpoints(packs, smollm2_dir, tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    text = tmp_path / "notes.txt"
    text.write_text("Once upon a time, a small model learned to count to ten. " * 8)
    proc = vishwam(
        "eval", smollm2_dir, tiny_checkpoint,
        "--tasks", "date_understanding,object_counting",
        "--include-path", packs / "mc", "--include-path", packs / "gen",
        "--limit", "6", "--perplexity", text, "--context", "64", "--out", out, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    given = Path(smollm2_dir)  # a directory called model takes its parent's name in front
    names = [f"{given.parent.name}-model" if given.name == "model" else given.name, "tiny-random"]
    assert report["checkpoints"] == names
    rows = {r["task"]: r for r in report["rows"]}
    assert set(rows) == {"date_understanding", "object_counting"}

    for name in names:
        results = json.loads((out / name / "results.json").read_text())  # lm-eval's own results document
        assert {"results", "configs", "versions", "n-samples", "lm_eval_version"} <= set(results)
        assert results["n-samples"]["date_understanding"]["effective"] == 6
        table = pq.read_table(out / name / "samples" / "date_understanding.parquet").to_pylist()
        assert len(table) == 6
        assert all(
            len(r["loglikelihoods"]) == len(r["choices"]) == len(json.loads(r["doc"])["choices"])
            for r in table
        )
        assert all(r["correct"] == float(r["response"] == r["choices"][int(r["target"])]) for r in table)
        acc = results["results"]["date_understanding"]["acc,none"]
        assert acc == sum(r["correct"] for r in table) / 6
        cell = rows["date_understanding"]["cells"][name]
        chance = sum(1 / len(r["choices"]) for r in table) / 6
        assert rows["date_understanding"]["chance"] == pytest.approx(chance)
        assert cell["value"] == acc and cell["centred"] == pytest.approx((acc - chance) / (1 - chance))
        assert cell["stderr"] == results["results"]["date_understanding"]["acc_stderr,none"]
        gen = pq.read_table(out / name / "samples" / "object_counting.parquet").to_pylist()
        assert len(gen) == 6 and all(isinstance(r["response"], str) for r in gen)
        ppl = json.loads((out / name / "perplexity.json").read_text())[str(text)]
        assert ppl["tokens"] > 64 and math.isfinite(ppl["bits_per_byte"])
    # The random model is far worse at predicting text than the real one.
    perplexity = report["perplexity"][0]["cells"]
    assert perplexity["tiny-random"]["bits_per_byte"] > 2 * perplexity[names[0]]["bits_per_byte"]

    markdown = (out / "report.md").read_text()
    assert markdown == report["markdown"]
    assert f"| task | metric | chance | {names[0]} | tiny-random |" in markdown
    assert "| date_understanding | acc |" in markdown and "centred" in markdown and "mean centred" in markdown
    assert "bits/byte" in markdown
    manifest = json.loads((out / "vishwam.json").read_text())
    assert manifest["command"].startswith("vishwam eval") and manifest["tasks"] == [
        "date_understanding",
        "object_counting",
    ]
    assert [c["name"] for c in manifest["checkpoints"]] == names
    assert manifest["checkpoints"][1]["lineage"]["config"]["name"] == "tiny"


def test_human_and_quiet_output(packs, tiny_checkpoint, tmp_path):
    args = [
        "eval",
        tiny_checkpoint,
        "--tasks",
        "date_understanding",
        "--include-path",
        packs / "mc",
        "--limit",
        "2",
    ]
    human = vishwam(*args, "--out", tmp_path / "a")
    assert human.returncode == 0, human.stderr
    assert (
        "Report card" in human.stdout and "date_understanding" in human.stdout and "centred" in human.stdout
    )
    assert "Loading" in human.stderr and "Report card" not in human.stderr
    quiet = vishwam(*args, "--out", tmp_path / "b", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    assert (tmp_path / "b" / "report.md").exists()


def test_help_imports_neither_jax_nor_lm_eval():
    for command in (["eval", "--help"], ["convert", "tasks", "--help"]):
        code = (
            f"import sys; sys.argv = ['vishwam', *{command!r}]\n"
            "from vishwam_cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert not {'jax', 'lm_eval', 'torch'} & set(sys.modules), 'help imported a heavy module'\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert "--tasks" in proc.stdout or "--out" in proc.stdout


# ---- bad input: one sentence, exit 1 ----------------------------------------------------------
def test_unknown_task_suggests_close_names(packs, tiny_checkpoint, tmp_path):
    proc = vishwam(
        "eval",
        tiny_checkpoint,
        "--tasks",
        "date_understandin",
        "--include-path",
        packs / "mc",
        "--out",
        tmp_path / "o",
    )
    one_sentence_failure(proc, r"Unknown task 'date_understandin' \(did you mean date_understanding")


def test_dataset_unreachable_offline(tiny_checkpoint, tmp_path):
    env = {"HF_HOME": str(tmp_path / "empty_hf_home"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = vishwam("eval", tiny_checkpoint, "--tasks", "arc_easy", "--out", tmp_path / "o", env=env)
    line = one_sentence_failure(
        proc, r"Task 'arc_easy' needs the dataset 'allenai/ai2_arc' \(config ARC-Easy\)"
    )
    assert "vishwam convert tasks" in line and "--include-path" in line
    assert not (tmp_path / "o").exists()  # nothing written, no model loaded


def test_malformed_task_file_names_the_line(packs, tiny_checkpoint, tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "mine.yaml").write_text(
        (packs / "mc" / "date_understanding.yaml")
        .read_text()
        .replace("task: date_understanding", "task: mine")
    )
    (pack / "broken.yaml").write_text(
        'task: broken\ndataset_path: json\ndoc_to_text: "unclosed\nmetric_list: []\n'
    )
    proc = vishwam(
        "eval", tiny_checkpoint, "--tasks", "mine", "--include-path", pack, "--out", tmp_path / "o"
    )
    one_sentence_failure(proc, r"broken.yaml line \d+: not valid YAML")
    (pack / "broken.yaml").unlink()
    data = pack / "mine.jsonl"
    lines = (packs / "mc" / "date_understanding.jsonl").read_text().splitlines()
    data.write_text(
        "\n".join(lines[:3] + ['{"input": "Q: ?", "choices": ["a"], "answer": 0'] + lines[3:5]) + "\n"
    )
    (pack / "mine.yaml").write_text(
        (pack / "mine.yaml").read_text().replace(str(packs / "mc" / "date_understanding.jsonl"), str(data))
    )
    proc = vishwam(
        "eval", tiny_checkpoint, "--tasks", "mine", "--include-path", pack, "--out", tmp_path / "o"
    )
    one_sentence_failure(proc, r"mine.jsonl line 4: not valid JSON")


def test_checkpoint_without_tokenizer(tiny_checkpoint, packs, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((tiny_checkpoint / f).read_bytes())
    proc = vishwam(
        "eval",
        tiny_checkpoint,
        bare,
        "--tasks",
        "date_understanding",
        "--include-path",
        packs / "mc",
        "--out",
        tmp_path / "o",
    )
    one_sentence_failure(
        proc, rf"Checkpoint {re.escape(str(bare))} has no tokenizer.json; copy in the tokenizer"
    )
    one_sentence_failure(
        vishwam("eval", tmp_path / "nope", "--tasks", "x"), r"Checkpoint .*nope does not exist"
    )
    one_sentence_failure(vishwam("eval", tiny_checkpoint), r"Nothing to evaluate")
    one_sentence_failure(
        vishwam("eval", tiny_checkpoint, "--perplexity", tmp_path / "missing.txt"),
        r"missing.txt does not exist",
    )


def test_registered_as_vishwam_in_lm_eval(tiny_checkpoint, packs):
    """lm-eval builds the backend itself from a model_args string, as its own CLI would."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import vishwam_core.evaluate.backend  # noqa: F401  (registers the model name)

    manager = TaskManager(include_path=str(packs / "mc"), include_defaults=False)
    results = simple_evaluate(
        model="vishwam",
        model_args=f"pretrained={tiny_checkpoint},max_length=512",
        tasks=["date_understanding"],
        task_manager=manager,
        limit=3,
        batch_size=8,
        device="cpu",
    )
    assert results["config"]["model"] == "vishwam"
    assert results["n-samples"]["date_understanding"]["effective"] == 3
    lls = [r[0][0] for s in results["samples"]["date_understanding"] for r in s["resps"]]
    assert len(lls) == 18 and all(math.isfinite(x) and x < 0 for x in lls)
