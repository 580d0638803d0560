"""Token shards on disk and the resumable loader every training phase reads them with.

A shard directory holds `manifest.json` and, per split, `train-00000-of-000NN.parquet` (zstd, one list
column per field, row groups of `row_group_rows` rows sized for streaming) or the same rows as
`.safetensors` token shards (one 2-D tensor per field). Every row holds `seq_len + 1` tokens, so
`inputs = row[:-1]` and `targets = row[1:]`. Columns:

- `input_ids`   int32 (uint16 on disk with `--id-dtype uint16`), always;
- `loss_mask`   uint8, 1 where the token is a training target (0 on padding, prompts, user turns);
- `segment_ids` int32 (1, 2, ... per document in the row, 0 on padding) and `positions` int32 (0-based
  within each document), where rows were packed document-aware;
- `rejected_input_ids`, `rejected_loss_mask` for preference pairs (`input_ids` holds the chosen side).

    loader = ShardLoader(directory, split="train", batch_size=B, seed=0, process_index=0,
                         process_count=1, prefetch=2, state=None)
    batch = next(iter(loader))   # {"input_ids": (B, seq_len + 1) int32, "loss_mask": ..., ...}
    loader.state_dict()          # small JSON-able dict; ShardLoader(..., state=d) resumes exactly

Iteration never ends: epoch after epoch, each reshuffled from (seed, epoch). The shuffle is two-level so
memory stays bounded: row groups are permuted, then rows are permuted within windows of
`shuffle_window` consecutive row groups of that order. Process `p` of `P` takes positions p, p+P, ...
of each epoch's order, so processes see disjoint rows whose union is the split; every process decodes
every window and keeps its share, which keeps the split exact for any P at the cost of reading the whole
split on each host. The state is (epoch, rows this process has consumed in that epoch).

This module knows nothing of models or tokenizers: it moves integer rows between files and numpy.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vishwam_core.errors import VishwamError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
STATE_VERSION = 1
COLUMN_DTYPES = {
    "input_ids": np.int32,
    "loss_mask": np.uint8,
    "segment_ids": np.int32,
    "positions": np.int32,
    "rejected_input_ids": np.int32,
    "rejected_loss_mask": np.uint8,
}
OUTPUT_FORMATS = ("parquet", "safetensors")
_SUFFIX = {"parquet": ".parquet", "safetensors": ".safetensors"}


def shard_name(split: str, index: int, count: int, output_format: str) -> str:
    return f"{split}-{index:05d}-of-{count:05d}{_SUFFIX[output_format]}"


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a shard directory, checked for a schema this version reads."""
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        if not Path(directory).exists():
            raise VishwamError(f"{directory} does not exist.")
        raise VishwamError(
            f"{directory} has no {MANIFEST_NAME}; it is not a finished vishwam shard directory."
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VishwamError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}).") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise VishwamError(
            f"{path} has schema version {manifest.get('schema_version')}; this vishwam reads version {SCHEMA_VERSION}."
        )
    return manifest


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (Path(directory) / MANIFEST_NAME).write_text(text)


# ---- writing ---------------------------------------------------------------------------------------
class ShardWriter:
    """Rows in, shard files out: fixed-size row groups, a new file every `shard_rows` rows.

    Files are written under temporary names and given their final `-of-NN` names by `close()`, which
    returns the manifest entries (file, rows, tokens, bytes, sha256, row_groups).
    """

    def __init__(
        self,
        directory: Path,
        split: str,
        columns: dict[str, Any],
        row_len: int,
        row_group_rows: int,
        shard_rows: int,
        output_format: str = "parquet",
        first_index: int = 0,
    ):
        if output_format not in OUTPUT_FORMATS:
            raise VishwamError(
                f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, not '{output_format}'."
            )
        self.directory = Path(directory)
        self.split = split
        self.columns = {name: np.dtype(dt) for name, dt in columns.items()}
        self.row_len = row_len
        self.row_group_rows = max(1, min(row_group_rows, shard_rows))
        self.shard_rows = shard_rows
        self.output_format = output_format
        self.first_index = first_index
        self.shards: list[dict[str, Any]] = []
        self._pending: dict[str, list[np.ndarray]] = {name: [] for name in self.columns}
        self._pending_tokens: list[np.ndarray] = []
        self._pending_rows = 0
        self._file = None  # the open ParquetWriter, or the list of row groups of a safetensors shard
        self._current: dict[str, Any] | None = None

    def write(self, rows: dict[str, np.ndarray], tokens: np.ndarray) -> None:
        """Append rows: each column (n, row_len); `tokens` (n,) counts the non-padding tokens per row."""
        n = len(tokens)
        if n == 0:
            return
        for name, dt in self.columns.items():
            self._pending[name].append(np.asarray(rows[name], dtype=dt))
        self._pending_tokens.append(np.asarray(tokens, dtype=np.int64))
        self._pending_rows += n
        while self._pending_rows >= self._next_group_size():
            self._write_group(self._take(self._next_group_size()))

    def _next_group_size(self) -> int:
        done = self._current["rows"] if self._current else 0
        return min(self.row_group_rows, self.shard_rows - done)

    def _take(self, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        def split_off(parts: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
            whole = parts[0] if len(parts) == 1 else np.concatenate(parts)
            return whole[:n], ([whole[n:]] if len(whole) > n else [])

        group = {}
        for name in self.columns:
            group[name], self._pending[name] = split_off(self._pending[name])
        tokens, self._pending_tokens = split_off(self._pending_tokens)
        self._pending_rows -= n
        return group, tokens

    def _write_group(self, group_and_tokens: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
        group, tokens = group_and_tokens
        n = len(tokens)
        if self._current is None:
            index = self.first_index + len(self.shards)
            self._current = {
                "tmp": self.directory / f".{self.split}-{index:05d}.partial",
                "rows": 0,
                "tokens": 0,
                "row_groups": [],
            }
            self._file = self._open(self._current["tmp"]) if self.output_format == "parquet" else []
        if self.output_format == "parquet":
            self._file.write_table(_arrow_table(group, self.columns), row_group_size=n)
        else:
            self._file.append(group)
        self._current["rows"] += n
        self._current["tokens"] += int(tokens.sum())
        self._current["row_groups"].append(n)
        if self._current["rows"] >= self.shard_rows:
            self._finish_shard()

    def _open(self, path: Path):
        import pyarrow.parquet as pq

        schema = _arrow_table(
            {n: np.zeros((0, self.row_len), dt) for n, dt in self.columns.items()}, self.columns
        )
        # No dictionary encoding (token ids are not categorical) and no statistics (nobody filters on
        # them); zstd shrinks the runs in masks and positions to almost nothing.
        return pq.ParquetWriter(
            str(path), schema.schema, compression="zstd", use_dictionary=False, write_statistics=False
        )

    def _finish_shard(self) -> None:
        cur = self._current
        if self.output_format == "parquet":
            self._file.close()
        else:
            from safetensors.numpy import save_file

            tensors = {
                name: np.ascontiguousarray(np.concatenate([g[name] for g in self._file]))
                for name in self.columns
            }
            save_file(tensors, str(cur["tmp"]))
        self.shards.append(cur)
        self._current = None
        self._file = None

    def close(self) -> list[dict[str, Any]]:
        """Flush the last partial row group and name the files `{split}-{i}-of-{first_index + count}`."""
        from vishwam_core.checkpoint import file_sha256

        while self._pending_rows:
            self._write_group(self._take(min(self._pending_rows, self._next_group_size())))
        if self._current is not None:
            self._finish_shard()
        total = self.first_index + len(self.shards)
        entries = []
        for i, cur in enumerate(self.shards):
            name = shard_name(self.split, self.first_index + i, total, self.output_format)
            os.rename(cur["tmp"], self.directory / name)
            entries.append(
                {
                    "file": name,
                    "rows": cur["rows"],
                    "tokens": cur["tokens"],
                    "bytes": (self.directory / name).stat().st_size,
                    "sha256": file_sha256(self.directory / name),
                    "row_groups": cur["row_groups"],
                }
            )
        return entries

    def abort(self) -> None:
        if self.output_format == "parquet" and self._file is not None:
            self._file.close()


# numpy <-> arrow through raw buffers: zero-copy, and it keeps pyarrow from importing pandas (~1 s).
def _arrow_of(values: np.ndarray):
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _numpy_of(array, dtype) -> np.ndarray:
    if array.null_count:
        raise VishwamError("A shard column holds nulls; it was not written by vishwam.")
    dtype = np.dtype(dtype)
    return np.frombuffer(array.buffers()[1], dtype, count=len(array), offset=array.offset * dtype.itemsize)


def _arrow_table(group: dict[str, np.ndarray], columns: dict[str, np.dtype]):
    import pyarrow as pa

    arrays = []
    for name, dt in columns.items():
        rows = np.ascontiguousarray(group[name], dtype=dt)
        n, length = rows.shape
        offsets = _arrow_of(np.arange(0, (n + 1) * length, length, dtype=np.int32))
        arrays.append(pa.ListArray.from_arrays(offsets, _arrow_of(rows.reshape(-1))))
    return pa.Table.from_arrays(arrays, names=list(columns))


# ---- reading ---------------------------------------------------------------------------------------
class _Chunks:
    """Random access to the row groups of one split: chunk i -> {column: (rows, row_len) array}."""

    def __init__(self, directory: Path, manifest: dict[str, Any], split: str):
        splits = manifest.get("splits", {})
        if split not in splits:
            raise VishwamError(f"{directory} has no split '{split}'; it has: {', '.join(splits) or 'none'}.")
        self.directory = directory
        self.output_format = manifest["output_format"]
        self.row_len = int(manifest["seq_len"]) + 1
        self.columns = list(manifest["columns"])
        self.disk_dtypes = dict(manifest["columns"])
        self.shards = splits[split]["shards"]
        self.index: list[tuple[int, int, int, int]] = []  # (shard, row group, first row, rows)
        for s, shard in enumerate(self.shards):
            path = directory / shard["file"]
            if not path.exists():
                raise VishwamError(f"{path} is missing; the shard directory is incomplete.")
            start = 0
            for g, rows in enumerate(shard["row_groups"]):
                self.index.append((s, g, start, rows))
                start += rows
        self.sizes = np.array([c[3] for c in self.index], dtype=np.int64)
        self._handles: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _handle(self, s: int):
        with self._lock:
            if s not in self._handles:
                path = self.directory / self.shards[s]["file"]
                if self.output_format == "parquet":
                    import pyarrow.parquet as pq

                    handle = pq.ParquetFile(str(path))
                    if handle.metadata.num_rows != self.shards[s]["rows"]:
                        raise VishwamError(
                            f"{path} holds {handle.metadata.num_rows} rows but the manifest says "
                            f"{self.shards[s]['rows']}; the shard was changed after conversion."
                        )
                else:
                    from safetensors import safe_open

                    handle = safe_open(str(path), framework="numpy")
                self._handles[s] = handle
            return self._handles[s]

    def read(self, i: int) -> dict[str, np.ndarray]:
        s, g, start, rows = self.index[i]
        handle = self._handle(s)
        out = {}
        if self.output_format == "parquet":
            table = handle.read_row_group(g, columns=self.columns)
            for name in self.columns:
                column = table.column(name).combine_chunks()
                values = _numpy_of(column.flatten(), self.disk_dtypes[name])
                if values.size != rows * self.row_len:
                    raise VishwamError(
                        f"{self.shards[s]['file']} row group {g} does not hold rows of {self.row_len} tokens."
                    )
                out[name] = values.reshape(rows, self.row_len)
        else:
            for name in self.columns:
                out[name] = handle.get_slice(name)[start : start + rows]
        return {name: _widen(name, arr) for name, arr in out.items()}


def _widen(name: str, arr: np.ndarray) -> np.ndarray:
    return arr.astype(COLUMN_DTYPES.get(name, arr.dtype), copy=False)


def read_rows(
    directory: str | Path, split: str = "train", start: int = 0, count: int = 1
) -> dict[str, np.ndarray]:
    """Rows [start, start + count) of a split in file order (no shuffling): for inspection and tests."""
    directory = Path(directory)
    chunks = _Chunks(directory, read_manifest(directory), split)
    total = int(chunks.sizes.sum())
    stop = min(start + count, total)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in chunks.columns}
    first = 0
    for i, size in enumerate(chunks.sizes):
        lo, hi = max(start, first), min(stop, first + size)
        if lo < hi:
            chunk = chunks.read(i)
            for name in chunks.columns:
                parts[name].append(chunk[name][lo - first : hi - first])
        first += size
    return {
        name: np.concatenate(p) if p else np.zeros((0, chunks.row_len), COLUMN_DTYPES.get(name, np.int32))
        for name, p in parts.items()
    }


class ShardLoader:
    """Endless, seeded, resumable, process-sharded (B, seq_len + 1) batches from a shard directory."""

    def __init__(
        self,
        directory: str | Path,
        split: str = "train",
        batch_size: int = 8,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        prefetch: int = 2,
        state: dict[str, Any] | None = None,
        shuffle: bool = True,
        shuffle_window: int = 8,
    ):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.split = split
        self._chunks = _Chunks(self.directory, self.manifest, split)
        self.seq_len = int(self.manifest["seq_len"])
        self.columns = list(self._chunks.columns)
        if batch_size < 1:
            raise VishwamError(f"batch_size must be at least 1, not {batch_size}.")
        if not 0 <= process_index < process_count:
            raise VishwamError(f"process_index {process_index} is not in [0, process_count={process_count}).")
        self.batch_size = batch_size
        self.seed = int(seed)
        self.process_index = process_index
        self.process_count = process_count
        self.prefetch = max(0, int(prefetch))
        self.shuffle = shuffle
        self.shuffle_window = max(1, int(shuffle_window))
        self.num_rows = int(self._chunks.sizes.sum())
        self.rows_per_epoch = (self.num_rows - process_index + process_count - 1) // process_count
        if self.rows_per_epoch == 0:
            raise VishwamError(
                f"Split '{split}' of {self.directory} has {self.num_rows} rows, too few for "
                f"{process_count} processes to get one each."
            )
        self._consumed = 0  # rows handed to the caller since epoch 0 began
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._sync: Iterator[dict[str, np.ndarray]] | None = None
        if state is not None:
            self.load_state_dict(state)

    # ---- state -------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch the next batch starts in."""
        return self._consumed // self.rows_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "split": self.split,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "shuffle_window": self.shuffle_window,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "num_rows": self.num_rows,
            "epoch": self.epoch,
            "offset": self._consumed % self.rows_per_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise VishwamError(f"Loader state version {state.get('version')} is not {STATE_VERSION}.")
        for key in (
            "split",
            "seed",
            "shuffle",
            "shuffle_window",
            "process_index",
            "process_count",
            "num_rows",
        ):
            mine = getattr(self, key)
            if state.get(key) != mine:
                raise VishwamError(
                    f"The loader state was saved with {key}={state.get(key)!r} but this loader has {key}={mine!r}; "
                    "resume with the same data and settings."
                )
        self._halt()
        self._consumed = int(state["epoch"]) * self.rows_per_epoch + int(state["offset"])

    # ---- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> ShardLoader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.prefetch == 0:
            if self._sync is None:
                self._sync = self._stream().batches(self._consumed)
            batch = next(self._sync)
        else:
            if self._thread is None:
                self._start()
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._thread = None
                raise item
            batch = item
        self._consumed += self.batch_size
        return batch

    def _stream(self) -> _Stream:
        return _Stream(
            self._chunks,
            self.columns,
            self.batch_size,
            self.seed,
            self.shuffle,
            self.shuffle_window,
            self.process_count,
            self.process_index,
            self.rows_per_epoch,
        )

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        stop, q, batches = self._stop, self._queue, self._stream().batches(self._consumed)

        def produce() -> None:
            try:
                for batch in batches:
                    while not stop.is_set():
                        try:
                            q.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as e:  # handed to the consumer, which raises it
                q.put(e)

        self._thread = threading.Thread(target=produce, name="vishwam-shard-prefetch", daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._sync = None

    def close(self) -> None:
        self._halt()

    def __enter__(self) -> ShardLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


class _Stream:
    """The order of one loader's rows, apart from the loader so the prefetch thread keeps no loader alive."""

    def __init__(
        self, chunks: _Chunks, columns, batch_size, seed, shuffle, shuffle_window, P, p, rows_per_epoch
    ):
        self._chunks = chunks
        self.columns = columns
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_window = shuffle_window
        self.process_count = P
        self.process_index = p
        self.rows_per_epoch = rows_per_epoch

    def _windows(self, epoch: int) -> list[np.ndarray]:
        """The chunk indices of each window of this epoch's order."""
        n = len(self._chunks.sizes)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return [order[i : i + self.shuffle_window] for i in range(0, n, self.shuffle_window)]

    def _rows(self, start: int) -> Iterator[dict[str, np.ndarray]]:
        """This process's rows from its `start`-th onward, as consecutive arrays, forever."""
        P, p = self.process_count, self.process_index
        epoch, offset = divmod(start, self.rows_per_epoch)
        while True:
            first = 0  # global position of the window's first row in this epoch's order
            for w, chunk_ids in enumerate(self._windows(epoch)):
                size = int(self._chunks.sizes[chunk_ids].sum())
                # Positions g in [first, first + size) with g % P == p and (g - p) // P >= offset.
                lo = max(first, offset * P + p)
                lo += (p - lo) % P
                if lo < first + size:
                    chunks = [self._chunks.read(int(i)) for i in chunk_ids]
                    window = {c: np.concatenate([ch[c] for ch in chunks]) for c in self.columns}
                    if self.shuffle:
                        perm = np.random.default_rng([self.seed, epoch, w]).permutation(size)
                    else:
                        perm = np.arange(size)
                    take = perm[np.arange(lo, first + size, P) - first]
                    yield {c: window[c][take] for c in self.columns}
                first += size
            epoch, offset = epoch + 1, 0

    def batches(self, start: int) -> Iterator[dict[str, np.ndarray]]:
        B = self.batch_size
        parts: dict[str, list[np.ndarray]] = {c: [] for c in self.columns}
        have = 0
        for rows in self._rows(start):
            for c in self.columns:
                parts[c].append(rows[c])
            have += len(rows[self.columns[0]])
            while have >= B:
                merged = {
                    c: np.concatenate(parts[c]) if len(parts[c]) > 1 else parts[c][0] for c in self.columns
                }
                yield {c: np.ascontiguousarray(merged[c][:B]) for c in self.columns}
                parts = {c: [merged[c][B:]] for c in self.columns}
                have -= B
