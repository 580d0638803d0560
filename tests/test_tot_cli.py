"""`vishwam tot` end to end on a tiny random model (plumbing, files, counting against the engine, bad
input in one sentence) and SmolLM2-135M-Instruct through the same harness with the paper's prompts."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def vishwam(*args):
    return subprocess.run(
        [sys.executable, "-m", "vishwam_cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def byte_tokenizer():
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    from vishwam_core.tokenizer import Tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Backend(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken("<eos>", special=True)])
    return Tokenizer(backend, {"eos_token": "<eos>"})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random 'test'-preset model over a byte tokenizer, with a 512-token context."""
    from flax import nnx

    from vishwam_core.checkpoint import save_model
    from vishwam_core.config import ModelConfig
    from vishwam_core.model import Transformer

    cfg = ModelConfig.from_name("test").replace(
        vocab_size=257, max_seq_len=512, bos_token_id=None, eos_token_id=256
    )
    out = tmp_path_factory.mktemp("tiny") / "model"
    save_model(out, Transformer(cfg, rngs=nnx.Rngs(0)), byte_tokenizer())
    return out


def test_engine_lm_batches_by_sampling_settings_and_counts_what_the_engine_did(tiny_dir):
    from vishwam_core.checkpoint import load_model, load_tokenizer
    from vishwam_core.generate import Engine
    from vishwam_core.tot.lm import EngineLM, Request

    engine = Engine(load_model(tiny_dir))
    results = []
    real = engine.generate

    def spy(prompts, params, on_token=None):
        r = real(prompts, params, on_token=on_token)
        results.append((len(prompts), r))
        return r

    engine.generate = spy
    tok = load_tokenizer(tiny_dir)
    lm = EngineLM(engine, tok, chat=False, seed=3, max_batch=2)
    prompts = ["Numbers: 4 5 6 10\n", "Numbers: 1 1 4 6\nSteps:\n", "x"]
    replies = lm.complete(
        [
            Request(prompts[0], n=3, temperature=0.7, max_tokens=6),
            Request(prompts[1], n=4, temperature=0.0, max_tokens=6),
            Request(prompts[2], n=2, temperature=0.7, max_tokens=6),
        ]
    )
    assert [r.lm_calls for r in replies] == [3, 1, 2]  # greedy n=4 is generated once
    assert len(set(replies[1].texts)) == 1 and len(replies[1].texts) == 4
    # sampled group: 5 rows in chunks of max_batch=2 -> 3 calls; greedy group: 1 call
    assert lm.usage.engine_calls == 4 == len(results)
    lengths = [len(tok.encode(p)) for p in prompts]
    assert [r.prompt_tokens for r in replies] == [3 * lengths[0], lengths[1], 2 * lengths[2]]
    assert lm.usage.prompt_tokens == sum(r.prefill_tokens for _, r in results)
    assert lm.usage.completion_tokens == sum(r.decode_tokens + rows for rows, r in results)
    assert lm.usage.lm_calls == sum(rows for rows, _ in results) == 6
    # a prompt grown past the context mid-run gets empty replies, counted, and costs nothing
    [long] = lm.complete([Request("9 " * 300, n=2, temperature=0.7, max_tokens=6)])
    assert long.texts == ["", ""] and long.lm_calls == 0 and lm.usage.too_long == 1
    assert len(results) == 4


def test_tot_cli_runs_writes_and_shows(tiny_dir, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "run"
    proc = vishwam(
        "tot", tiny_dir, "--range", "900:902", "--method", "bfs", "--prompts", "compact", "--breadth", "2",
        "--n-evaluate", "1", "--out", out, "--export-traces", tmp_path / "shards", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["puzzles"] == 2 and s["method"] == "bfs" and s["task"]["name"] == "game24"
    assert s["usage"]["lm_calls"] >= 2 and s["mean_lm_calls"] == s["usage"]["lm_calls"] / 2
    assert json.loads((out / "summary.json").read_text())["usage"] == s["usage"]
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in table] == ["901", "902"] and [r["input"] for r in table] == [
        "4 5 6 10",
        "1 2 4 7",
    ]
    assert sum(r["lm_calls"] for r in table) == s["usage"]["lm_calls"]
    # a random model finds no verified path: the records file is empty and no shards are written
    assert s["traces"] == 0 and (out / "traces.jsonl").read_text() == ""
    assert not (tmp_path / "shards").exists()
    tree = out / table[0]["tree"]
    shown = vishwam("tot", "show", tree, "--html", tmp_path / "t.html")
    assert shown.returncode == 0, shown.stderr
    assert "4 5 6 10" in shown.stdout and "nodes" in shown.stdout
    page = (tmp_path / "t.html").read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "4 5 6 10" in page
    as_json = json.loads(vishwam("tot", "show", tree, "--json").stdout)
    assert as_json["input"] == "4 5 6 10" and as_json["nodes"][0]["parent"] is None
    assert vishwam("tot", "show", tree, "--quiet").stdout == ""
    again = vishwam("tot", tiny_dir, "--range", "900:901", "--out", out, "--prompts", "compact")
    _one_sentence(again, "already exists; pass --force")


def test_cot_best_of_k_counts_k_calls_per_puzzle(tiny_dir):
    proc = vishwam(
        "tot",
        tiny_dir,
        "--range",
        "0:3",
        "--method",
        "cot",
        "--samples",
        "4",
        "--prompts",
        "compact",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["mean_lm_calls"] == 4 and s["usage"]["lm_calls"] == 12


def _one_sentence(proc, pattern):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_input_is_one_sentence(tiny_dir, tmp_path):
    _one_sentence(
        vishwam("tot", tiny_dir, "--task", "gam24"), r"Unknown task 'gam24' \(did you mean game24\?\)"
    )
    bad = tmp_path / "puzzles.txt"
    bad.write_text("4 5 6 10\n4 5 six 10\n")
    _one_sentence(
        vishwam("tot", tiny_dir, "--puzzles", bad),
        r"puzzles.txt:2: a puzzle is four whole numbers like '4 5 6 10'",
    )
    _one_sentence(
        vishwam("tot", tiny_dir, "--range", "0:1", "--prompts", "paper"),
        r"The model's context of 512 tokens is too short for the game24 propose prompts \(\d+ prompt tokens \+ 200 new",
    )
    _one_sentence(vishwam("tot", tiny_dir, "--range", "5:2"), r"--range 5:2 is outside the 1362 puzzles")
    _one_sentence(vishwam("tot", "show", tmp_path / "none.json"), r"does not exist")


def test_traces_command_holds_out_the_test_puzzles(tmp_path):
    out = tmp_path / "traces.jsonl"
    proc = vishwam("tot", "traces", out, "--hold-out", "900:1000", "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["puzzles"] == 1246 and s["held_out"] == 100 and s["skipped"] == 16
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == s["records"] and set(s["kinds"]) == {"cot", "io", "propose", "value", "judge"}
    from vishwam_core.tot.game24 import read_puzzles

    test = {p.input for p in read_puzzles()[900:1000]}
    assert not {r["puzzle"] for r in records} & test


@pytest.mark.slow
def test_smollm2_through_the_harness_with_paper_prompts(smollm2_model, smollm2_tokenizer):
    from vishwam_core.generate import Engine
    from vishwam_core.tot.game24 import Game24
    from vishwam_core.tot.lm import EngineLM
    from vishwam_core.tot.run import run_search
    from vishwam_core.tot.search import SearchConfig

    task = Game24("paper")
    lm = EngineLM(Engine(smollm2_model), smollm2_tokenizer, chat=True)
    [tree] = run_search(task, lm, task.puzzles(span="900:901"), SearchConfig(method="io"))
    prompt_ids = lm.encode(task.io_prompt("4 5 6 10"))
    assert smollm2_tokenizer.decode(prompt_ids).startswith("<|im_start|>")  # the chat template was used
    assert tree.usage["lm_calls"] == 1 and tree.usage["prompt_tokens"] == len(prompt_ids)
    leaf = tree.nodes[1]
    assert 0 < tree.usage["completion_tokens"] <= task.max_tokens["io"]
    assert leaf.correct == (
        tree.answer is not None and task.check(task.puzzles(span="900:901")[0], tree.answer)
    )
