"""A stand-in for `vishwam_core.shards` over numpy arrays, implementing the loader contract of the data
issue exactly (rows of seq_len + 1 tokens, endless epochs reshuffled by seed, per-process rows,
`state_dict()` / `load_state_dict()` that resume exactly). Used by the training tests; not part of src.

Also runnable as a script (`python tests/fake_shards.py SPEC.json`) so subprocess tests (sharding on fake
devices, kill -9 and resume) train on the same data: it calls `vishwam_core.train.train` and prints the
summary as JSON.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np


def markov_rows(n_rows: int, seq_len: int, vocab: int, seed: int = 0, branching: int = 2) -> np.ndarray:
    """(n_rows, seq_len + 1) int32 token rows from a fixed random chain with `branching` successors per
    token: learnable (entropy ln(branching)) yet not trivial."""
    rng = np.random.default_rng(seed)
    table = rng.integers(0, vocab, size=(vocab, branching))
    rows = np.empty((n_rows, seq_len + 1), np.int32)
    rows[:, 0] = rng.integers(0, vocab, n_rows)
    choice = rng.integers(0, branching, size=(n_rows, seq_len))
    for t in range(seq_len):
        rows[:, t + 1] = table[rows[:, t], choice[:, t]]
    return rows


class FakeLoader:
    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        batch_size: int,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        prefetch: int = 2,
        state: dict | None = None,
    ):
        self.arrays = arrays
        self.batch_size = batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self.rows = len(arrays["input_ids"])
        self.per_epoch = self.rows // (batch_size * process_count)
        assert self.per_epoch > 0, "fake split smaller than one global batch"
        self.epoch = 0
        self.index = 0
        if state is not None:
            self.load_state_dict(state)

    @property
    def seq_len(self) -> int:
        return self.arrays["input_ids"].shape[1] - 1

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "index": self.index,
            "seed": self.seed,
            "process_index": self.process_index,
            "process_count": self.process_count,
        }

    def load_state_dict(self, d: dict) -> None:
        # As the real loader: a state only resumes the process (and settings) that saved it.
        for key in ("seed", "process_index", "process_count"):
            assert d[key] == getattr(self, key), f"loader state of another {key}"
        self.epoch, self.index = int(d["epoch"]), int(d["index"])

    def __iter__(self):
        while True:
            if self.index >= self.per_epoch:
                self.epoch, self.index = self.epoch + 1, 0
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.rows)
            g = self.batch_size * self.process_count
            start = self.index * g + self.process_index * self.batch_size
            pick = order[start : start + self.batch_size]
            self.index += 1
            yield {k: v[pick] for k, v in self.arrays.items()}


class FakeSource:
    """Manifest + loader factory with the interface of `vishwam_core.train.DataSource`."""

    def __init__(self, splits: dict[str, dict[str, np.ndarray]], vocab_size: int | None = None):
        self.splits = splits
        seq_len = next(iter(splits.values()))["input_ids"].shape[1] - 1
        digest = hashlib.sha256()
        for name in sorted(splits):
            digest.update(np.ascontiguousarray(splits[name]["input_ids"]).tobytes())
        self.manifest = {"seq_len": seq_len, "vocab_size": vocab_size, "hash": digest.hexdigest()}
        self.tokenizer_path = None
        self.manifest_hash = self.manifest["hash"]

    def loader(self, split: str, **kw) -> FakeLoader:
        return FakeLoader(self.splits[split], **kw)


def markov_source(
    vocab: int = 256, seq_len: int = 32, train_rows: int = 256, val_rows: int = 64, seed: int = 0
) -> FakeSource:
    rows = markov_rows(train_rows + val_rows, seq_len, vocab, seed)
    return FakeSource(
        {"train": {"input_ids": rows[:train_rows]}, "val": {"input_ids": rows[train_rows:]}}, vocab_size=vocab
    )


def main(spec_path: str) -> None:
    """Run `train` on a markov_source described in SPEC.json: {"source": {...}, "flags": {...},
    "resume": bool, "force": bool, "cache": dir, "then": [{"flags": ..., "resume": ...}, ...]} (the
    `then` runs follow in the same process, e.g. a resume without starting jax again)."""
    spec = json.loads(open(spec_path).read())
    import jax

    if spec.get("cache"):
        jax.config.update("jax_compilation_cache_dir", spec["cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from vishwam_core.errors import VishwamError
    from vishwam_core.train import resolve_run_config, train

    for run in [spec, *spec.get("then", [])]:
        try:
            summary = train(
                resolve_run_config(run["flags"]),
                source=markov_source(**spec.get("source", {})),
                resume=run.get("resume", False),
                force=run.get("force", False),
                log=lambda m: print(m, file=sys.stderr, flush=True),
            )
        except VishwamError as e:
            print(f"Error: {e}", file=sys.stderr)
            sys.exit(1)
        print(json.dumps(summary, default=str), flush=True)
        if summary["signal"]:
            sys.exit(128 + summary["signal"])


if __name__ == "__main__":
    main(sys.argv[1])
