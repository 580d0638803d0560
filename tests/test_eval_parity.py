"""Parity with the peer: lm-eval's own `hf` backend (transformers) on the same SmolLM2 directory, task
packs and settings. Both run here, each once per session: a BIG-bench multiple-choice pack
(date_understanding, 200 questions, ~1,170 loglikelihood requests) and a generative one
(object_counting, 100 questions, greedy, at most 16 new tokens). Scores must be equal and every
request's loglikelihood within 1e-3. Perplexity is checked against the same peer's rolling windows and,
on shards, against transformers scoring the same rows."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from vishwam_core.errors import VishwamError
from vishwam_core.evaluate.backend import VishwamLM
from vishwam_core.evaluate.perplexity import shard_perplexity, text_perplexity
from vishwam_core.evaluate.tasks import convert_tasks

BIGBENCH = Path(__file__).parent / "data" / "bigbench"
MC_DOCS, GEN_DOCS = 200, 100
TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 16,
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    * 4,
    "In 1492, Columbus sailed the ocean blue; in 1969, 3 astronauts flew to the Moon and back. " * 6,
]


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs")
    convert_tasks(BIGBENCH / "date_understanding", root / "mc")
    convert_tasks(BIGBENCH / "object_counting", root / "gen", max_gen_toks=16)
    return TaskManager(include_path=[str(root / "mc"), str(root / "gen")], include_defaults=False)


@pytest.fixture(scope="module")
def vishwam_lm(smollm2_dir, smollm2_model, smollm2_tokenizer):
    return VishwamLM(str(smollm2_dir), model=smollm2_model, tokenizer=smollm2_tokenizer, batch_size=64)


@pytest.fixture(scope="module")
def hf_lm(smollm2_dir):
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(2)
    return HFLM(pretrained=str(smollm2_dir), device="cpu", dtype="float32", batch_size=32)


def _evaluate(lm, manager, task: str, limit: int) -> dict:
    start = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit, log_samples=True)
    results["wall_seconds"] = time.perf_counter() - start  # printed with -s; never asserted
    return results


@pytest.fixture(scope="module")
def multiple_choice(packs, vishwam_lm, hf_lm):
    return {
        "vishwam": _evaluate(vishwam_lm, packs, "date_understanding", MC_DOCS),
        "hf": _evaluate(hf_lm, packs, "date_understanding", MC_DOCS),
    }


@pytest.fixture(scope="module")
def generative(packs, vishwam_lm, hf_lm):
    return {
        "vishwam": _evaluate(vishwam_lm, packs, "object_counting", GEN_DOCS),
        "hf": _evaluate(hf_lm, packs, "object_counting", GEN_DOCS),
    }


def test_multiple_choice_pack_equals_the_hf_backend(multiple_choice):
    ours, theirs = (multiple_choice[k] for k in ("vishwam", "hf"))
    a, b = ours["samples"]["date_understanding"], theirs["samples"]["date_understanding"]
    assert len(a) == len(b) == MC_DOCS
    assert [s["arguments"] for s in a] == [s["arguments"] for s in b]  # the very same requests
    ll_a = np.array([r[0][0] for s in a for r in s["resps"]])
    ll_b = np.array([r[0][0] for s in b for r in s["resps"]])
    assert len(ll_a) >= 1000
    print(f"\n{len(ll_a)} requests, max |diff| {np.abs(ll_a - ll_b).max():.2e}, mean {np.abs(ll_a - ll_b).mean():.2e}; "
          f"vishwam {ours['wall_seconds']:.0f} s, hf {theirs['wall_seconds']:.0f} s")  # fmt: skip
    assert np.abs(ll_a - ll_b).max() < 1e-3
    assert [r[0][1] for s in a for r in s["resps"]] == [r[0][1] for s in b for r in s["resps"]]  # is_greedy
    assert [s["acc"] for s in a] == [s["acc"] for s in b]
    assert (
        ours["results"]["date_understanding"]["acc,none"]
        == theirs["results"]["date_understanding"]["acc,none"]
    )


def test_generative_pack_equals_the_hf_backend(generative):
    ours, theirs = (generative[k] for k in ("vishwam", "hf"))
    a, b = ours["samples"]["object_counting"], theirs["samples"]["object_counting"]
    assert len(a) == len(b) == GEN_DOCS
    print(f"\nvishwam {ours['wall_seconds']:.0f} s, hf {theirs['wall_seconds']:.0f} s")
    assert [s["resps"] for s in a] == [s["resps"] for s in b]  # token-for-token the same replies
    assert sum(len(s["resps"][0][0]) for s in a) > 0
    key = "exact_str_match,none"
    assert ours["results"]["object_counting"][key] == theirs["results"]["object_counting"][key]


def test_rolling_loglikelihood_equals_the_hf_backend(smollm2_dir, smollm2_model, smollm2_tokenizer, hf_lm):
    """Disjoint rolling windows of 64 tokens over texts of ~200-400 tokens: several windows each."""
    from lm_eval.models.huggingface import HFLM

    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(TEXTS)]
    peer = HFLM(pretrained=hf_lm.model, tokenizer=hf_lm.tokenizer, max_length=64, batch_size=4)
    theirs = peer.loglikelihood_rolling(requests, disable_tqdm=True)
    ours_lm = VishwamLM(str(smollm2_dir), model=smollm2_model, tokenizer=smollm2_tokenizer, max_length=64)
    ours = ours_lm.loglikelihood_rolling(requests)
    for text, a, b in zip(TEXTS, ours, theirs, strict=True):
        n = len(smollm2_tokenizer.encode(text))
        assert n > 128  # at least three windows
        assert abs(a - b) / n < 1e-4, (a, b)
    ppl = text_perplexity(ours_lm, TEXTS, context=64)
    assert ppl["tokens"] == sum(len(smollm2_tokenizer.encode(t)) for t in TEXTS)
    assert ppl["bytes"] == sum(len(t.encode()) for t in TEXTS)
    assert ppl["nll"] == pytest.approx(-sum(theirs), rel=1e-5)
    assert ppl["bits_per_byte"] == pytest.approx(-sum(theirs) / (ppl["bytes"] * np.log(2)), rel=1e-5)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, smollm2_dir):
    from vishwam_core.data import convert_data

    root = tmp_path_factory.mktemp("shards")
    docs = root / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"text": t + f" Document {i}."}) + "\n" for i, t in enumerate(TEXTS * 4))
    )
    convert_data([str(docs)], smollm2_dir, root / "shards", seq_len=64, val_fraction=0.5, seed=1)
    return root / "shards"


def test_shard_perplexity_equals_transformers_on_the_same_rows(
    shards, smollm2_dir, smollm2_model, smollm2_tokenizer, hf_lm
):
    from vishwam_core.shards import read_manifest, read_rows

    manifest = read_manifest(shards)
    rows = manifest["splits"]["val"]["rows"]
    assert rows >= 2
    ours = shard_perplexity(
        smollm2_model, smollm2_tokenizer, shards, smollm2_dir / "tokenizer.json", split="val"
    )
    data = read_rows(shards, "val", 0, rows)
    ids = torch.tensor(data["input_ids"], dtype=torch.long)
    mask = torch.tensor(data["loss_mask"][:, 1:], dtype=torch.bool)
    with torch.no_grad():
        logp = torch.log_softmax(hf_lm.model(ids[:, :-1]).logits.float(), dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
    nll = -float(picked[mask].sum())
    assert ours["rows"] == rows and ours["tokens"] == int(mask.sum())
    assert ours["nll"] == pytest.approx(nll, rel=1e-5)
    targets = data["input_ids"][:, 1:][data["loss_mask"][:, 1:].astype(bool)]
    text_bytes = len(smollm2_tokenizer.decode(targets.tolist(), skip_special_tokens=True).encode())
    assert ours["bytes"] == text_bytes
    assert ours["bits_per_byte"] == pytest.approx(nll / (text_bytes * np.log(2)), rel=1e-5)


def test_shards_from_another_tokenizer_are_refused(shards, tmp_path, smollm2_model, smollm2_tokenizer):
    other = tmp_path / "tokenizer.json"
    other.write_text((shards / "tokenizer.json").read_text().replace('"<|im_start|>"', '"<|im_begin|>"', 1))
    with pytest.raises(VishwamError, match="tokenized with a different tokenizer"):
        shard_perplexity(smollm2_model, smollm2_tokenizer, shards, other)
