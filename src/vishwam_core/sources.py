"""Text sources: expand files, directories, globs and stdin into documents, one at a time.

A source is a plain text or source-code file (one document; files over `PIECE_BYTES` are cut at line
boundaries into documents of at most that size, so memory stays bounded), or a data file of records:
JSONL (`.jsonl`, `.ndjson`), JSON (`.json`, an array of objects, read whole), CSV/TSV or Parquet; `.gz`
is read through gzip. Directories are walked in sorted order, skipping hidden entries; by default only
text and source-code suffixes are taken from them (data files are read when named, globbed or matched
by `--include`). Every per-document problem (undecodable bytes, a JSONL line that does not parse, a
missing field) either raises a `VishwamError` naming the file and the line or byte offset, or, with
`on_error="skip"`, is yielded as a `Doc` with `problem` set so the caller can count it.

This module knows nothing of tokenizers or shards: it yields strings and dicts.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import glob
import gzip
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vishwam_core.errors import VishwamError

PIECE_BYTES = 8 << 20
DATA_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
DATA_KINDS[".parquet"] = "parquet"
# What a directory walk takes by default: text and source code. Data files (.jsonl, .csv, ...) in a
# source tree are usually fixtures, not corpora, so they are read only when asked for.
TEXT_SUFFIXES = frozenset(
    ".txt .md .rst .tex .org .adoc .py .pyi .pyx .c .h .cc .cpp .cxx .hpp .hh .cu .cuh .rs .go .java .kt "
    ".scala .swift .m .mm .js .jsx .ts .tsx .mjs .cjs .vue .rb .php .pl .pm .lua .jl .r .hs .ml .mli .ex "
    ".exs .erl .clj .cs .fs .dart .zig .nim .sh .bash .zsh .fish .ps1 .bat .sql .html .htm .css .scss "
    ".xml .yaml .yml .toml .ini .cfg .conf .proto .graphql .cmake .mk .dockerfile .el .vim .f90 .s .asm "
    ".v .sv .vhd".split()
)
FORMAT_FIELDS = {
    "text": ("text",),
    "chat": ("messages",),
    "instruct": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
}
_SKIP_HINT = "pass --on-error skip to skip such documents"


@dataclass
class Source:
    """One input stream and what was read from it (filled in while reading)."""

    path: str
    kind: str  # text | jsonl | json | csv | tsv | parquet
    gzip: bool = False
    bytes: int = 0
    sha256: str | None = None
    partial: bool = False  # stdin left unread after an early stop

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "kind": self.kind, "bytes": self.bytes, "sha256": self.sha256}
        if self.partial:
            d["partial"] = True
        return d


@dataclass
class Doc:
    """A document: a string (text format) or a dict of the format's fields; or a counted problem."""

    value: Any
    raw: bytes | None = None  # the document's bytes, when it came from a text file (hashing reuses them)
    problem: str | None = None  # decode_error | bad_record | missing_field, under on_error="skip"


def kind_of(path: str) -> tuple[str, bool]:
    name = path[:-3] if path.endswith(".gz") else path
    return DATA_KINDS.get(Path(name).suffix.lower(), "text"), path.endswith(".gz")


def check_specs(specs: list[str]) -> None:
    """Fail before any output exists if a named path is missing or a glob matches nothing."""
    if not specs:
        raise VishwamError("No sources given; pass files, directories, globs or '-' for stdin.")
    if specs.count("-") > 1:
        raise VishwamError("stdin ('-') can be read only once.")
    for spec in specs:
        if spec == "-" or os.path.exists(spec):
            continue
        if glob.has_magic(spec):
            if not any(True for _ in glob.iglob(spec, recursive=True)):
                raise VishwamError(f"The pattern {spec} matches no files.")
        else:
            raise VishwamError(f"{spec} does not exist.")


def expand(
    specs: list[str], include: list[str] | None = None, exclude: list[str] | None = None, stdin_kind="text"
) -> Iterator[Source]:
    """Sources in order: each spec as given; directories walked lazily in sorted order."""
    check_specs(specs)
    for spec in specs:
        if spec == "-":
            yield Source("-", stdin_kind)
        elif os.path.isdir(spec):
            yield from _walk(spec, include, exclude)
        elif os.path.exists(spec):
            yield Source(spec, *kind_of(spec))
        else:
            for match in sorted(glob.glob(spec, recursive=True)):
                if os.path.isdir(match):
                    yield from _walk(match, include, exclude)
                else:
                    yield Source(match, *kind_of(match))


def _walk(root: str, include: list[str] | None, exclude: list[str] | None) -> Iterator[Source]:
    def wanted(rel: str) -> bool:
        if exclude and any(fnmatch.fnmatchcase(rel, p) for p in exclude):
            return False
        if include:
            return any(fnmatch.fnmatchcase(rel, p) for p in include)
        name = rel[:-3] if rel.endswith(".gz") else rel
        return Path(name).suffix.lower() in TEXT_SUFFIXES

    def walk(directory: str, prefix: str) -> Iterator[Source]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if not (exclude and any(fnmatch.fnmatchcase(rel + "/", p) for p in exclude)):
                    yield from walk(entry.path, rel + "/")
            elif entry.is_file() and wanted(rel):
                yield Source(entry.path, *kind_of(entry.path))

    yield from walk(root, "")


# ---- reading ---------------------------------------------------------------------------------------
class _Hashing(io.RawIOBase):
    """A read-only stream that hashes and counts what passes through it (so sha256 costs no extra read)."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.sha.update(memoryview(buffer)[:n])
            self.count += n
        return n or 0

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def read_source(source: Source, fmt: str, fields: dict[str, str], on_error: str) -> Iterator[Doc]:
    """Documents of one source; fills `source.bytes` and `source.sha256` once the stream is done.

    `fields` maps the format's roles ("text", "messages", "prompt", ...) to record field names.
    """
    if source.kind == "parquet":
        yield from _read_parquet(source, fmt, fields, on_error)
        return
    if source.kind == "text" and fmt != "text":
        raise VishwamError(
            f"{source.path} is a plain text file; --format {fmt} reads records from JSONL, JSON, CSV or Parquet."
        )
    raw = sys.stdin.buffer if source.path == "-" else open(source.path, "rb")  # noqa: SIM115
    hashing = _Hashing(raw)
    buffered = io.BufferedReader(hashing, 1 << 20)
    stream: BinaryIO = gzip.GzipFile(fileobj=buffered, mode="rb") if source.gzip else buffered
    label = source.path if source.path != "-" else "stdin"
    if source.gzip:
        label += " (decompressed)"
    try:
        reader = {"text": _read_text, "jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv}
        read = reader["csv" if source.kind == "tsv" else source.kind]
        yield from read(stream, label, source, fmt, fields, on_error)
    except GeneratorExit:
        # The caller stopped early (--max-tokens): a file's hash still covers all of it; stdin may be
        # endless, so its hash is left out rather than made to depend on how far it was read.
        if raw is sys.stdin.buffer:
            source.partial = True
        else:
            hashing.drain()
        raise
    except (EOFError, gzip.BadGzipFile) as e:
        raise VishwamError(f"{source.path} is not a readable gzip file ({e}).") from None
    finally:
        source.bytes = hashing.count
        source.sha256 = None if source.partial else hashing.sha.hexdigest()
        if raw is not sys.stdin.buffer:
            raw.close()


def _problem(kind: str, message: str, on_error: str) -> Doc:
    if on_error != "skip":
        raise VishwamError(f"{message} ({_SKIP_HINT}).")
    return Doc(None, problem=kind)


def _cut(data: bytes) -> int:
    """Where to end a piece: after the last newline (ASCII, never inside a UTF-8 sequence); failing
    that, before a character that may be incomplete."""
    cut = data.rfind(b"\n") + 1
    if cut:
        return cut
    i = len(data) - 1
    while i > len(data) - 4 and data[i] & 0xC0 == 0x80:
        i -= 1
    return i if i > 0 and data[i] & 0x80 else len(data)


def _read_text(stream, label, source, fmt, fields, on_error) -> Iterator[Doc]:
    offset = 0
    carry = b""
    while True:
        want = PIECE_BYTES - len(carry)
        block = stream.read(want)
        data = carry + block
        at_end = len(block) < want
        if not data:
            if offset == 0:
                yield Doc("", raw=b"")  # an empty file is a document the "empty" filter counts
            return
        cut = len(data) if at_end else _cut(data)
        piece, carry = data[:cut], data[cut:]
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError as e:
            at = offset + e.start
            yield _problem("decode_error", f"{label}: invalid UTF-8 at byte {at}", on_error)
        else:
            yield Doc(text, raw=piece)
        offset += len(piece)
        if at_end and not carry:
            return


def _fields_of(
    record: Any, where: str, fmt: str, fields: dict[str, str], on_error: str, label: str
) -> Doc | None:
    """Pick the format's fields out of one record, or report what is wrong with it."""
    if not isinstance(record, dict):
        return _problem(
            "bad_record", f"{label} {where} is a JSON {type(record).__name__}, not an object", on_error
        )
    roles = FORMAT_FIELDS[fmt]
    optional = {"prompt"} if fmt == "preference" else set()
    value: dict[str, Any] = {}
    for role in roles:
        name = fields.get(role, role)
        if name not in record or record[name] is None:
            if role in optional:
                continue
            available = ", ".join(sorted(map(str, record))) or "none"
            flag = " (choose it with --text-field)" if role in ("text", "messages") else ""
            return _problem(
                "missing_field",
                f"{label} {where} has no field '{name}'; its fields are: {available}{flag}",
                on_error,
            )
        value[role] = record[name]
    if fmt == "text":
        text = value["text"]
        if not isinstance(text, str):
            return _problem(
                "bad_record",
                f"{label} {where}: field '{fields.get('text', 'text')}' is a {type(text).__name__}, not a string",
                on_error,
            )
        return Doc(text)
    bad = _check_record(fmt, value)
    if bad:
        return _problem("bad_record", f"{label} {where}: {bad}", on_error)
    return Doc(value)


def _check_messages(messages: Any) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    )


def _check_record(fmt: str, value: dict[str, Any]) -> str | None:
    if fmt == "chat":
        if not _check_messages(value["messages"]):
            return "'messages' must be a non-empty list of {role, content} objects with string values"
        return None
    if fmt == "instruct":
        if not all(isinstance(value[k], str) for k in ("prompt", "response")):
            return "'prompt' and 'response' must be strings"
        return None
    chosen, rejected = value["chosen"], value["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(value.get("prompt", ""), str):
            return "'prompt' must be a string"
        return None
    if _check_messages(chosen) and _check_messages(rejected):
        return None
    return "'chosen' and 'rejected' must both be strings or both be lists of {role, content} messages"


def _read_jsonl(stream, label, source, fmt, fields, on_error) -> Iterator[Doc]:
    offset = 0
    for lineno, line in enumerate(stream, 1):
        start, offset = offset, offset + len(line)
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            at = start + e.start
            yield _problem("decode_error", f"{label} {where}: invalid UTF-8 at byte {at}", on_error)
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            yield _problem(
                "bad_record",
                f"{label} {where} is not valid JSON ({e.msg} at column {e.colno})",
                on_error,
            )
            continue
        doc = _fields_of(record, where, fmt, fields, on_error, label)
        if doc is not None:
            yield doc


def _read_json(stream, label, source, fmt, fields, on_error) -> Iterator[Doc]:
    data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VishwamError(f"{label}: invalid UTF-8 at byte {e.start}.") from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise VishwamError(
            f"{label} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})."
        ) from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise VishwamError(f"{label} holds a JSON {type(records).__name__}; expected an array of objects.")
    for i, record in enumerate(records):
        doc = _fields_of(record, f"item {i}", fmt, fields, on_error, label)
        if doc is not None:
            yield doc


def _read_csv(stream, label, source, fmt, fields, on_error) -> Iterator[Doc]:
    # csv needs text; decoding with surrogateescape keeps bad bytes visible per record, so one bad
    # record can be skipped (or reported with its byte offset) without losing the parse.
    lines: list[tuple[int, bytes]] = []
    state = {"offset": 0}

    def text_lines() -> Iterator[str]:
        for raw in stream:
            lines.append((state["offset"], raw))
            state["offset"] += len(raw)
            yield raw.decode("utf-8", "surrogateescape")

    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(text_lines(), delimiter="\t" if source.kind == "tsv" else ",")
    header = next(reader, None)
    if header is None:
        return
    lines.clear()
    for number, row in enumerate(reader, 1):
        where = f"row {number}"  # records after the header; a quoted field may span lines
        if any(_has_surrogates(cell) for cell in row):
            at = _first_bad_byte(lines)
            yield _problem("decode_error", f"{label} {where}: invalid UTF-8 at byte {at}", on_error)
        else:
            doc = _fields_of(dict(zip(header, row, strict=False)), where, fmt, fields, on_error, label)
            if doc is not None:
                yield doc
        lines.clear()


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _first_bad_byte(lines: list[tuple[int, bytes]]) -> int:
    decoder = codecs.getincrementaldecoder("utf-8")()
    for offset, raw in lines:
        try:
            decoder.decode(raw)
        except UnicodeDecodeError as e:
            return offset + e.start
    return lines[0][0] if lines else 0


def _read_parquet(source: Source, fmt: str, fields: dict[str, str], on_error: str) -> Iterator[Doc]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vishwam_core.checkpoint import file_sha256

    try:
        pf = pq.ParquetFile(source.path)
    except (pa.ArrowInvalid, OSError) as e:
        raise VishwamError(f"{source.path} is not a readable Parquet file ({e}).") from None
    source.bytes = os.path.getsize(source.path)
    source.sha256 = file_sha256(source.path)  # up front: the caller may stop before the last row
    names = pf.schema_arrow.names
    roles = FORMAT_FIELDS[fmt]
    wanted = [fields.get(r, r) for r in roles if fields.get(r, r) in names]
    for role in roles:
        name = fields.get(role, role)
        if name not in names and not (fmt == "preference" and role == "prompt"):
            flag = " (choose it with --text-field)" if role in ("text", "messages") else ""
            raise VishwamError(
                f"{source.path} has no column '{name}'; its columns are: {', '.join(names)}{flag}."
            )
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=wanted):
        try:
            records = batch.to_pylist()
        except UnicodeDecodeError as e:
            raise VishwamError(
                f"{source.path}: invalid UTF-8 in rows {row}..{row + len(batch)} ({e})."
            ) from None
        for record in records:
            for key, value in record.items():
                if isinstance(value, bytes):
                    try:
                        record[key] = value.decode("utf-8")
                    except UnicodeDecodeError as e:
                        record = None
                        yield _problem(
                            "decode_error",
                            f"{source.path} row {row}: invalid UTF-8 in column '{key}' at byte {e.start}",
                            on_error,
                            f"row {row}",
                        )
                        break
            if record is not None:
                doc = _fields_of(record, f"row {row}", fmt, fields, on_error, source.path)
                if doc is not None:
                    yield doc
            row += 1
