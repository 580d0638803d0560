"""The shard loader: seeded per-epoch shuffles, exact resume from a small state, disjoint process shares,
and Parquet and safetensors shards read alike."""

import json

import numpy as np
import pytest

from vishwam_core.data import convert_data
from vishwam_core.errors import VishwamError
from vishwam_core.shards import ShardLoader, read_manifest, read_rows

SEQ_LEN = 15


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    docs = [
        f"{i}: " + " ".join("".join(rng.choice(letters, 5)) for _ in range(i % 9 + 2)) for i in range(300)
    ]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def _convert(corpus, bpe_dir, out, **kw):
    opts = {"seq_len": SEQ_LEN, "shard_rows": 16, "val_fraction": 0.0, **kw}
    convert_data([str(corpus)], bpe_dir, out, **opts)
    return out


@pytest.fixture(scope="module", params=["parquet", "safetensors"])
def shards(request, corpus, bpe_dir, tmp_path_factory):
    return _convert(
        corpus, bpe_dir, tmp_path_factory.mktemp(request.param) / "shards", output_format=request.param
    )


def all_rows(directory) -> np.ndarray:
    n = read_manifest(directory)["splits"]["train"]["rows"]
    return read_rows(directory, "train", 0, n)["input_ids"]


def take_rows(loader: ShardLoader, n: int) -> np.ndarray:
    """The next n rows of a loader, whole batches at a time."""
    batches = [next(loader)["input_ids"] for _ in range(-(-n // loader.batch_size))]
    return np.concatenate(batches)[:n]


def as_set(rows: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in rows}


def test_the_fixture_rows_are_distinct_and_span_many_row_groups(shards):
    rows = all_rows(shards)
    assert len(as_set(rows)) == len(rows) > 200  # so row identity below is well defined
    m = read_manifest(shards)
    assert sum(len(s["row_groups"]) for s in m["splits"]["train"]["shards"]) > 3 * 8  # several windows


def test_batches_have_the_contracted_shapes_and_dtypes(shards):
    with ShardLoader(shards, batch_size=4) as loader:
        batch = next(iter(loader))
        assert loader.seq_len == SEQ_LEN
    assert set(batch) == {"input_ids", "loss_mask"}
    assert batch["input_ids"].shape == (4, SEQ_LEN + 1) and batch["input_ids"].dtype == np.int32
    assert batch["loss_mask"].shape == (4, SEQ_LEN + 1) and batch["loss_mask"].dtype == np.uint8


def test_each_epoch_is_a_reshuffled_permutation_of_the_split(shards):
    rows = all_rows(shards)
    with ShardLoader(shards, batch_size=1, seed=3) as loader:
        epoch0 = take_rows(loader, len(rows))
        assert loader.epoch == 1
        epoch1 = take_rows(loader, len(rows))
    assert as_set(epoch0) == as_set(epoch1) == as_set(rows)
    assert not np.array_equal(epoch0, rows) and not np.array_equal(epoch0, epoch1)


def test_the_same_seed_gives_identical_batches_and_another_seed_does_not(shards):
    def first(seed, n=12):
        with ShardLoader(shards, batch_size=5, seed=seed) as loader:
            return [next(loader) for _ in range(n)]

    a, b, c = first(0), first(0), first(1)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x["input_ids"], z["input_ids"]) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resuming_from_the_state_gives_exactly_the_uninterrupted_batches(shards, prefetch):
    B = 7
    with ShardLoader(shards, batch_size=B, seed=5, prefetch=prefetch) as loader:
        per_epoch = loader.rows_per_epoch // B
        total = 2 * per_epoch + 5  # runs through two epoch boundaries
        uninterrupted = [next(loader)["input_ids"] for _ in range(total)]
    for k in (3, per_epoch - 1, per_epoch, per_epoch + 1):
        with ShardLoader(shards, batch_size=B, seed=5, prefetch=prefetch) as first:
            for _ in range(k):
                next(first)
            state = json.loads(json.dumps(first.state_dict()))  # it must survive a JSON checkpoint
            next(first)  # running on after saving must not change what was saved
        assert len(json.dumps(state)) < 400
        with ShardLoader(shards, batch_size=B, seed=5, prefetch=prefetch, state=state) as resumed:
            rest = [next(resumed)["input_ids"] for _ in range(total - k)]
        for i, (x, y) in enumerate(zip(rest, uninterrupted[k:], strict=True)):
            np.testing.assert_array_equal(x, y, err_msg=f"k={k}, batch {k + i}")


def test_load_state_dict_rewinds_a_running_loader(shards):
    with ShardLoader(shards, batch_size=3, seed=2) as loader:
        for _ in range(4):
            next(loader)
        state = loader.state_dict()
        ahead = [next(loader)["input_ids"] for _ in range(6)]
        loader.load_state_dict(state)
        again = [next(loader)["input_ids"] for _ in range(6)]
    for x, y in zip(ahead, again, strict=True):
        np.testing.assert_array_equal(x, y)


def test_four_processes_see_disjoint_rows_whose_union_is_the_dataset(shards):
    rows = all_rows(shards)
    seen = []
    for p in range(4):
        with ShardLoader(shards, batch_size=6, seed=9, process_index=p, process_count=4) as loader:
            assert abs(loader.rows_per_epoch - len(rows) / 4) < 1
            seen.append(as_set(take_rows(loader, loader.rows_per_epoch)))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not seen[i] & seen[j], (i, j)
    assert set().union(*seen) == as_set(rows)
    assert sum(map(len, seen)) == len(rows)


def test_parquet_and_safetensors_shards_give_the_same_batches(corpus, bpe_dir, tmp_path):
    pq = _convert(corpus, bpe_dir, tmp_path / "pq", output_format="parquet")
    st = _convert(corpus, bpe_dir, tmp_path / "st", output_format="safetensors")
    with ShardLoader(pq, batch_size=8, seed=4) as a, ShardLoader(st, batch_size=8, seed=4) as b:
        for _ in range(10):
            x, y = next(a), next(b)
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])


def test_document_packed_shards_yield_segment_ids_and_positions(corpus, bpe_dir, tmp_path):
    out = _convert(corpus, bpe_dir, tmp_path / "docs", pack="documents")
    with ShardLoader(out, batch_size=4) as loader:
        batch = next(loader)
    assert set(batch) == {"input_ids", "loss_mask", "segment_ids", "positions"}
    for key in ("segment_ids", "positions"):
        assert batch[key].dtype == np.int32 and batch[key].shape == (4, SEQ_LEN + 1)
    seg, pos = batch["segment_ids"], batch["positions"]
    starts = np.concatenate([np.ones((4, 1), bool), seg[:, 1:] != seg[:, :-1]], axis=1)
    assert np.all(pos[starts & (seg > 0)] == 0)
    assert np.all(batch["loss_mask"][starts] == 0)  # no target across a document boundary


def test_a_state_from_other_settings_is_refused(shards):
    with ShardLoader(shards, batch_size=2, seed=0, process_count=2) as loader:
        state = loader.state_dict()
    with pytest.raises(VishwamError, match="process_count=2"):
        ShardLoader(shards, batch_size=2, seed=0, state=state)
    with pytest.raises(VishwamError, match="seed=0"):
        ShardLoader(shards, batch_size=2, seed=1, process_count=2, state=state)


def test_bad_loader_arguments_are_one_sentence(shards, tmp_path):
    with pytest.raises(VishwamError, match="no split 'val'"):
        ShardLoader(shards, split="val")
    with pytest.raises(VishwamError, match="not in"):
        ShardLoader(shards, process_index=4, process_count=4)
    with pytest.raises(VishwamError, match="no manifest.json"):
        ShardLoader(tmp_path)
