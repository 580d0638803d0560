"""`vishwam convert data`, `convert tokenizer` and `convert inspect`: exact, deterministic shards from every
kind of source; masks for chat, instruct and preference data; one clear sentence for every bad input."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vishwam_core.data import chat_spans, convert_data, inspect_data
from vishwam_core.errors import VishwamError
from vishwam_core.shards import read_manifest, read_rows
from vishwam_core.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def vishwam(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "vishwam_cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=ROOT,
    )


def split_docs(directory, split: str, eos: int) -> list[list[int]]:
    """The documents of a concat-packed split: the token stream (padding cut) split after each EOS."""
    m = read_manifest(directory)
    info = m["splits"][split]
    if not info["rows"]:
        return []
    stream = read_rows(directory, split, 0, info["rows"])["input_ids"].reshape(-1)[: info["tokens"]]
    ends = np.flatnonzero(stream == eos) + 1
    assert ends[-1] == len(stream)
    return [d.tolist() for d in np.split(stream, ends[:-1])]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- the standard library, with SmolLM2's tokenizer -----------------------------------------------------
@pytest.fixture(scope="module")
def stdlib_shards(smollm2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stdlib")
    opts = {"max_tokens": 120_000, "on_error": "skip", "seq_len": 512, "shard_rows": 32, "val_fraction": 0.1}
    summaries = [convert_data([str(STDLIB)], smollm2_dir, out / name, **opts) for name in ("a", "b")]
    return out / "a", out / "b", summaries


def test_stdlib_rows_decode_to_exactly_the_kept_documents(stdlib_shards, smollm2_tokenizer):
    out, _, (summary, _) = stdlib_shards
    m = read_manifest(out)
    run = m["runs"][0]
    eos = smollm2_tokenizer.eos_id
    decoded = {s: [smollm2_tokenizer.decode(d) for d in split_docs(out, s, eos)] for s in ("train", "val")}
    # Every kept document, read straight from its file, comes back from the rows byte for byte (EOS
    # appended), in source order within its split.
    expected = [
        Path(s["path"]).read_text(encoding="utf-8") + "<|im_end|>" for s in run["sources"] if s["kept"]
    ]
    assert sorted(decoded["train"] + decoded["val"]) == sorted(expected)
    for split in ("train", "val"):
        mine = set(decoded[split])
        assert decoded[split] == [e for e in expected if e in mine]
    assert decoded["val"], "a 10% split of this sample holds some documents"
    assert summary["stopped_at_max_tokens"] and 120_000 <= run["tokens"] < 120_000 + max(
        s["tokens"] for s in run["sources"]
    )


def test_stdlib_manifest_counts_add_up(stdlib_shards, smollm2_dir):
    out, _, _ = stdlib_shards
    m = read_manifest(out)
    run = m["runs"][0]
    sources, splits = run["sources"], m["splits"]
    dropped = sum(f["dropped_documents"] for f in run["filters"])
    assert (
        run["documents"]["read"] == sum(s["documents"] for s in sources) == run["documents"]["kept"] + dropped
    )
    assert (
        run["documents"]["kept"]
        == sum(s["kept"] for s in sources)
        == sum(sp["documents"] for sp in splits.values())
    )
    assert run["tokens"] == sum(s["tokens"] for s in sources) == sum(sp["tokens"] for sp in splits.values())
    for sp in splits.values():
        assert sp["rows"] == sum(sh["rows"] for sh in sp["shards"])
        assert sp["tokens"] == sum(sh["tokens"] for sh in sp["shards"])
        assert sp["rows"] * m["row_len"] == sp["tokens"] + sp["padding_tokens"]
        assert sum(sp["length_histogram"]["documents"]) == sp["documents"]
        for sh in sp["shards"]:
            assert sum(sh["row_groups"]) == sh["rows"] <= 32
    assert m["seq_len"] == 512 and m["tokenizer"]["file"] == "tokenizer.json"
    from vishwam_core.checkpoint import file_sha256

    assert (
        m["tokenizer"]["sha256"]
        == file_sha256(smollm2_dir / "tokenizer.json")
        == file_sha256(out / "tokenizer.json")
    )
    for s in sources:
        assert s["sha256"] == file_sha256(s["path"]) and s["bytes"] == os.path.getsize(s["path"])
    assert "duplicate" in {f["name"] for f in run["filters"]} and run["command"]


def test_a_second_run_is_byte_identical(stdlib_shards):
    a, b, _ = stdlib_shards
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir()) and len(files) > 4
    for name in files:
        if name != "manifest.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name

    def stable(m):
        return {
            **m,
            "runs": [{k: v for k, v in r.items() if k not in ("created", "command")} for r in m["runs"]],
        }

    assert stable(read_manifest(a)) == stable(read_manifest(b))


def test_shards_are_read_by_polars_and_pyarrow_without_vishwam(stdlib_shards):
    import polars as pl
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    out, _, _ = stdlib_shards
    m = json.loads((out / "manifest.json").read_text())
    train = m["splits"]["train"]
    df = pl.read_parquet(str(out / "train-*.parquet"))
    assert df.schema == pl.Schema({"input_ids": pl.List(pl.Int32), "loss_mask": pl.List(pl.UInt8)})
    assert df.height == train["rows"]
    assert (df["input_ids"].list.len() == 513).all()
    assert df["loss_mask"].list.sum().sum() == train["tokens"]  # text: every non-padding token is a target
    table = ds.dataset(str(out), format="parquet", exclude_invalid_files=True).to_table()
    assert table.num_rows == train["rows"] + m["splits"]["val"]["rows"]
    first = pq.ParquetFile(out / train["shards"][0]["file"])
    assert first.metadata.num_row_groups == len(train["shards"][0]["row_groups"])
    assert first.metadata.row_group(0).column(0).compression == "ZSTD"
    assert str(first.schema_arrow.field("input_ids").type) == "list<element: int32>"


# ---- inputs ---------------------------------------------------------------------------------------
def test_every_input_kind_gives_the_same_documents(bpe_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [
        "first document\nwith two lines",
        "second: ünïcödé ✓ and digits 12345",
        'third, with "quotes", commas',
    ]
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", [{"body": d, "id": i} for i, d in enumerate(docs)])
    (src / "b.json").write_text(json.dumps([{"body": d} for d in docs]))
    import csv

    with open(src / "c.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "body"])
        w.writerows([[i, d] for i, d in enumerate(docs)])
    pq.write_table(pa.table({"body": docs, "n": [1, 2, 3]}), src / "d.parquet")
    with gzip.open(src / "e.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"body": d}) + "\n" for d in docs))
    tok = Tokenizer.from_dir(bpe_dir)
    for name in ("a.jsonl", "b.json", "c.csv", "d.parquet", "e.jsonl.gz"):
        out = tmp_path / name.replace(".", "_")
        convert_data(
            [str(src / name)], bpe_dir, out, text_field="body", seq_len=32, val_fraction=0, dedup=False
        )
        assert [tok.decode(d) for d in split_docs(out, "train", tok.eos_id)] == [
            d + "<|im_end|>" for d in docs
        ], name
    # text files, a directory walk and a glob
    for i, d in enumerate(docs):
        (src / f"t{i}.txt").write_text(d)
    for spec, kw in (
        (str(src), {}),
        (str(src / "t*.txt"), {}),
        (str(src), {"include": ["t*"], "exclude": ["t1*"]}),
    ):
        out = tmp_path / f"walk{len(list(tmp_path.iterdir()))}"
        convert_data([spec], bpe_dir, out, seq_len=32, val_fraction=0, **kw)
        want = [d + "<|im_end|>" for i, d in enumerate(docs) if not (kw and i == 1)]
        assert [tok.decode(d) for d in split_docs(out, "train", tok.eos_id)] == want, spec


def test_stdin(bpe_dir, tmp_path):
    out = tmp_path / "out"
    proc = vishwam(
        "convert",
        "data",
        "-",
        "-t",
        bpe_dir,
        "-o",
        out,
        "--val-fraction",
        "0",
        "--json",
        stdin="from stdin\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["documents"] == {"read": 1, "kept": 1}
    tok = Tokenizer.from_dir(bpe_dir)
    assert [tok.decode(d) for d in split_docs(out, "train", tok.eos_id)] == ["from stdin\n<|im_end|>"]
    records = "".join(json.dumps({"text": t}) + "\n" for t in ("one", "two"))
    proc = vishwam(
        "convert",
        "data",
        "-",
        "-t",
        bpe_dir,
        "-o",
        tmp_path / "o2",
        "--stdin-format",
        "jsonl",
        "--json",
        stdin=records,
    )
    assert json.loads(proc.stdout)["documents"]["kept"] == 2


def test_a_large_text_file_is_cut_at_line_boundaries(bpe_dir, tmp_path, monkeypatch):
    import vishwam_core.sources as sources

    monkeypatch.setattr(sources, "PIECE_BYTES", 100)
    text = "".join(f"line {i} {'x' * (i % 17)}\n" for i in range(60)) + "no newline at the end " * 10
    (tmp_path / "big.txt").write_text(text)
    out = tmp_path / "out"
    convert_data([str(tmp_path / "big.txt")], bpe_dir, out, seq_len=16, val_fraction=0, dedup=False)
    tok = Tokenizer.from_dir(bpe_dir)
    pieces = [tok.decode(d).removesuffix("<|im_end|>") for d in split_docs(out, "train", tok.eos_id)]
    assert "".join(pieces) == text and len(pieces) > 10
    assert all(len(p.encode()) <= 100 for p in pieces)
    assert all(p.endswith("\n") for p in pieces if "\n" in p)  # the newline-free tail is cut anywhere


def test_special_token_strings_in_text_stay_text(bpe_dir, tmp_path):
    (tmp_path / "a.txt").write_text("before <|im_end|> after <|im_start|>")
    out = tmp_path / "out"
    convert_data([str(tmp_path / "a.txt")], bpe_dir, out, seq_len=64, val_fraction=0)
    tok = Tokenizer.from_dir(bpe_dir)
    ids = read_rows(out, "train", 0, 1)["input_ids"][0]
    n = read_manifest(out)["splits"]["train"]["tokens"]
    assert list(ids[:n]).count(tok.eos_id) == 1 and ids[n - 1] == tok.eos_id and tok.bos_id not in ids[:n]
    assert tok.decode(ids[:n].tolist()) == "before <|im_end|> after <|im_start|><|im_end|>"


def test_filters_dedup_and_lengths_are_counted(bpe_dir, tmp_path):
    docs = ["same text", "same text", "", "   \n", "tiny", "a long enough document", "x" * 500]
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in docs])
    out = tmp_path / "out"
    s = convert_data([str(path)], bpe_dir, out, min_chars=5, max_chars=100, val_fraction=0)
    assert s["filters"] == {"empty": 2, "too_short": 1, "too_long": 1, "duplicate": 1}
    assert s["documents"] == {"read": 7, "kept": 2}
    tok = Tokenizer.from_dir(bpe_dir)
    assert [tok.decode(d) for d in split_docs(out, "train", tok.eos_id)] == [
        "same text<|im_end|>",
        "a long enough document<|im_end|>",
    ]
    s = convert_data([str(path)], bpe_dir, tmp_path / "o2", dedup=False, val_fraction=0)
    assert s["documents"]["kept"] == 5 and "duplicate" not in s["filters"]


def test_the_split_is_seeded_by_document_content_not_order(bpe_dir, tmp_path):
    docs = [f"doc number {i} " + "abc" * (i % 5) for i in range(300)]
    fwd = write_jsonl(tmp_path / "f.jsonl", [{"text": d} for d in docs])
    rev = write_jsonl(tmp_path / "r.jsonl", [{"text": d} for d in reversed(docs)])
    tok = Tokenizer.from_dir(bpe_dir)

    def val_set(path, seed, name):
        convert_data([str(path)], bpe_dir, tmp_path / name, seed=seed, val_fraction=0.2, seq_len=32)
        return {tok.decode(d) for d in split_docs(tmp_path / name, "val", tok.eos_id)}

    a, b, c = val_set(fwd, 0, "a"), val_set(rev, 0, "b"), val_set(fwd, 1, "c")
    assert a == b and a != c
    assert 30 < len(a) < 90  # ~60 of 300


def test_max_tokens_stops_after_the_document_that_reaches_it(bpe_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"document {i} " * 5} for i in range(50)])
    s = convert_data([str(path)], bpe_dir, tmp_path / "out", max_tokens=200, val_fraction=0)
    m = read_manifest(tmp_path / "out")
    lengths = [len(d) for d in split_docs(tmp_path / "out", "train", Tokenizer.from_dir(bpe_dir).eos_id)]
    assert s["stopped_at_max_tokens"] and sum(lengths) == s["tokens"] == m["splits"]["train"]["tokens"]
    assert sum(lengths) >= 200 > sum(lengths[:-1])


def test_safetensors_shards_hold_the_same_rows_as_parquet(bpe_dir, tmp_path):
    from safetensors.numpy import load_file

    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i} " * (i % 7 + 1)} for i in range(80)])
    for fmt in ("parquet", "safetensors"):
        convert_data(
            [str(path)],
            bpe_dir,
            tmp_path / fmt,
            output_format=fmt,
            seq_len=16,
            shard_rows=10,
            pack="documents",
        )
    m = read_manifest(tmp_path / "safetensors")
    n = m["splits"]["train"]["rows"]
    a, b = read_rows(tmp_path / "parquet", "train", 0, n), read_rows(tmp_path / "safetensors", "train", 0, n)
    for key in ("input_ids", "loss_mask", "segment_ids", "positions"):
        np.testing.assert_array_equal(a[key], b[key])
    raw = load_file(str(tmp_path / "safetensors" / m["splits"]["train"]["shards"][0]["file"]))
    assert raw["input_ids"].shape == (10, 17) and raw["input_ids"].dtype == np.int32


def test_document_packing_keeps_documents_whole_and_segments_exact(bpe_dir, tmp_path):
    docs = [f"doc {i}: " + "word " * (i % 11) for i in range(60)] + ["a very long document " * 20]
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in docs])
    out = tmp_path / "out"
    convert_data([str(path)], bpe_dir, out, pack="documents", seq_len=31, val_fraction=0, id_dtype="uint16")
    m = read_manifest(out)
    assert m["columns"]["input_ids"] == "uint16"
    rows = read_rows(out, "train", 0, m["splits"]["train"]["rows"])
    tok = Tokenizer.from_dir(bpe_dir)
    segments = []
    for ids, mask, seg, pos in zip(
        rows["input_ids"], rows["loss_mask"], rows["segment_ids"], rows["positions"], strict=True
    ):
        assert ids.dtype == np.int32
        for s in range(1, seg.max() + 1):
            where = np.flatnonzero(seg == s)
            assert np.array_equal(where, np.arange(where[0], where[0] + len(where)))  # contiguous
            assert np.array_equal(pos[where], np.arange(len(where)))
            assert mask[where[0]] == 0 and mask[where[1:]].all()
            segments.append(tok.decode(ids[where].tolist()))
        assert (mask[seg == 0] == 0).all()
    # A document that fits a row lies whole in one row; a longer one is cut into row-sized pieces.
    lengths = [len(tok.encode(d)) + 1 for d in docs]
    fits = [d + "<|im_end|>" for d, n in zip(docs, lengths, strict=True) if n <= 32]
    assert 10 < len(fits) < len(docs)
    assert sorted(fits) == sorted(s for s in segments if s in fits)
    rest = Counter(s for s in segments if s not in fits)
    for d, n in zip(docs, lengths, strict=True):
        if n > 32:
            ids = [*tok.encode(d), tok.eos_id]
            for piece in (tok.decode(ids[i : i + 32]) for i in range(0, n, 32)):
                assert rest[piece] > 0, piece
                rest[piece] -= 1
    assert not +rest
    assert m["splits"]["train"]["tokens"] == int((rows["segment_ids"] > 0).sum()) == sum(lengths)


# ---- chat, instruct, preference -------------------------------------------------------------------------
CONVERSATIONS = [
    [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ],
]


@pytest.mark.parametrize("pack", ["concat", "documents"])
def test_chat_loss_mask_covers_exactly_the_assistant_tokens(smollm2_dir, smollm2_tokenizer, tmp_path, pack):
    tok = smollm2_tokenizer
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS])
    out = tmp_path / "out"
    convert_data([str(path)], smollm2_dir, out, fmt="chat", pack=pack, seq_len=127, val_fraction=0)
    m = read_manifest(out)
    rows = read_rows(out, "train", 0, m["splits"]["train"]["rows"])
    if pack == "concat":
        n = m["splits"]["train"]["tokens"]
        pieces = [(rows["input_ids"].reshape(-1)[:n], rows["loss_mask"].reshape(-1)[:n])]
    else:
        pieces = [
            (ids[seg == s], mask[seg == s])
            for ids, mask, seg in zip(rows["input_ids"], rows["loss_mask"], rows["segment_ids"], strict=True)
            for s in range(1, seg.max() + 1)
        ]
    ids = np.concatenate([p[0] for p in pieces])
    mask = np.concatenate([p[1] for p in pieces])
    # The rows are the rendered templates, and the mask is 1 from after each "<|im_start|>assistant\n"
    # through the <|im_end|> that closes the reply: found here by scanning ids, not by rendering prefixes.
    rendered = "".join(tok.apply_chat_template(c, add_generation_prompt=False) for c in CONVERSATIONS)
    assert tok.decode(ids.tolist()) == rendered
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    expected = np.zeros(len(ids), np.uint8)
    for i in range(len(ids) - len(header)):
        if ids[i : i + len(header)].tolist() == header:
            end = i + len(header) + list(ids[i + len(header) :]).index(tok.eos_id)
            expected[i + len(header) : end + 1] = 1
    assert expected.sum() > 0
    np.testing.assert_array_equal(mask, expected)
    assert (
        tok.decode(ids[mask == 1].tolist()) == "Hello! How can I help?<|im_end|>Paris.<|im_end|>4<|im_end|>"
    )


def test_chat_spans_refuse_a_template_that_is_not_prefix_stable(bpe_dir):
    tok = Tokenizer.from_dir(bpe_dir)
    text, spans = chat_spans(tok, CONVERSATIONS[0])
    assert [text[a:b] for a, b in spans] == ["Hello! How can I help?<|im_end|>", "Paris.<|im_end|>"]
    tok.config["chat_template"] = "{% for m in messages|reverse %}{{ m['content'] }}|{% endfor %}"
    with pytest.raises(VishwamError, match="prefix"):
        chat_spans(tok, CONVERSATIONS[0])


def test_instruct_masks_the_response_and_eos(bpe_dir, tmp_path):
    tok = Tokenizer.from_dir(bpe_dir)
    records = [{"prompt": "Translate: cat\n", "response": "chat"}, {"prompt": "2+3=", "response": "5"}]
    path = write_jsonl(tmp_path / "i.jsonl", records)
    out = tmp_path / "out"
    convert_data([str(path)], bpe_dir, out, fmt="instruct", pack="concat", seq_len=63, val_fraction=0)
    n = read_manifest(out)["splits"]["train"]["tokens"]
    rows = read_rows(out, "train", 0, 1)
    ids, mask = rows["input_ids"][0][:n], rows["loss_mask"][0][:n]
    want = []
    for r in records:
        want += tok.encode(r["prompt"]) + tok.encode(r["response"]) + [tok.eos_id]
    assert ids.tolist() == want
    assert tok.decode(ids[mask == 1].tolist()) == "chat<|im_end|>5<|im_end|>"


def test_preference_pairs_are_kept_together(bpe_dir, tmp_path):
    tok = Tokenizer.from_dir(bpe_dir)
    records = [
        {"prompt": "Q: sky colour? A:", "chosen": " blue", "rejected": " green"},
        {"prompt": "Q: 1+1? A:", "chosen": " 2", "rejected": " 3"},
        {"prompt": "long " * 80, "chosen": "x", "rejected": "y"},  # does not fit 64 tokens: dropped, counted
        {
            "chosen": CONVERSATIONS[1],
            "rejected": CONVERSATIONS[1][:2] + [{"role": "assistant", "content": "5"}],
        },
    ]
    out = tmp_path / "out"
    s = convert_data(
        [str(write_jsonl(tmp_path / "p.jsonl", records))],
        bpe_dir,
        out,
        fmt="preference",
        seq_len=63,
        val_fraction=0,
    )
    assert s["filters"] == {"too_long": 1} and s["documents"]["kept"] == 3
    m = read_manifest(out)
    assert m["pack"] is None and set(m["columns"]) == {
        "input_ids",
        "loss_mask",
        "rejected_input_ids",
        "rejected_loss_mask",
    }
    rows = read_rows(out, "train", 0, 3)

    def side(r, prefix):
        ids, mask = rows[f"{prefix}input_ids"][r], rows[f"{prefix}loss_mask"][r]
        return tok.decode(ids[mask == 1].tolist())

    assert [side(r, "") for r in range(3)] == [" blue<|im_end|>", " 2<|im_end|>", "4<|im_end|>"]
    assert [side(r, "rejected_") for r in range(3)] == [" green<|im_end|>", " 3<|im_end|>", "5<|im_end|>"]
    assert tok.decode(rows["input_ids"][0].tolist()).startswith(
        "Q: sky colour? A: blue<|im_end|><|endoftext|>"
    )


def test_append_adds_shards_with_the_same_tokenizer(bpe_dir, tmp_path):
    out = tmp_path / "out"
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"first batch {i}"} for i in range(30)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"second batch {i}"} for i in range(30)])
    convert_data([str(a)], bpe_dir, out, seq_len=15, shard_rows=8, val_fraction=0)
    before = read_manifest(out)
    first_rows = read_rows(out, "train", 0, before["splits"]["train"]["rows"])["input_ids"]
    s = convert_data([str(b)], bpe_dir, out, append=True)
    after = read_manifest(out)
    train = after["splits"]["train"]
    assert s["appended"] and len(after["runs"]) == 2 and after["seq_len"] == 15
    assert train["documents"] == 60 and train["tokens"] == sum(r["tokens"] for r in after["runs"])
    n = len(train["shards"])
    assert [sh["file"] for sh in train["shards"]] == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert sorted(p.name for p in out.glob("train-*")) == [sh["file"] for sh in train["shards"]]
    rows = read_rows(out, "train", 0, train["rows"])["input_ids"]
    np.testing.assert_array_equal(rows[: len(first_rows)], first_rows)  # the old rows are untouched
    with pytest.raises(VishwamError, match="--seq-len 15"):
        convert_data([str(b)], bpe_dir, out, append=True, seq_len=64)


# ---- bad input: one sentence, exit 1, nothing that looks finished --------------------------------------
def assert_one_sentence_failure(proc, out: Path, pattern: str):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temp dir left behind"


def test_a_nonexistent_path(bpe_dir, tmp_path):
    out = tmp_path / "out"
    assert_one_sentence_failure(
        vishwam("convert", "data", tmp_path / "nope.txt", "-t", bpe_dir, "-o", out),
        out,
        "nope.txt does not exist",
    )
    assert_one_sentence_failure(
        vishwam("convert", "data", tmp_path / "*.jsonl", "-t", bpe_dir, "-o", out), out, "matches no files"
    )
    assert_one_sentence_failure(
        vishwam("convert", "data", tmp_path, "-t", tmp_path / "tok", "-o", out), out, "tok does not exist"
    )


def test_empty_input(bpe_dir, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty.txt").write_text("")
    assert_one_sentence_failure(
        vishwam("convert", "data", tmp_path / "empty.txt", "-t", bpe_dir, "-o", out), out, "No documents"
    )
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "image.png").write_bytes(b"\x89PNG")
    assert_one_sentence_failure(
        vishwam("convert", "data", tmp_path / "d", "-t", bpe_dir, "-o", out), out, "No input files"
    )


def test_undecodable_bytes_name_the_file_and_offset_or_are_skipped(bpe_dir, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\n\xff\xfe world")
    (tmp_path / "good.txt").write_text("good text")
    proc = vishwam("convert", "data", bad, tmp_path / "good.txt", "-t", bpe_dir, "-o", out)
    assert_one_sentence_failure(proc, out, r"bad\.txt: invalid UTF-8 at byte 6 \(pass --on-error skip")
    lines = tmp_path / "bad.jsonl"
    lines.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    proc = vishwam("convert", "data", lines, "-t", bpe_dir, "-o", out)
    assert_one_sentence_failure(proc, out, r"bad\.jsonl line 2: invalid UTF-8 at byte 28")
    proc = vishwam(
        "convert",
        "data",
        bad,
        lines,
        tmp_path / "good.txt",
        "-t",
        bpe_dir,
        "-o",
        out,
        "--on-error",
        "skip",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["filters"] == {"decode_error": 2}
    sources = read_manifest(out)["runs"][0]["sources"]
    assert [(Path(s["path"]).name, s["skipped"], s["kept"]) for s in sources] == [
        ("bad.txt", 1, 0),
        ("bad.jsonl", 1, 1),
        ("good.txt", 0, 1),
    ]


def test_a_missing_text_field_lists_the_available_fields(bpe_dir, tmp_path):
    out = tmp_path / "out"
    path = write_jsonl(tmp_path / "d.jsonl", [{"content": "x", "id": 1}])
    proc = vishwam("convert", "data", path, "-t", bpe_dir, "-o", out)
    assert_one_sentence_failure(
        proc, out, r"d\.jsonl line 1 has no field 'text'; its fields are: content, id"
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "d.parquet")
    proc = vishwam(
        "convert", "data", tmp_path / "d.parquet", "-t", bpe_dir, "-o", out, "--format", "instruct"
    )
    assert_one_sentence_failure(proc, out, r"d\.parquet has no column 'prompt'; its columns are: body")


def test_a_jsonl_line_that_does_not_parse_names_its_line(bpe_dir, tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken\n')
    assert_one_sentence_failure(
        vishwam("convert", "data", path, "-t", bpe_dir, "-o", out), out, r"d\.jsonl line 3 is not valid JSON"
    )


def test_a_vocab_larger_than_the_id_dtype(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    big = tmp_path / "big"
    big.mkdir()
    backend = Backend(models.WordLevel({f"w{i}": i for i in range(70_000)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(big / "tokenizer.json"))
    (big / "tokenizer_config.json").write_text(json.dumps({"eos_token": "w1"}))
    (tmp_path / "a.txt").write_text("w5 w6")
    out = tmp_path / "out"
    proc = vishwam("convert", "data", tmp_path / "a.txt", "-t", big, "-o", out, "--id-dtype", "uint16")
    assert_one_sentence_failure(proc, out, r"70,000 tokens, more than --id-dtype uint16 holds \(65,536\)")
    assert vishwam("convert", "data", tmp_path / "a.txt", "-t", big, "-o", out, "--quiet").returncode == 0


def test_appending_with_another_tokenizer_is_refused(bpe_dir, tmp_path):
    from vishwam_core.data import convert_tokenizer

    other = tmp_path / "other"
    convert_tokenizer([str(STDLIB / "json")], other, vocab_size=300)
    (tmp_path / "a.txt").write_text("some text")
    out = tmp_path / "out"
    convert_data([str(tmp_path / "a.txt")], bpe_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = vishwam("convert", "data", tmp_path / "a.txt", "-t", other, "-o", out, "--append")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert re.search(r"was made with a different tokenizer \(sha256 \w{12}, this one \w{12}\)", proc.stderr)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the dataset is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_a_killed_conversion_leaves_nothing_that_looks_finished(bpe_dir, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vishwam_cli.main",
            "convert",
            "data",
            "-",
            "-t",
            str(bpe_dir),
            "-o",
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    proc.stdin.write(b"text that keeps coming\n" * 1000)
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]:
        assert time.monotonic() < deadline and proc.poll() is None, "the conversion never started writing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert all(not (p / "manifest.json").exists() for p in leftovers)
    with pytest.raises(VishwamError, match="does not exist"):
        read_manifest(out)


# ---- tokenizer training and inspection -------------------------------------------------------------------
def test_convert_tokenizer_trains_a_byte_level_bpe_transformers_reads(tmp_path):
    out = tmp_path / "tok"
    proc = vishwam("convert", "tokenizer", STDLIB / "json", "--vocab-size", "400", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["vocab_size"] == 400 and s["documents"] == 5 and s["sources"] == 5
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    tok = Tokenizer.from_dir(out)
    assert [tok.token_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
    assert tok.eos_id == 2 and tok.bos_id == 1
    text = "Ünïcode ✓, digits 2024, tabs\tand emoji 🙂 never seen in training"
    assert tok.decode(tok.encode(text)) == text
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert hf.eos_token == "<|im_end|>"
    again = tmp_path / "again"
    vishwam("convert", "tokenizer", STDLIB / "json", "--vocab-size", "400", "--out", again, "--quiet")
    assert (again / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    human = vishwam("convert", "tokenizer", STDLIB / "json", "--vocab-size", "400", "--out", tmp_path / "h")
    assert human.returncode == 0, human.stderr
    assert "400 tokens" in human.stdout and "5 documents" in human.stdout and "from 5 file(s)" in human.stdout
    proc = vishwam(
        "convert", "tokenizer", STDLIB / "json", "--vocab-size", "100", "--out", tmp_path / "small"
    )
    assert_one_sentence_failure(proc, tmp_path / "small", "too small")


def test_inspect_shows_the_manifest_histogram_and_decoded_rows(stdlib_shards):
    out, _, _ = stdlib_shards
    s = inspect_data(out, samples=2, chars=10_000)
    m = read_manifest(out)
    assert s["splits"]["train"]["documents"] == m["splits"]["train"]["documents"]
    assert sum(s["splits"]["train"]["length_histogram"]["documents"]) == m["splits"]["train"]["documents"]
    first = read_rows(out, "train", 0, 1)["input_ids"][0]
    assert len(s["samples"]) == 2 and s["samples"][0]["text"] == Tokenizer.from_dir(out).decode(
        first.tolist()
    )
    proc = vishwam("convert", "inspect", out, "--samples", "1")
    assert (
        proc.returncode == 0 and "document length in tokens" in proc.stdout and "train row 0" in proc.stdout
    )
    assert json.loads(vishwam("convert", "inspect", out, "--json").stdout)["format"] == "text"


def test_the_tokenizer_may_be_a_tokenizer_json_file(bpe_dir, tmp_path):
    import shutil

    (tmp_path / "a.txt").write_text("some text")
    out = tmp_path / "out"
    convert_data([str(tmp_path / "a.txt")], bpe_dir / "tokenizer.json", out)
    m = read_manifest(out)
    assert (out / "tokenizer.json").read_bytes() == (bpe_dir / "tokenizer.json").read_bytes()
    assert "tokenizer_config.json" in m["tokenizer"]["files"] and m["tokenizer"]["eos_id"] == 2
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copyfile(bpe_dir / "tokenizer.json", lone / "mine.json")
    with pytest.raises(VishwamError, match="has no eos_token"):
        convert_data([str(tmp_path / "a.txt")], lone / "mine.json", tmp_path / "o2")
    assert not (tmp_path / "o2").exists()
