"""Data conversion: text sources -> tokenized, packed shards with a manifest; and their inspection.

    convert_data(["corpus/"], "models/smollm2", "shards/", seq_len=1024)

The pipeline streams, so memory is bounded whatever the corpus size. A reader thread walks the sources
(`vishwam_core.sources`), drops empty, too short/long and exactly duplicated documents (by content
hash), and assigns each document to train or val by a seeded hash of its content, so the split does not
depend on order or batch boundaries. The main thread encodes batches with tokenizers' batch encoder
(Rust threads with the GIL released, so every core tokenizes while the reader reads ahead), packs rows
of `seq_len + 1` tokens and hands them to `ShardWriter`. Same inputs and flags give byte-identical shards.

Formats: `text` (each document + EOS; literal special-token strings in the text stay text), `chat`
(a `messages` list rendered through the tokenizer's chat template; `loss_mask` is 1 on exactly the
assistant tokens: each reply through its end-of-turn token), `instruct` (prompt + response + EOS, loss
on the response and EOS), `preference` (prompt/chosen/rejected kept as one row per pair).
Packing: `concat` (one token stream cut into rows; the last row padded) or `documents` (first-fit
packing with `segment_ids`/`positions`, so attention and loss need not cross documents; a target that
would be predicted across a document boundary has loss_mask 0).

Output is written to a temp directory renamed at the end (`checkpoint.atomic_directory`): a failed or
killed conversion leaves nothing that looks finished. This module knows nothing of models.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import queue
import shlex
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vishwam_core import __version__
from vishwam_core.errors import VishwamError
from vishwam_core.shards import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    ShardWriter,
    read_manifest,
    shard_name,
    write_manifest,
)
from vishwam_core.sources import FORMAT_FIELDS, Doc, Source, expand, read_source

FORMATS = tuple(FORMAT_FIELDS)
PACKINGS = ("concat", "documents")
ID_DTYPES = {"int32": np.int32, "uint16": np.uint16}
ON_ERROR = ("fail", "skip")
SPLITS = ("train", "val")
DEFAULTS = {
    "seq_len": 1024,
    "val_fraction": 0.01,
    "seed": 0,
    "output_format": "parquet",
    "id_dtype": "int32",
}
ROW_GROUP_TOKENS = (
    1 << 20
)  # ~4 MB of int32 ids per row group: small enough to stream, large enough to compress
SHARD_TOKENS = 1 << 24  # ~16M tokens per shard file
# Text per tokenizer call: enough documents to spread over every core, few enough that the encodings in
# flight (~100 bytes a token inside tokenizers) stay a small, constant share of memory.
BATCH_CHARS = 1 << 20
BATCH_DOCS = 2048
QUEUE_BATCHES = 2  # batches the reader may run ahead of the encoder
MAX_ENCODE_THREADS = 8  # concurrent tokenizer calls; each holds one batch's encodings in memory
OPEN_ROWS = 32  # rows the document packer keeps open for first-fit


def _default_pack(fmt: str) -> str | None:
    return {"text": "concat", "chat": "documents", "instruct": "documents"}.get(fmt)


def _columns(fmt: str, pack: str | None, id_dtype: str) -> dict[str, str]:
    ids = np.dtype(ID_DTYPES[id_dtype]).name
    cols = {"input_ids": ids, "loss_mask": "uint8"}
    if fmt == "preference":
        cols.update(rejected_input_ids=ids, rejected_loss_mask="uint8")
    elif pack == "documents":
        cols.update(segment_ids="int32", positions="int32")
    return cols


# ---- tokenizer ------------------------------------------------------------------------------------
def _tokenizer_files(spec: str | Path) -> tuple[Path, list[Path]]:
    """(tokenizer.json, the tokenizer files to copy beside the shards) for a model dir or a file."""
    path = Path(spec)
    if not path.exists():
        raise VishwamError(f"{spec} does not exist (expected a model directory or a tokenizer.json).")
    from vishwam_core.tokenizer import TOKENIZER_FILES

    main = path / "tokenizer.json" if path.is_dir() else path
    if not main.exists():
        raise VishwamError(f"No tokenizer.json in {path}.")
    extra = [main.parent / n for n in TOKENIZER_FILES if n != "tokenizer.json" and (main.parent / n).exists()]
    return main, [main, *extra]


def _text_backend(tok):
    """A copy of the backend that encodes special-token strings found in plain text as text, so data
    cannot smuggle control tokens (an `<|im_end|>` inside a document is not an EOS)."""
    from tokenizers import Tokenizer as Backend

    backend = Backend.from_str(tok.backend.to_str())
    backend.encode_special_tokens = True
    return backend


# ---- packing --------------------------------------------------------------------------------------
class ConcatPacker:
    """One token stream cut into rows of `row_len`; the final partial row is padded (loss_mask 0)."""

    def __init__(self, writer: ShardWriter, row_len: int, pad_id: int):
        self.writer, self.row_len, self.pad_id = writer, row_len, pad_id
        self.ids = np.zeros(0, np.int32)
        self.mask = np.zeros(0, np.uint8)

    def add(self, ids: np.ndarray, mask: np.ndarray) -> None:
        """`ids`, `mask`: the concatenation of any number of whole documents."""
        ids = np.concatenate([self.ids, ids]) if len(self.ids) else ids
        mask = np.concatenate([self.mask, mask]) if len(self.mask) else mask
        n = len(ids) // self.row_len
        if n:
            cut = n * self.row_len
            self.writer.write(
                {
                    "input_ids": ids[:cut].reshape(n, self.row_len),
                    "loss_mask": mask[:cut].reshape(n, self.row_len),
                },
                np.full(n, self.row_len),
            )
            ids, mask = ids[cut:], mask[cut:]
        self.ids, self.mask = ids.copy(), mask.copy()

    def finish(self) -> int:
        """Write the padded last row; returns the number of padding tokens."""
        left = len(self.ids)
        if not left:
            return 0
        pad = self.row_len - left
        self.writer.write(
            {
                "input_ids": np.concatenate([self.ids, np.full(pad, self.pad_id, np.int32)])[None],
                "loss_mask": np.concatenate([self.mask, np.zeros(pad, np.uint8)])[None],
            },
            np.array([left]),
        )
        self.ids = self.ids[:0]
        return pad


class DocumentPacker:
    """First-fit packing of documents into rows with segment ids; documents longer than a row are cut
    into row-sized pieces. Keeps at most OPEN_ROWS rows open, closing the fullest when it needs room."""

    def __init__(self, writer: ShardWriter, row_len: int, pad_id: int, open_rows: int = OPEN_ROWS):
        self.writer, self.row_len, self.pad_id, self.open_rows = writer, row_len, pad_id, open_rows
        self.rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
        self.used: list[int] = []
        self.closed: list[list[tuple[np.ndarray, np.ndarray]]] = []
        self.padding = 0

    def add_doc(self, ids: np.ndarray, mask: np.ndarray) -> None:
        L = self.row_len
        for start in range(0, len(ids), L):
            piece_ids, piece_mask = ids[start : start + L], mask[start : start + L].copy()
            piece_mask[0] = 0  # its target would be predicted from another document (or from nothing)
            n = len(piece_ids)
            slot = next((i for i, u in enumerate(self.used) if L - u >= n), None)
            if slot is None:
                if len(self.rows) >= self.open_rows:
                    fullest = int(np.argmax(self.used))
                    self._close(fullest)
                self.rows.append([])
                self.used.append(0)
                slot = len(self.rows) - 1
            self.rows[slot].append((piece_ids, piece_mask))
            self.used[slot] += n
            if self.used[slot] == L:
                self._close(slot)
        if len(self.closed) >= 256:
            self._flush()

    def _close(self, i: int) -> None:
        self.closed.append(self.rows.pop(i))
        self.used.pop(i)

    def _flush(self) -> None:
        if not self.closed:
            return
        n, L = len(self.closed), self.row_len
        ids = np.full((n, L), self.pad_id, np.int32)
        mask = np.zeros((n, L), np.uint8)
        seg = np.zeros((n, L), np.int32)
        pos = np.zeros((n, L), np.int32)
        tokens = np.zeros(n, np.int64)
        for r, pieces in enumerate(self.closed):
            at = 0
            for s, (p_ids, p_mask) in enumerate(pieces, 1):
                k = len(p_ids)
                ids[r, at : at + k] = p_ids
                mask[r, at : at + k] = p_mask
                seg[r, at : at + k] = s
                pos[r, at : at + k] = np.arange(k)
                at += k
            tokens[r] = at
        self.padding += int(n * L - tokens.sum())
        self.writer.write({"input_ids": ids, "loss_mask": mask, "segment_ids": seg, "positions": pos}, tokens)
        self.closed = []

    def finish(self) -> int:
        while self.rows:
            self._close(0)
        self._flush()
        return self.padding


class PairWriter:
    """Preference pairs: one row per pair, chosen in input_ids/loss_mask, rejected beside it, padded."""

    def __init__(self, writer: ShardWriter, row_len: int, pad_id: int):
        self.writer, self.row_len, self.pad_id = writer, row_len, pad_id
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.padding = 0

    def add_pair(
        self, chosen: tuple[np.ndarray, np.ndarray], rejected: tuple[np.ndarray, np.ndarray]
    ) -> None:
        self.pending.append((*chosen, *rejected))
        if len(self.pending) >= 256:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        n, L = len(self.pending), self.row_len
        cols = {
            "input_ids": np.full((n, L), self.pad_id, np.int32),
            "loss_mask": np.zeros((n, L), np.uint8),
            "rejected_input_ids": np.full((n, L), self.pad_id, np.int32),
            "rejected_loss_mask": np.zeros((n, L), np.uint8),
        }
        tokens = np.zeros(n, np.int64)
        for r, (c_ids, c_mask, r_ids, r_mask) in enumerate(self.pending):
            cols["input_ids"][r, : len(c_ids)] = c_ids
            cols["loss_mask"][r, : len(c_ids)] = c_mask
            cols["rejected_input_ids"][r, : len(r_ids)] = r_ids
            cols["rejected_loss_mask"][r, : len(r_ids)] = r_mask
            tokens[r] = len(c_ids) + len(r_ids)
        self.padding += int(2 * n * L - tokens.sum())
        self.writer.write(cols, tokens)
        self.pending = []

    def finish(self) -> int:
        self._flush()
        return self.padding


# ---- encoding records -----------------------------------------------------------------------------
def chat_spans(tok, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant replies.

    A reply's span runs from the end of the generation prompt that precedes it to the end of what the
    template renders for it, trailing whitespace excluded (so `<|im_end|>` is a target, the newline
    after it is not). Found by rendering prefix by prefix, which works for any template that renders a
    conversation's prefix as a prefix of the whole.
    """
    full = tok.apply_chat_template(messages, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tok.apply_chat_template(messages[:i], add_generation_prompt=True) if i else ""
        through = tok.apply_chat_template(messages[: i + 1], add_generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise VishwamError(
                "The tokenizer's chat template does not render a conversation's prefix as a prefix of the "
                "whole, so the assistant tokens cannot be located; use --format instruct or another template."
            )
        spans.append((len(before), max(len(before), len(through.rstrip()))))
    return full, spans


def _mask_from_spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> np.ndarray:
    starts = np.fromiter((o[0] for o in offsets), np.int64, count=len(offsets))
    mask = np.zeros(len(offsets), np.uint8)
    for a, b in spans:
        mask[(starts >= a) & (starts < b)] = 1
    return mask


@dataclass
class _Flat:
    """Documents as one array: document i is ids[bounds[i]:bounds[i + 1]]."""

    ids: np.ndarray
    bounds: np.ndarray

    def __len__(self) -> int:
        return len(self.bounds) - 1


class _Encoder:
    """Turns a batch of documents of one format into (ids, mask) arrays."""

    def __init__(self, tok, fmt: str):
        self.tok, self.fmt = tok, fmt
        self.text = _text_backend(tok)
        self.eos = tok.eos_id
        bos = tok.bos_id if tok.config.get("add_bos_token") else None
        self.prefix = [bos] if bos is not None else []

    def texts(self, texts: list[str]) -> _Flat:
        """Plain documents: [BOS] + text + EOS each, as one flat int32 array (4 bytes a token, where
        Python lists of ids would hold ~40 while they wait to be packed)."""
        lists = [enc.ids for enc in self.text.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, lists), np.int64, count=len(lists))
        body = np.fromiter(itertools.chain.from_iterable(lists), np.int32, count=int(lengths.sum()))
        del lists
        extra = len(self.prefix) + 1
        bounds = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lengths + extra, out=bounds[1:])
        ids = np.empty(int(bounds[-1]), np.int32)
        ends = bounds[1:] - 1
        ids[ends] = self.eos
        if self.prefix:
            ids[bounds[:-1]] = self.prefix[0]
        keep = np.ones(len(ids), bool)
        keep[ends] = False
        if self.prefix:
            keep[bounds[:-1]] = False
        ids[keep] = body
        return _Flat(ids, bounds)

    def conversations(self, conversations: list[list[dict[str, str]]]) -> list[tuple[np.ndarray, np.ndarray]]:
        rendered = [chat_spans(self.tok, m) for m in conversations]
        encs = self.tok.backend.encode_batch([r[0] for r in rendered], add_special_tokens=False)
        return [
            (np.asarray(e.ids, np.int32), _mask_from_spans(e.offsets, spans))
            for e, (_, spans) in zip(encs, rendered, strict=True)
        ]

    def prompt_response(
        self, prompts: list[str], responses: list[str]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        p_encs = self.text.encode_batch_fast(prompts, add_special_tokens=False)
        r_encs = self.text.encode_batch_fast(responses, add_special_tokens=False)
        out = []
        for p, r in zip(p_encs, r_encs, strict=True):
            head = self.prefix + p.ids
            tail = [*r.ids, self.eos]
            ids = np.asarray(head + tail, np.int32)
            mask = np.concatenate([np.zeros(len(head), np.uint8), np.ones(len(tail), np.uint8)])
            out.append((ids, mask))
        return out

    def encode(self, batch: list[_Item]) -> list[Any]:
        """The kept documents of a reader batch, encoded (runs on the encode pool)."""
        values = [it.value for it in batch if it.drop is None and not it.opens]
        return self.texts(values) if self.fmt == "text" else self.records(values)

    def records(self, values: list[dict[str, Any]]) -> list[Any]:
        if self.fmt == "chat":
            return self.conversations([v["messages"] for v in values])
        if self.fmt == "instruct":
            return self.prompt_response([v["prompt"] for v in values], [v["response"] for v in values])
        out: list[Any] = [None] * len(values)
        strings = [i for i, v in enumerate(values) if isinstance(v["chosen"], str)]
        lists = [i for i, v in enumerate(values) if not isinstance(v["chosen"], str)]
        if strings:
            prompts = [values[i].get("prompt", "") for i in strings]
            chosen = self.prompt_response(prompts, [values[i]["chosen"] for i in strings])
            rejected = self.prompt_response(prompts, [values[i]["rejected"] for i in strings])
            for k, i in enumerate(strings):
                out[i] = (chosen[k], rejected[k])
        if lists:
            chosen = self.conversations([values[i]["chosen"] for i in lists])
            rejected = self.conversations([values[i]["rejected"] for i in lists])
            for k, i in enumerate(lists):
                out[i] = (chosen[k], rejected[k])
        return out


# ---- the reader thread ----------------------------------------------------------------------------
@dataclass
class _Item:
    source: int
    drop: str | None = None  # the filter that dropped it
    split: str = "train"
    value: Any = None
    opens: bool = False  # marks the start of a new source


class _Reader:
    """Reads, filters, deduplicates and splits documents ahead of the tokenizer, in batches."""

    def __init__(self, specs, fmt, fields, on_error, include, exclude, stdin_kind, opts):
        self.args = (specs, include, exclude, stdin_kind)
        self.fmt, self.fields, self.on_error = fmt, fields, on_error
        self.min_chars, self.max_chars, self.dedup = opts["min_chars"], opts["max_chars"], opts["dedup"]
        self.val_threshold = int(opts["val_fraction"] * 2**64)
        self.seed_key = (opts["seed"] % 2**64).to_bytes(8, "little")
        self.sources: list[Source] = []
        self.seen: set[int] = set()
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vishwam-data-reader", daemon=True)

    def __enter__(self) -> _Reader:
        self.thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.stop.set()
        # After a normal finish (or an early stop) wait for the reader, which completes the current
        # file's hash; after a failure or Ctrl-C give it a moment, since it may be blocked on stdin.
        deadline = time.monotonic() + 1.0 if exc_type is not None else None
        while self.thread.is_alive() and (deadline is None or time.monotonic() < deadline):
            try:
                self.queue.get(timeout=0.05)
            except queue.Empty:
                pass

    def batches(self) -> Iterator[list[_Item]]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            batch: list[_Item] = []
            chars = 0
            for source in expand(*self.args):
                index = len(self.sources)
                self.sources.append(source)
                batch.append(_Item(index, opens=True))
                docs = read_source(source, self.fmt, self.fields, self.on_error)
                try:
                    for doc in docs:
                        item = self._judge(index, doc)
                        batch.append(item)
                        if item.drop is None:
                            chars += len(item.value) if isinstance(item.value, str) else 1024
                        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
                            if not self._put(batch):
                                return
                            batch, chars = [], 0
                finally:
                    docs.close()  # on an early stop this finishes the file's hash
            if batch and not self._put(batch):
                return
            self._put(None)
        except BaseException as e:  # handed to the main thread, which raises it in document order
            self._put(e)

    def _judge(self, index: int, doc: Doc) -> _Item:
        if doc.problem:
            return _Item(index, drop=doc.problem)
        value = doc.value
        if isinstance(value, str):
            length, key_bytes = len(value), doc.raw if doc.raw is not None else value.encode()
            if not value.strip():
                return _Item(index, drop="empty")
        else:
            import json

            length = _record_chars(value)
            key_bytes = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
            if length == 0:
                return _Item(index, drop="empty")
        if length < self.min_chars:
            return _Item(index, drop="too_short")
        if self.max_chars and length > self.max_chars:
            return _Item(index, drop="too_long")
        digest = hashlib.blake2b(key_bytes, digest_size=16).digest()
        if self.dedup:
            key = int.from_bytes(digest[:8], "little")
            if key in self.seen:
                return _Item(index, drop="duplicate")
            self.seen.add(key)
        u = int.from_bytes(hashlib.blake2b(digest, key=self.seed_key, digest_size=8).digest(), "little")
        return _Item(index, split="val" if u < self.val_threshold else "train", value=value)


def _record_chars(value: Any) -> int:
    """Characters of text in a record (message contents included), for the empty and length filters."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_record_chars(v) for k, v in value.items() if k != "role")
    if isinstance(value, list):
        return sum(_record_chars(v) for v in value)
    return 0


# ---- conversion -------------------------------------------------------------------------------------
FILTERS = ("decode_error", "bad_record", "missing_field", "empty", "too_short", "too_long", "duplicate")


class _Tally:
    """Counts per source, per filter and per split, updated in document order by the main thread."""

    def __init__(self, splits):
        self.sources: dict[int, dict[str, int]] = {}
        self.dropped = dict.fromkeys(FILTERS, 0)
        self.splits = {s: {"documents": 0, "tokens": 0, "histogram": np.zeros(40, np.int64)} for s in splits}

    def source(self, i: int) -> dict[str, int]:
        return self.sources.setdefault(i, {"documents": 0, "kept": 0, "tokens": 0, "skipped": 0})

    def drop(self, item: _Item) -> None:
        s = self.source(item.source)
        s["documents"] += 1
        if item.drop in ("decode_error", "bad_record", "missing_field"):
            s["skipped"] += 1
        self.dropped[item.drop] += 1

    def keep(self, item: _Item, tokens: int) -> None:
        s = self.source(item.source)
        s["documents"] += 1
        s["kept"] += 1
        s["tokens"] += tokens
        split = self.splits[item.split]
        split["documents"] += 1
        split["tokens"] += tokens
        split["histogram"][max(tokens, 1).bit_length() - 1] += 1


def _histogram(counts: np.ndarray) -> dict[str, list[int]]:
    nz = np.nonzero(counts)[0]
    top = int(nz[-1]) + 1 if len(nz) else 0
    return {"bin_edges": [1 << k for k in range(top + 1)], "documents": counts[:top].tolist()}


def _resolve(value, key, old: dict | None, flag: str):
    """A setting: the flag if given (and, when appending, equal to the dataset's), else the dataset's,
    else the default."""
    if old is not None:
        have = old.get(key)
        if value is not None and value != have:
            raise VishwamError(
                f"The dataset was made with {flag} {have}; append with the same {flag} or omit it."
            )
        return have
    return DEFAULTS.get(key) if value is None else value


@dataclass
class _Settings:
    fmt: str
    pack: str | None
    seq_len: int
    output_format: str
    id_dtype: str
    val_fraction: float
    seed: int
    shard_rows: int | None

    @property
    def row_len(self) -> int:
        return self.seq_len + 1


def _settings(old: dict | None, fmt, pack, seq_len, output_format, id_dtype, val_fraction, seed, shard_rows):
    """Resolve and check the dataset-level settings (the ones an append must share)."""
    if old is not None:
        fmt = _resolve(fmt, "format", old, "--format")
        pack = _resolve(pack, "pack", old, "--pack")
    else:
        fmt = fmt or "text"
        if fmt == "preference" and pack is not None:
            raise VishwamError("--pack does not apply to --format preference, which keeps one pair per row.")
        pack = pack or _default_pack(fmt)
    if fmt not in FORMATS:
        raise VishwamError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'.")
    if pack is not None and pack not in PACKINGS:
        raise VishwamError(f"--pack must be one of {', '.join(PACKINGS)}, not '{pack}'.")
    st = _Settings(
        fmt=fmt,
        pack=pack,
        seq_len=_resolve(seq_len, "seq_len", old, "--seq-len"),
        output_format=_resolve(output_format, "output_format", old, "--output-format"),
        id_dtype=_resolve(id_dtype, "id_dtype", old, "--id-dtype"),
        val_fraction=_resolve(val_fraction, "val_fraction", old, "--val-fraction"),
        seed=_resolve(seed, "seed", old, "--seed"),
        shard_rows=shard_rows if shard_rows is not None or old is None else old["shard_rows"],
    )
    if st.id_dtype not in ID_DTYPES:
        raise VishwamError(f"--id-dtype must be one of {', '.join(ID_DTYPES)}, not '{st.id_dtype}'.")
    if st.output_format not in ("parquet", "safetensors"):
        raise VishwamError(f"--output-format must be parquet or safetensors, not '{st.output_format}'.")
    if st.seq_len < 1:
        raise VishwamError(f"--seq-len must be at least 1, not {st.seq_len}.")
    if not 0 <= st.val_fraction < 1:
        raise VishwamError(f"--val-fraction must be in [0, 1), not {st.val_fraction}.")
    if st.shard_rows is not None and st.shard_rows < 1:
        raise VishwamError(f"--shard-rows must be at least 1, not {st.shard_rows}.")
    return st


def _load_tokenizer(spec, st: _Settings, old: dict | None, out: Path):
    """The tokenizer, its files to copy and its sha256, checked against the settings and the dataset."""
    from vishwam_core.checkpoint import file_sha256
    from vishwam_core.tokenizer import Tokenizer

    tok_json, tok_files = _tokenizer_files(spec)
    sha = file_sha256(tok_json)
    if old is not None and old["tokenizer"]["sha256"] != sha:
        raise VishwamError(
            f"{out} was made with a different tokenizer (sha256 {old['tokenizer']['sha256'][:12]}, this one "
            f"{sha[:12]}); append with the same tokenizer or convert into a new directory."
        )
    tok = Tokenizer.from_dir(tok_json)
    limit = int(np.iinfo(ID_DTYPES[st.id_dtype]).max) + 1
    if tok.vocab_size > limit:
        raise VishwamError(
            f"The tokenizer has {tok.vocab_size:,} tokens, more than --id-dtype {st.id_dtype} holds ({limit:,}); "
            "use --id-dtype int32."
        )
    if tok.eos_id is None:
        raise VishwamError(
            f"The tokenizer at {spec} has no eos_token (tokenizer_config.json); vishwam ends documents with it."
        )
    if st.fmt == "chat" and not tok.chat_template:
        raise VishwamError(f"--format chat needs a chat template, and the tokenizer at {spec} has none.")
    return tok, tok_files, sha


@contextlib.contextmanager
def _encode_pool() -> Iterator[tuple[ThreadPoolExecutor, int]]:
    """A pool of one tokenizer call per core (up to MAX_ENCODE_THREADS), and how many batches to keep
    in flight.

    tokenizers releases the GIL, so concurrent calls use every core, and a core that finishes early
    starts the next batch instead of idling while another finishes a long document. With the cores
    covered this way, tokenizers' own fan-out inside each call (rayon) only adds scheduling: alternating
    A/B runs here measured ~8% more CPU per token with it. So it is switched off for the duration, unless
    the user set TOKENIZERS_PARALLELISM or there are more cores than threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = min(cores, MAX_ENCODE_THREADS)
    key = "TOKENIZERS_PARALLELISM"  # tokenizers reads it on every call
    mine = key not in os.environ and threads == cores
    if mine:
        os.environ[key] = "false"
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="vishwam-encode") as pool:
            yield pool, threads + 1
    finally:
        if mine:
            os.environ.pop(key, None)


def _pump(reader: _Reader, encoder: _Encoder, st: _Settings, packers, tally, max_tokens, progress):
    """Read -> encode -> pack until the sources end or --max-tokens is reached; batches are encoded
    concurrently (`_encode_pool`) and consumed strictly in order. Returns (sources opened, stopped)."""
    opened: list[int] = []
    total = 0
    with reader, _encode_pool() as (pool, ahead):
        inflight: deque = deque()
        batches = reader.batches()
        while True:
            while len(inflight) < ahead:
                batch = next(batches, None)
                if batch is None:
                    break
                inflight.append((batch, pool.submit(encoder.encode, batch)))
            if not inflight:
                return opened, False
            batch, future = inflight.popleft()
            before = total
            total, stopped = _consume(batch, future.result(), st, packers, tally, opened, total, max_tokens)
            if progress:
                progress(total - before)
            if stopped:
                for _, f in inflight:
                    f.cancel()
                return opened, True


def _split_entries(split, writer, packer, tally, old, out: Path, tmp: Path, output_format) -> dict[str, Any]:
    """A split's manifest entry; when appending, the old shards are hard-linked under their new names."""
    padding = packer.finish()
    prior = old["splits"].get(split) if old else None
    prior_shards = list(prior["shards"]) if prior else []
    new = writer.close()  # numbered after the prior shards, named -of-(prior + new)
    count = len(prior_shards) + len(new)
    for i, entry in enumerate(prior_shards):
        name = shard_name(split, i, count, output_format)
        os.link(out / entry["file"], tmp / name)
        prior_shards[i] = {**entry, "file": name}
    t = tally.splits[split]
    hist = t["histogram"].copy()
    if prior:
        old_counts = prior["length_histogram"]["documents"]
        hist[: len(old_counts)] += np.asarray(old_counts, np.int64)
    return {
        "documents": t["documents"] + (prior["documents"] if prior else 0),
        "tokens": t["tokens"] + (prior["tokens"] if prior else 0),
        "rows": sum(e["rows"] for e in prior_shards + new),
        "padding_tokens": padding + (prior["padding_tokens"] if prior else 0),
        "length_histogram": _histogram(hist),
        "shards": prior_shards + new,
    }


def convert_data(
    sources: list[str],
    tokenizer: str | Path,
    out: str | Path,
    *,
    seq_len: int | None = None,
    fmt: str | None = None,
    text_field: str | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    max_tokens: int | None = None,
    shard_rows: int | None = None,
    output_format: str | None = None,
    on_error: str = "fail",
    pack: str | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    min_chars: int = 1,
    max_chars: int | None = None,
    dedup: bool = True,
    id_dtype: str | None = None,
    append: bool = False,
    force: bool = False,
    stdin_format: str | None = None,
    progress: Callable[[int], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """`vishwam convert data`: sources -> `out/` with manifest.json and train/val shards.

    Unset options take the defaults, or with `append=True` the existing dataset's settings.
    """
    from vishwam_core.checkpoint import atomic_directory
    from vishwam_core.sources import check_specs

    started = time.perf_counter()
    out = Path(out)
    old = None
    if append:
        if not out.exists():
            raise VishwamError(f"{out} does not exist; --append adds to an existing shard directory.")
        old = read_manifest(out)
    elif out.exists() and not force:
        raise VishwamError(f"{out} already exists; pass --force to replace it or --append to add to it.")
    st = _settings(old, fmt, pack, seq_len, output_format, id_dtype, val_fraction, seed, shard_rows)
    if on_error not in ON_ERROR:
        raise VishwamError(f"--on-error must be fail or skip, not '{on_error}'.")
    if max_tokens is not None and max_tokens < 1:
        raise VishwamError(f"--max-tokens must be at least 1, not {max_tokens}.")
    tok, tok_files, tok_sha = _load_tokenizer(tokenizer, st, old, out)
    pad_id = tok.token_id(_token_content(tok.config.get("pad_token")))
    pad_id = tok.eos_id if pad_id is None else pad_id
    check_specs(sources)

    columns = _columns(st.fmt, st.pack, st.id_dtype)
    row_group_rows = max(1, ROW_GROUP_TOKENS // st.row_len)
    shard_rows = st.shard_rows or max(row_group_rows, SHARD_TOKENS // st.row_len)
    splits = SPLITS if st.val_fraction > 0 else ("train",)
    if old is not None:
        splits = tuple(dict.fromkeys([*old["splits"], *splits]))
    fields = {"text": text_field or "text", "messages": text_field or "messages"}
    stdin_kind = stdin_format or ("text" if st.fmt == "text" else "jsonl")
    opts = {"min_chars": min_chars, "max_chars": max_chars, "dedup": dedup, "val_fraction": st.val_fraction}
    reader = _Reader(
        sources, st.fmt, fields, on_error, include, exclude, stdin_kind, {**opts, "seed": st.seed}
    )

    with atomic_directory(out, force=force or append) as tmp:
        writers = {
            s: ShardWriter(
                tmp,
                s,
                columns,
                st.row_len,
                row_group_rows,
                shard_rows,
                st.output_format,
                first_index=len(old["splits"].get(s, {}).get("shards", [])) if old else 0,
            )
            for s in splits
        }
        packer_cls = {"concat": ConcatPacker, "documents": DocumentPacker, None: PairWriter}[st.pack]
        packers = {s: packer_cls(w, st.row_len, pad_id) for s, w in writers.items()}
        tally = _Tally(splits)
        try:
            opened, stopped_early = _pump(
                reader, _Encoder(tok, st.fmt), st, packers, tally, max_tokens, progress
            )
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        if not any(t["documents"] for t in tally.splits.values()):
            _raise_empty(reader.sources, opened, tally)
        split_info = {
            s: _split_entries(s, writers[s], packers[s], tally, old, out, tmp, st.output_format)
            for s in splits
        }
        # The tokenizer travels with the shards (inspect decodes with it; training checks it).
        shutil.copyfile(tok_files[0], tmp / "tokenizer.json")
        for f in tok_files[1:]:
            shutil.copyfile(f, tmp / f.name)
        run = {
            "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "vishwam_version": __version__,
            "options": {
                "text_field": text_field,
                "on_error": on_error,
                "max_tokens": max_tokens,
                "include": include or [],
                "exclude": exclude or [],
                **{k: v for k, v in opts.items() if k != "val_fraction"},
            },
            "stopped_at_max_tokens": stopped_early,
            "documents": {
                "read": sum(v["documents"] for v in tally.sources.values()),
                "kept": sum(t["documents"] for t in tally.splits.values()),
            },
            "tokens": sum(t["tokens"] for t in tally.splits.values()),
            "filters": [{"name": k, "dropped_documents": v} for k, v in tally.dropped.items()],
            "sources": [{**reader.sources[i].to_dict(), **tally.source(i)} for i in opened],
        }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "format": st.fmt,
            "pack": st.pack,
            "seq_len": st.seq_len,
            "row_len": st.row_len,
            "output_format": st.output_format,
            "id_dtype": st.id_dtype,
            "columns": columns,
            "row_group_rows": row_group_rows,
            "shard_rows": shard_rows,
            "seed": st.seed,
            "val_fraction": st.val_fraction,
            "tokenizer": {
                "file": "tokenizer.json",
                "sha256": tok_sha,
                "source": str(tokenizer),
                "vocab_size": tok.vocab_size,
                "eos_id": tok.eos_id,
                "bos_id": tok.bos_id,
                "pad_id": pad_id,
                "files": ["tokenizer.json", *(f.name for f in tok_files[1:])],
            },
            "splits": split_info,
            "runs": [*(old["runs"] if old else []), run],
        }
        write_manifest(tmp, manifest)
    seconds = time.perf_counter() - started
    return {
        "out": str(out),
        "format": st.fmt,
        "pack": st.pack,
        "seq_len": st.seq_len,
        "output_format": st.output_format,
        "appended": append,
        "documents": run["documents"],
        "tokens": run["tokens"],
        "filters": {f["name"]: f["dropped_documents"] for f in run["filters"] if f["dropped_documents"]},
        "splits": {
            s: {k: v for k, v in info.items() if k in ("documents", "tokens", "rows")}
            for s, info in split_info.items()
        },
        "sources": len(opened),
        "stopped_at_max_tokens": stopped_early,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(run["tokens"] / seconds) if seconds else None,
        "files": [MANIFEST_NAME, *(e["file"] for info in split_info.values() for e in info["shards"])],
    }


def _token_content(tok: Any) -> str | None:
    return tok.get("content") if isinstance(tok, dict) else tok


def _raise_empty(sources: list[Source], opened: list[int], tally: _Tally) -> None:
    if not opened:
        raise VishwamError(
            "No input files: the sources hold no text or source-code files (data files such as .jsonl are "
            "read when named, globbed or matched with --include)."
        )
    read = sum(v["documents"] for v in tally.sources.values())
    dropped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in tally.dropped.items() if v)
    if not read:
        raise VishwamError(f"No documents: the {len(opened)} source file(s) are empty.")
    raise VishwamError(f"No documents left to convert: all {read} read were dropped ({dropped}).")


def _consume(batch, encoded, st: _Settings, packers, tally, opened, total, max_tokens):
    """Account and pack one encoded batch in document order; returns (tokens so far, stopped)."""
    fmt, pack, row_len = st.fmt, st.pack, st.row_len
    flat = encoded if fmt == "text" else None
    results = iter(range(len(encoded))) if flat is not None else iter(encoded)
    per_split: dict[str, list] = {s: [] for s in packers}
    stopped = False
    for it in batch:
        if it.opens:
            opened.append(it.source)
            continue
        if it.drop is not None:
            tally.drop(it)
            continue
        doc = next(results)
        if fmt == "preference":
            (c_ids, _), (r_ids, _) = doc
            if max(len(c_ids), len(r_ids)) > row_len:
                it.drop = "too_long"
                tally.drop(it)
                continue
            n = len(c_ids) + len(r_ids)
        elif flat is not None:
            n = int(flat.bounds[doc + 1] - flat.bounds[doc])
        else:
            n = len(doc[0])
        tally.keep(it, n)
        per_split[it.split].append(doc)
        total += n
        if max_tokens is not None and total >= max_tokens:
            stopped = True
            break
    for split, docs in per_split.items():
        if not docs:
            continue
        packer = packers[split]
        if flat is not None:
            b = flat.bounds
            if pack == "concat":
                # Runs of consecutive documents of one split are one slice of the flat array.
                runs: list[list[int]] = []
                for i in docs:
                    if runs and runs[-1][1] == i:
                        runs[-1][1] = i + 1
                    else:
                        runs.append([i, i + 1])
                parts = [flat.ids[b[lo] : b[hi]] for lo, hi in runs]
                ids = parts[0] if len(parts) == 1 else np.concatenate(parts)
                packer.add(ids, np.ones(len(ids), np.uint8))
            else:
                ones = np.ones(int((b[1:] - b[:-1]).max()), np.uint8)
                for i in docs:
                    packer.add_doc(flat.ids[b[i] : b[i + 1]], ones[: b[i + 1] - b[i]])
        elif fmt == "preference":
            for chosen, rejected in docs:
                packer.add_pair(chosen, rejected)
        elif pack == "concat":
            packer.add(np.concatenate([d[0] for d in docs]), np.concatenate([d[1] for d in docs]))
        else:
            for ids, mask in docs:
                packer.add_doc(ids, mask)
    return total, stopped


# ---- inspection -----------------------------------------------------------------------------------
def inspect_data(
    directory: str | Path, samples: int = 3, split: str = "train", chars: int = 400
) -> dict[str, Any]:
    """`vishwam convert inspect`: the manifest's summary, length histograms and decoded sample rows."""
    from vishwam_core.shards import read_rows
    from vishwam_core.tokenizer import Tokenizer

    directory = Path(directory)
    m = read_manifest(directory)
    tok = Tokenizer.from_dir(directory / m["tokenizer"]["file"])
    shown = []
    if split not in m["splits"]:
        raise VishwamError(f"{directory} has no split '{split}'; it has: {', '.join(m['splits'])}.")
    if samples > 0 and m["splits"][split]["rows"]:
        rows = read_rows(directory, split, 0, samples)
        for r in range(len(rows["input_ids"])):
            shown.append(_sample(tok, rows, r, chars))
    last = m["runs"][-1]
    return {
        "directory": str(directory),
        "format": m["format"],
        "pack": m["pack"],
        "seq_len": m["seq_len"],
        "output_format": m["output_format"],
        "columns": m["columns"],
        "tokenizer": {k: m["tokenizer"][k] for k in ("source", "sha256", "vocab_size")},
        "splits": {
            s: {k: v for k, v in info.items() if k != "shards"} | {"shards": len(info["shards"])}
            for s, info in m["splits"].items()
        },
        "runs": len(m["runs"]),
        "command": last["command"],
        "sources": sum(len(r["sources"]) for r in m["runs"]),
        "filters": {f["name"]: f["dropped_documents"] for f in last["filters"] if f["dropped_documents"]},
        "samples": shown,
        "sample_split": split,
    }


def _sample(tok, rows: dict[str, np.ndarray], r: int, chars: int) -> dict[str, Any]:
    ids = rows["input_ids"][r]
    mask = rows["loss_mask"][r]

    def clip(text: str) -> str:
        return text if len(text) <= chars else text[:chars] + f"... [{len(text) - chars} more characters]"

    sample: dict[str, Any] = {"row": r, "targets": int(mask[1:].sum())}
    if "segment_ids" in rows:
        seg = rows["segment_ids"][r]
        sample["documents"] = [clip(tok.decode(ids[seg == s].tolist())) for s in range(1, int(seg.max()) + 1)]
        sample["tokens"] = int((seg > 0).sum())
    else:
        sample["text"] = clip(tok.decode(ids.tolist()))
        sample["tokens"] = len(ids)
    if "rejected_input_ids" in rows:
        sample["rejected"] = clip(tok.decode(rows["rejected_input_ids"][r].tolist()))
    return sample


# ---- tokenizer training ---------------------------------------------------------------------------
def convert_tokenizer(
    sources: list[str],
    out: str | Path,
    vocab_size: int,
    *,
    text_field: str | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    on_error: str = "fail",
    min_frequency: int = 2,
    max_documents: int | None = None,
    force: bool = False,
    stdin_format: str | None = None,
) -> dict[str, Any]:
    """`vishwam convert tokenizer`: train a byte-level BPE on the sources' text; writes tokenizer.json and
    tokenizer_config.json (special tokens, ChatML chat template) atomically."""
    from vishwam_core.checkpoint import atomic_directory
    from vishwam_core.sources import check_specs
    from vishwam_core.tokenizer import train_bpe

    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not force:
        raise VishwamError(f"{out} already exists; pass --force to replace it.")
    check_specs(sources)
    counts = {"documents": 0, "characters": 0, "skipped": 0, "sources": 0}
    fields = {"text": text_field or "text"}

    def texts() -> Iterator[str]:
        for source in expand(sources, include, exclude, stdin_format or "text"):
            counts["sources"] += 1
            for doc in read_source(source, "text", fields, on_error):
                if doc.problem:
                    counts["skipped"] += 1
                    continue
                if doc.value.strip():
                    counts["documents"] += 1
                    counts["characters"] += len(doc.value)
                    yield doc.value
                    if max_documents and counts["documents"] >= max_documents:
                        return

    tok = train_bpe(texts(), vocab_size, min_frequency=min_frequency)
    if not counts["documents"]:
        raise VishwamError("No text to train on: the sources hold no non-empty documents.")
    with atomic_directory(out, force=force) as tmp:
        written = tok.save(tmp)
    return {
        "out": str(out),
        "vocab_size": tok.vocab_size,
        "requested_vocab_size": vocab_size,
        "special_tokens": {
            "bos": tok.config["bos_token"],
            "eos": tok.config["eos_token"],
            "pad": tok.config["pad_token"],
        },
        **counts,
        "seconds": round(time.perf_counter() - started, 3),
        "files": written,
    }
