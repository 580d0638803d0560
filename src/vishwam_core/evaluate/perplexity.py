"""Perplexity and bits per byte of a model on text files or on a shard directory's split.

- Text (files, directories of them, or JSONL with a `text` field): each file or record is a document,
  tokenized on the fly with the model's tokenizer and scored with lm-eval's disjoint rolling windows
  (`loglikelihood_rolling`: every token predicted exactly once, the first from the BOS/EOS prefix,
  windows of `context` tokens), as lm-eval's wikitext task does.
- Shards (a `vishwam convert data` directory): each row is scored as training scores it (inputs
  row[:-1], targets row[1:], `loss_mask` weighting, `segment_ids`/`positions` keeping packed documents
  apart), so the number is the validation loss training would report. The shards must have been
  tokenized with this model's tokenizer (checked by sha256).

Reported: natural-log NLL summed, tokens, bytes, token perplexity exp(NLL / tokens), bits per byte
NLL / (bytes ln 2), byte perplexity, and for text word perplexity (words split on whitespace, as
lm-eval). Bytes are those of the text the scored tokens stand for: the document's UTF-8 for text; for
shards the byte-level BPE bytes of each target token (special tokens such as EOS count 0 bytes).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from vishwam_core.errors import VishwamError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".json", ".jsonl", ".tex", ".html", ".csv")


def summarize(nll: float, tokens: int, n_bytes: int, words: int | None = None) -> dict[str, float | int]:
    out: dict[str, Any] = {
        "nll": nll,
        "tokens": tokens,
        "bytes": n_bytes,
        "token_perplexity": math.exp(nll / tokens) if tokens else float("nan"),
        "bits_per_byte": nll / (n_bytes * math.log(2)) if n_bytes else float("nan"),
        "byte_perplexity": math.exp(nll / n_bytes) if n_bytes else float("nan"),
    }
    if words is not None:
        out["words"] = words
        out["word_perplexity"] = math.exp(nll / words) if words else float("nan")
    return out


def is_shard_dir(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").exists()


def read_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """Documents of a text file, a JSONL file (one `text_field` per line) or a directory of them."""
    from vishwam_core.evaluate.tasks import read_jsonl

    path = Path(path)
    if not path.exists():
        raise VishwamError(f"{path} does not exist.")
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    )
    docs = []
    for f in files:
        if f.name.endswith((".jsonl", ".jsonl.gz")):
            for n, rec in read_jsonl(f):
                if text_field not in rec:
                    raise VishwamError(f"{f} line {n}: no '{text_field}' field to measure perplexity on.")
                docs.append(str(rec[text_field]))
        else:
            try:
                docs.append(f.read_text(encoding="utf-8"))
            except UnicodeDecodeError as e:
                raise VishwamError(f"{f} is not UTF-8 text (byte {e.start}).") from None
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise VishwamError(f"{path} holds no text to measure perplexity on.")
    return docs


def text_perplexity(lm, docs: list[str], context: int | None = None) -> dict[str, Any]:
    """Rolling-window perplexity of documents through a `VishwamLM` (its scorer and tokenizer)."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    context = context or min(lm.max_length, 2048)
    pairs, owner = [], []
    tokens = 0
    for i, doc in enumerate(docs):
        ids = lm.tok_encode(doc)
        tokens += len(ids)
        windows = get_rolling_token_windows(
            token_list=ids, prefix_token=lm.prefix_token_id, max_seq_len=context, context_len=1
        )
        for ctx, cont in map(make_disjoint_window, windows):
            pairs.append((ctx, cont))
            owner.append(i)
    scored = lm.scorer.score(pairs)
    nll = -sum(lp for lp, _ in scored)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    words = sum(len(re.split(r"\s+", d)) for d in docs)
    return {"documents": len(docs), "context": context, **summarize(nll, tokens, n_bytes, words)}


def _token_bytes(tokenizer) -> np.ndarray | None:
    """Bytes each id stands for, where the tokenizer is byte-level BPE (one character of a token's
    string per byte); special tokens count 0. None for other tokenizers."""
    spec = json.loads(tokenizer.backend.to_str())
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        return None
    vocab_size = tokenizer.vocab_size
    lengths = np.zeros((vocab_size,), np.int64)
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    for i in range(vocab_size):
        piece = tokenizer.backend.id_to_token(i)
        lengths[i] = 0 if (piece is None or i in special) else len(piece)
    return lengths


def shard_perplexity(
    model,
    tokenizer,
    directory: str | Path,
    tokenizer_file: str | Path | None = None,
    split: str = "val",
    max_rows: int | None = None,
    logit_tokens: int = 2048,
) -> dict[str, Any]:
    """Training's validation loss, as perplexity and bits per byte, over a shard directory's split.

    `tokenizer_file` (the model's tokenizer.json) is checked against the shards' by sha256."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vishwam_core.checkpoint import file_sha256
    from vishwam_core.shards import read_manifest, read_rows

    directory = Path(directory)
    manifest = read_manifest(directory)
    if split not in manifest["splits"]:
        raise VishwamError(f"{directory} has no '{split}' split; it has: {', '.join(manifest['splits'])}.")
    shard_sha = manifest["tokenizer"]["sha256"]
    if tokenizer_file is not None and file_sha256(tokenizer_file) != shard_sha:
        raise VishwamError(
            f"{directory} was tokenized with a different tokenizer (sha256 {shard_sha[:12]}...) than "
            f"{tokenizer_file}; perplexity needs shards made with the model's own tokenizer."
        )
    rows_total = int(manifest["splits"][split]["rows"])
    if max_rows is not None:
        rows_total = min(rows_total, max_rows)
    if rows_total == 0:
        raise VishwamError(f"{directory} split '{split}' has no rows.")
    seq_len = int(manifest["seq_len"])
    batch = max(1, logit_tokens // seq_len)
    graphdef, state = nnx.split(model)

    @jax.jit
    def target_logprobs(state, tokens, positions, segments):
        m = nnx.merge(graphdef, state)
        logits, _ = m(tokens[:, :-1], positions=positions, segment_ids=segments)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # (B, T)

    byte_len = _token_bytes(tokenizer)
    nll, tokens, n_bytes = 0.0, 0, 0
    for start in range(0, rows_total, batch):
        rows = read_rows(directory, split, start, min(batch, rows_total - start))
        ids = rows["input_ids"].astype(np.int32)
        n = ids.shape[0]
        pad = batch - n  # a fixed batch shape: one compiled program for the whole split
        ids = np.pad(ids, ((0, pad), (0, 0)))
        mask = np.pad(rows["loss_mask"][:, 1:].astype(bool), ((0, pad), (0, 0)))
        if "segment_ids" in rows:
            segments = np.pad(rows["segment_ids"][:, :-1], ((0, pad), (0, 0)))
            positions = np.pad(rows["positions"][:, :-1], ((0, pad), (0, 0)))
        else:
            segments = None
            positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), ids[:, :-1].shape)
        lp = np.asarray(target_logprobs(state, ids, positions, segments), np.float64)
        nll -= float(lp[mask].sum())
        tokens += int(mask.sum())
        targets = ids[:, 1:][mask]
        if byte_len is not None:
            n_bytes += int(byte_len[targets].sum())
        else:
            n_bytes += len(tokenizer.decode(targets.tolist(), skip_special_tokens=True).encode("utf-8"))
    return {"rows": rows_total, "split": split, "seq_len": seq_len, **summarize(nll, tokens, n_bytes)}
