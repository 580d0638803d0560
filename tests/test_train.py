"""The training loop: run config, optimizer, losses and objectives, failures, metrics and export.

Sharding and kill-and-resume run in subprocesses (tests/test_train_spmd.py)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.fake_shards import FakeSource, markov_rows, markov_source
from vishwam_core.config import ModelConfig
from vishwam_core.errors import VishwamError
from vishwam_core.train import (
    DECAY_EXCLUDABLE,
    RUN_PRESETS,
    SECTIONS,
    OptimSection,
    RunConfig,
    Trainer,
    config_defaults,
    decay_mask,
    deep_merge,
    describe_config,
    loss_and_grads,
    make_schedule,
    params_metadata,
    prepare_batch,
    read_metrics,
    resolve_model_config,
    resolve_run_config,
    token_losses,
    train,
)

TEST = ModelConfig.from_name("test")


def flags(tmp_path, **over):
    base = {
        "model": {"name": "test"},
        "data": {"path": "fake", "batch_size": 8},
        "out": str(tmp_path / "run"),
        "steps": 4,
        "checkpoint": {"async_save": False},
    }
    return deep_merge(base, over)


def run(tmp_path, source=None, **over):
    cfg = resolve_run_config(flags(tmp_path, **over))
    return train(cfg, source=source or markov_source(), handle_signals=False), cfg


# ---- run config ---------------------------------------------------------------------------------
def test_precedence_defaults_then_preset_then_file_then_flags(tmp_path):
    defaults = config_defaults()
    cfg = resolve_run_config(flags(tmp_path, model={"name": "custom.json"}))
    assert cfg.optim.lr == defaults["optim"]["lr"]  # no preset for this name
    cfg = resolve_run_config(flags(tmp_path))
    assert cfg.optim.lr == RUN_PRESETS["test"]["optim"]["lr"]  # the preset beats the defaults
    assert cfg.optim.b2 == defaults["optim"]["b2"]
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"optim": {"lr": 0.5, "b2": 0.9}, "data": {"seed": 7}}))
    cfg = resolve_run_config(flags(tmp_path), config_file=file)
    assert (cfg.optim.lr, cfg.optim.b2, cfg.data.seed) == (0.5, 0.9, 7)  # the file beats the preset
    cfg = resolve_run_config(flags(tmp_path, optim={"lr": 0.25}), config_file=file)
    assert (cfg.optim.lr, cfg.optim.b2) == (0.25, 0.9)  # a flag beats the file, the rest of it stays
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("optim:\n  lr: 0.125\nmesh:\n  spec: data=1\n")
    cfg = resolve_run_config(flags(tmp_path), config_file=yaml_file)
    assert (cfg.optim.lr, cfg.mesh.spec) == (0.125, "data=1")


def test_every_config_field_has_a_description():
    described = describe_config()
    for name, section in SECTIONS.items():
        for f in section.__dataclass_fields__:
            assert described[f"{name}.{f}"].strip()
    assert set(RunConfig.__dataclass_fields__) - set(SECTIONS) <= set(described)


@pytest.mark.parametrize(
    "over, pattern",
    [
        ({"optim": {"lr": -1.0}}, "lr must be positive"),
        ({"optim": {"schedule": "step"}}, "schedule must be one of"),
        ({"optim": {"decay_exclude": ["norms", "heads"]}}, "not heads"),
        ({"data": {"objective": "rl"}}, "objective must be one of"),
        ({"model": {"remat": "some"}}, "remat must be one of"),
        ({"model": {"precision": "fp8"}}, "precision must be one of"),
        ({"tokens": 100}, "exactly one of --steps and --tokens"),
        ({"optim": {"warmup": 3}}, "Unknown run config field 'optim.warmup'"),
        ({"epochs": 3}, "Unknown run config field 'epochs'"),
    ],
)
def test_invalid_config_is_one_sentence(tmp_path, over, pattern):
    with pytest.raises(VishwamError, match=pattern):
        resolve_run_config(flags(tmp_path, **over))


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VishwamError, match="cannot be parsed"):
        resolve_run_config(flags(tmp_path), config_file=bad)
    with pytest.raises(VishwamError, match="does not exist"):
        resolve_run_config(flags(tmp_path), config_file=tmp_path / "missing.json")


def test_model_resolution_precision_and_overrides(tmp_path):
    cfg = resolve_run_config(flags(tmp_path, model={"precision": "bf16", "overrides": {"n_layers": 3}}))
    m = resolve_model_config(cfg.model)
    assert (m.param_dtype, m.compute_dtype, m.n_layers) == ("float32", "bfloat16", 3)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(TEST.replace(d_model=32, head_dim=8).to_dict()))
    assert (
        resolve_model_config(resolve_run_config(flags(tmp_path, model={"name": str(path)})).model).d_model
        == 32
    )
    with pytest.raises(VishwamError, match="neither a preset"):
        resolve_model_config(resolve_run_config(flags(tmp_path, model={"name": "gpt-5"})).model)


# ---- optimizer --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "schedule, expected",
    [
        # warmup 4 to 1.0 over 20 steps; floor 0.1
        ("constant", {0: 0.25, 3: 1.0, 10: 1.0, 19: 1.0}),
        ("cosine", {0: 0.25, 3: 1.0, 4: 1.0, 12: 0.55, 20: 0.1}),
        ("linear", {0: 0.25, 3: 1.0, 4: 1.0, 12: 0.55, 20: 0.1}),
        # wsd: decay over the last 20% (steps 16..20)
        ("wsd", {0: 0.25, 3: 1.0, 10: 1.0, 16: 1.0, 18: 0.55, 20: 0.1}),
    ],
)
def test_schedules(schedule, expected):
    o = OptimSection(lr=1.0, schedule=schedule, warmup_steps=4, min_lr_ratio=0.1, decay_fraction=0.2)
    fn = make_schedule(o, 20)
    for step, lr in expected.items():
        assert float(fn(step)) == pytest.approx(lr, abs=1e-6), (schedule, step)


def test_weight_decay_mask_excludes_what_is_asked():
    cfg = TEST.replace(qkv_bias=True, model_type="qwen2")  # untied head, biases present
    meta = params_metadata(cfg)
    mask = decay_mask(meta, set(DECAY_EXCLUDABLE))
    assert mask["blocks"]["wq"] and mask["blocks"]["w_down"]
    assert not mask["blocks"]["attn_norm"] and not mask["final_norm"]
    assert not mask["blocks"]["bq"] and not mask["blocks"]["bv"]
    assert not mask["embed"] and not mask["lm_head"]
    only_norms = decay_mask(meta, {"norms"})
    assert only_norms["embed"] and only_norms["blocks"]["bq"] and not only_norms["blocks"]["mlp_norm"]


def test_weight_decay_mask_is_what_the_optimizer_applies(tmp_path):
    """With zero gradients, AdamW moves only decayed parameters (by lr * wd * p)."""
    cfg = resolve_run_config(
        flags(tmp_path, optim={"decay_exclude": ["norms", "embeddings"], "weight_decay": 0.5})
    )
    tr = Trainer(TEST, cfg, _mesh(), 4, 16)
    state = tr.init_state()
    params = state["params"]
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tr.tx.update(zeros, state["opt_state"], params)
    assert float(jnp.abs(updates["blocks"]["wq"]).max()) > 0
    assert float(jnp.abs(updates["embed"]).max()) == 0 and float(jnp.abs(updates["lm_head"]).max()) == 0
    assert float(jnp.abs(updates["final_norm"]).max()) == 0


def _mesh(spec="data=1"):
    from vishwam_core.sharding import make_mesh

    return make_mesh(spec)


def _batch(seed=0, b=8, t=16, vocab=256):
    return {"input_ids": markov_rows(b, t, vocab, seed)}


def test_grad_accumulation_equals_the_whole_batch(tmp_path):
    results = {}
    for accum in (1, 2, 4):
        cfg = resolve_run_config(flags(tmp_path, optim={"grad_accum": accum}))
        tr = Trainer(TEST, cfg, _mesh(), 4, 16)
        state = tr.init_state()
        losses = []
        for seed in range(3):
            state, m = tr.step_fn(state, tr.to_global(_batch(seed)))
            losses.append(float(m["loss"]))
        results[accum] = (losses, jax.device_get(state["params"]))
    for accum in (2, 4):
        np.testing.assert_allclose(results[accum][0], results[1][0], rtol=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), results[accum][1], results[1][1]
        )


# ---- losses and objectives ----------------------------------------------------------------------
def test_token_losses_in_f32_with_z_loss():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 11)) * 4
    targets = jnp.array([[1, 2, 3], [4, 5, 6]])
    weights = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    nll, z = token_losses(logits.astype(jnp.bfloat16), targets, weights, 1e-2)
    assert nll.dtype == jnp.float32
    logp = jax.nn.log_softmax(logits.astype(jnp.bfloat16).astype(jnp.float32))
    want = -sum(float(logp[b, t, targets[b, t]]) for b in range(2) for t in range(3) if weights[b, t])
    assert float(nll) == pytest.approx(want, rel=1e-5)
    logz = jax.nn.logsumexp(logits.astype(jnp.bfloat16).astype(jnp.float32), -1)
    assert float(z) == pytest.approx(1e-2 * float(jnp.sum(logz**2 * weights)), rel=1e-5)


def _grads(params, graphdef, batch, z_loss=0.0):
    b = {k: jnp.asarray(v) for k, v in batch.items()}
    grads, nll = loss_and_grads(
        params, b, jnp.maximum(b["weights"].sum(), 1.0), graphdef=graphdef, z_loss=z_loss, remat="none"
    )
    return jax.device_get(grads), float(nll)


def test_sft_masked_tokens_contribute_no_gradient(tmp_path):
    cfg = resolve_run_config(flags(tmp_path, data={"objective": "sft"}))
    tr = Trainer(TEST, cfg, _mesh(), 4, 16)
    params = tr.init_state()["params"]
    raw = _batch(1, b=4)
    mask = np.zeros_like(raw["input_ids"], np.uint8)
    mask[:, 9:] = 1  # a prompt of 9 tokens, then the reply
    raw["loss_mask"] = mask
    base = prepare_batch(raw, 16, "sft")
    assert base["weights"][:, :8].sum() == 0 and base["weights"][:, 8:].all()
    g0, nll0 = _grads(params, tr.graphdef, base)
    # Change every masked target: nothing moves.
    changed = {k: v.copy() for k, v in raw.items()}
    changed["input_ids"][:, 1:9] = (changed["input_ids"][:, 1:9] + 17) % 256
    masked_inputs_kept = prepare_batch(changed, 16, "sft")
    masked_inputs_kept["inputs"] = base["inputs"]  # only the targets differ
    g1, nll1 = _grads(params, tr.graphdef, masked_inputs_kept)
    assert nll1 == nll0
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), g1, g0)
    # Change one trained target: the gradient moves (the check above can fail).
    trained = {k: v.copy() for k, v in base.items()}
    trained["targets"][0, 12] = (trained["targets"][0, 12] + 1) % 256
    g2, _ = _grads(params, tr.graphdef, trained)
    assert float(np.abs(g2["lm_head"] - g0["lm_head"]).max()) > 1e-6


def test_sft_needs_a_loss_mask():
    with pytest.raises(VishwamError, match="needs shards with a loss_mask"):
        prepare_batch(_batch(), 16, "sft")


def test_lm_objective_skips_padding():
    raw = _batch(b=2, t=6)
    raw["loss_mask"] = np.array([[1] * 7, [1, 1, 1, 1, 0, 0, 0]], np.uint8)  # row 2 ends in padding
    text = prepare_batch(raw, 6, "lm", mask_is_padding=True)
    np.testing.assert_array_equal(text["weights"], [[1] * 6, [1, 1, 1, 0, 0, 0]])
    # Chat shards: loss_mask marks replies, not padding; lm trains on prompts too.
    chat = prepare_batch(raw, 6, "lm", mask_is_padding=False)
    np.testing.assert_array_equal(chat["weights"], np.ones((2, 6)))
    raw["segment_ids"] = np.array([[1] * 7, [1, 1, 1, 1, 0, 0, 0]], np.int32)
    padded = prepare_batch(raw, 6, "lm", mask_is_padding=False)
    np.testing.assert_array_equal(padded["weights"], [[1] * 6, [1, 1, 1, 0, 0, 0]])


def test_lm_objective_skips_targets_across_packed_documents():
    raw = _batch(b=1, t=8)
    raw["segment_ids"] = np.array([[1, 1, 1, 2, 2, 2, 2, 3, 3]], np.int32)
    raw["positions"] = np.array([[0, 1, 2, 0, 1, 2, 3, 0, 1]], np.int32)
    b = prepare_batch(raw, 8, "lm")
    np.testing.assert_array_equal(b["weights"][0], [1, 1, 0, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(b["positions"][0], [0, 1, 2, 0, 1, 2, 3, 0])
    np.testing.assert_array_equal(b["segment_ids"][0], [1, 1, 1, 2, 2, 2, 2, 3])
    cropped = prepare_batch(raw, 5, "lm")
    assert cropped["inputs"].shape == (1, 5) and cropped["targets"][0, -1] == raw["input_ids"][0, 5]


def test_z_loss_changes_gradients_not_the_reported_loss(tmp_path):
    cfg = resolve_run_config(flags(tmp_path))
    tr = Trainer(TEST, cfg, _mesh(), 4, 16)
    params = tr.init_state()["params"]
    b = prepare_batch(_batch(), 16, "lm")
    g0, nll0 = _grads(params, tr.graphdef, b)
    g1, nll1 = _grads(params, tr.graphdef, b, z_loss=1e-1)
    assert nll0 == nll1
    assert float(np.abs(g1["lm_head"] - g0["lm_head"]).max()) > 1e-6


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_the_same_step(tmp_path, remat):
    out = {}
    for policy in ("none", remat):
        cfg = resolve_run_config(flags(tmp_path, model={"remat": policy}))
        tr = Trainer(TEST, cfg, _mesh(), 4, 16)
        state = tr.init_state()
        state, m = tr.step_fn(state, tr.to_global(_batch()))
        out[policy] = (float(m["loss"]), float(m["grad_norm"]))
    np.testing.assert_allclose(out[remat], out["none"], rtol=1e-5)


def test_bf16_compute_tracks_f32(tmp_path):
    losses = {}
    for precision in ("f32", "bf16"):
        cfg = resolve_run_config(flags(tmp_path, model={"precision": precision}))
        model_cfg = resolve_model_config(cfg.model)
        tr = Trainer(model_cfg, cfg, _mesh(), 4, 16)
        state = tr.init_state()
        assert jax.tree.leaves(state["params"])[0].dtype == jnp.float32  # params stay f32
        ls = []
        for seed in range(3):
            state, m = tr.step_fn(state, tr.to_global(_batch(seed)))
            ls.append(float(m["loss"]))
        losses[precision] = ls
    assert all(math.isfinite(x) for x in losses["bf16"])
    np.testing.assert_allclose(losses["bf16"], losses["f32"], rtol=2e-2)
    assert losses["bf16"] != losses["f32"]  # bf16 compute really ran


# ---- a whole run ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def basic_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("basic")
    cfg = resolve_run_config(
        flags(
            tmp,
            steps=12,
            eval_every=6,
            cost_per_hour=3.6,
            optim={"lr": 1e-2},
            checkpoint={"every_steps": 5, "keep": 2},
        )
    )
    summary = train(cfg, source=markov_source(), handle_signals=False)
    return summary, cfg, tmp / "run"


def test_run_writes_config_metrics_plot_and_checkpoints(basic_run):
    summary, cfg, run_dir = basic_run
    assert RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())) == cfg
    records = read_metrics(run_dir)
    train_lines = [r for r in records if "loss" in r]
    val_lines = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in train_lines] == list(range(1, 13))
    assert [r["step"] for r in val_lines] == [0, 6, 12]
    for r in train_lines:
        assert r["ppl"] == pytest.approx(math.exp(r["loss"]))
        assert r["lr"] > 0 and r["grad_norm"] > 0 and r["tokens"] == r["step"] * 8 * 32
    steady = train_lines[1:]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["cost"] > 0 for r in steady)
    assert "tokens_per_s" not in train_lines[0]  # the compiling step is not a throughput sample
    assert train_lines[-1]["loss"] < train_lines[0]["loss"] - 0.5
    assert summary["val_ppl"] < summary["initial_val_ppl"] / 2
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every 5 steps and the last, keep 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_10", "step_12"]
    assert summary["status"] == "completed" and summary["step"] == 12


def test_export_loads_in_transformers_with_equal_logits(basic_run):
    import torch
    import transformers as tf

    from vishwam_core.checkpoint import load_model
    from vishwam_core.model import forward_fn

    summary, cfg, run_dir = basic_run
    lineage = json.loads((run_dir / "model" / "vishwam.json").read_text())
    assert lineage["step"] == 12 and lineage["data_manifest_hash"] == markov_source().manifest_hash
    ours = load_model(run_dir / "model")
    hf = tf.AutoModelForCausalLM.from_pretrained(run_dir / "model", dtype=torch.float32).eval()
    tokens = markov_rows(2, 20, 256, seed=5)
    fwd, state = forward_fn(ours)
    want, _ = fwd(state, jnp.asarray(tokens))
    with torch.no_grad():
        got = hf(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-4)


def test_run_dir_with_another_runs_checkpoints_is_refused(basic_run, tmp_path):
    summary, cfg, run_dir = basic_run
    again = resolve_run_config(flags(run_dir.parent, steps=2))
    with pytest.raises(
        VishwamError, match=r"already holds a run's checkpoints \(latest step 12\).*--resume.*--force"
    ):
        train(again, source=markov_source(), handle_signals=False)


def test_resume_refuses_another_architecture(basic_run):
    summary, cfg, run_dir = basic_run
    other = resolve_run_config(flags(run_dir.parent, steps=14, model={"overrides": {"n_layers": 3}}))
    with pytest.raises(VishwamError, match="checkpoints in .* are of another architecture"):
        train(other, source=markov_source(), resume=True, handle_signals=False)


def test_force_starts_over(tmp_path):
    run(tmp_path, steps=2)
    cfg = resolve_run_config(flags(tmp_path, steps=3))
    summary = train(cfg, source=markov_source(), force=True, handle_signals=False)
    assert summary["step"] == 3
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_tokens_sets_the_step_count(tmp_path):
    summary, _ = run(tmp_path, steps=None, tokens=3 * 8 * 32 - 5)
    assert summary["total_steps"] == 3


# ---- failures ------------------------------------------------------------------------------------
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    # lr 1e30 blows the weights up after the first update; step 2 is the first non-finite one.
    over = dict(steps=6, optim={"lr": 1e30, "warmup_steps": 0, "schedule": "constant", "grad_clip": None})
    with pytest.raises(
        VishwamError, match=r"Step (\d+) had a non-finite loss.*last good checkpoint is step \d+"
    ):
        run(tmp_path, checkpoint={"every_steps": 1, "async_save": False}, **over)
    steps = sorted(int(p.name[5:]) for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert steps and (tmp_path / "run" / "model").exists() is False
    skipped, _ = run(tmp_path / "skip", max_bad_steps=10, **over)
    assert skipped["status"] == "completed" and skipped["skipped_steps"] >= 1
    records = read_metrics(tmp_path / "skip" / "run")
    bad = [r["step"] for r in records if r.get("skipped")]
    assert bad and bad[0] == steps[-1] + 1


def test_data_that_does_not_fit_the_model_is_refused(tmp_path):
    big_vocab = markov_source(vocab=256)
    big_vocab.manifest["vocab_size"] = 300
    with pytest.raises(VishwamError, match="300 tokens but the model's vocab_size is 256"):
        run(tmp_path, source=big_vocab)
    with pytest.raises(VishwamError, match="exceeds the shards' seq_len 32"):
        run(tmp_path, data={"seq_len": 64})


def test_validation_needs_a_val_split(tmp_path):
    src = markov_source()
    src.manifest["splits"] = {"train": {"rows": 256}}
    with pytest.raises(VishwamError, match="no 'val' rows to validate on .* --eval-every 0"):
        run(tmp_path, source=src, eval_every=2)
    src.manifest["splits"] = {"train": {"rows": 256}, "val": {"rows": 0}}
    with pytest.raises(VishwamError, match="no 'val' rows to validate on"):
        run(tmp_path, source=src, eval_every=2)


def test_batch_must_divide_over_the_mesh_and_micro_batches(tmp_path):
    with pytest.raises(VishwamError, match="does not split into 3 micro-batches"):
        run(tmp_path, optim={"grad_accum": 3})


# ---- MFU ---------------------------------------------------------------------------------------
def test_mfu_divides_train_flops_by_the_cpu_peak(tmp_path, monkeypatch):
    from vishwam_core.analysis import flops_per_token

    monkeypatch.setenv("VISHWAM_CPU_PEAK_FLOPS", "2e11")
    summary, _ = run(tmp_path, steps=3)
    assert (
        summary["peak_flops_per_device"] == 2e11 and "VISHWAM_CPU_PEAK_FLOPS" in summary["peak_flops_source"]
    )
    for r in read_metrics(tmp_path / "run")[1:]:
        assert r["mfu"] == pytest.approx(flops_per_token(TEST, 32)["train"] * r["tokens_per_s"] / 2e11)


def test_fake_source_batches_resume_exactly():
    src = FakeSource({"train": {"input_ids": markov_rows(40, 4, 16)}})
    a = src.loader("train", batch_size=8, seed=3, process_index=0, process_count=1, prefetch=0, state=None)
    it = iter(a)
    first = [next(it)["input_ids"] for _ in range(7)]
    resumed = src.loader(
        "train", batch_size=8, seed=3, process_index=0, process_count=1, prefetch=0, state=None
    )
    resumed.load_state_dict({**a.state_dict(), "epoch": 0, "index": 3})
    it2 = iter(resumed)
    for want in first[3:]:
        np.testing.assert_array_equal(next(it2)["input_ids"], want)


def test_single_process_environments_do_not_start_jax_distributed():
    from vishwam_core.train import maybe_initialize_distributed

    assert maybe_initialize_distributed({}) is False
    assert maybe_initialize_distributed({"TPU_WORKER_HOSTNAMES": "localhost", "SLURM_NTASKS": "1"}) is False


def test_init_from_continues_from_the_exported_weights(basic_run, tmp_path):
    summary, cfg, run_dir = basic_run
    over = {"model": {"name": None, "init_from": str(run_dir / "model")}, "eval_every": 2, "steps": 2}
    cont, _ = run(tmp_path, **over)
    first = read_metrics(tmp_path / "run")[0]
    assert first["step"] == 0 and first["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)
    lineage = json.loads((tmp_path / "run" / "model" / "vishwam.json").read_text())
    assert lineage["parent"] == str(run_dir / "model")
    with pytest.raises(VishwamError, match="different architecture than --model demo"):
        run(tmp_path / "x", model={"name": "demo", "init_from": str(run_dir / "model")})


def test_log_every_time_based_saves_and_periodic_exports(tmp_path):
    over = dict(
        steps=5,
        log_every=2,
        checkpoint={"every_steps": None, "every_minutes": 1e-6, "keep": 10, "export_every": 2},
    )
    summary, _ = run(tmp_path, **over)
    run_dir = tmp_path / "run"
    assert [r["step"] for r in read_metrics(run_dir)] == [2, 4, 5]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"step_{i}" for i in range(1, 6)]
    assert sorted(p.name for p in (run_dir / "exports").iterdir()) == ["step_2", "step_4"]
    assert json.loads((run_dir / "exports" / "step_4" / "vishwam.json").read_text())["step"] == 4


def test_seed_changes_the_initialisation(tmp_path):
    a, _ = run(tmp_path / "a", steps=1, seed=0)
    b, _ = run(tmp_path / "b", steps=1, seed=1)
    assert a["loss"] != b["loss"]


def test_special_token_ids_follow_the_shards_tokenizer():
    from vishwam_core.train import with_data_special_tokens

    assert with_data_special_tokens(TEST, {"seq_len": 8}) == TEST
    cfg = with_data_special_tokens(TEST, {"tokenizer": {"bos_id": 5, "eos_id": 6, "pad_id": 0}})
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (5, 6, 0)
