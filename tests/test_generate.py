"""The generation engine and its text layer, on the real SmolLM2-135M-Instruct, against transformers."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vishwam_core.chat import StreamDecoder, generate_text, render_prompt
from vishwam_core.errors import VishwamError
from vishwam_core.generate import Engine, SamplingParams, sample_logits

CHATS = ["What is the capital of France?", "Write a haiku about the sea.", "Name three primary colours."]


@pytest.fixture(scope="module")
def engine(smollm2_model):
    return Engine(smollm2_model)


@pytest.fixture(scope="module")
def chat_ids(smollm2_tokenizer):
    return [render_prompt(smollm2_tokenizer, chat=c) for c in CHATS]


def test_greedy_equals_transformers_token_for_token(engine, chat_ids, smollm2_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    for ids in chat_ids:
        ours = engine.generate([ids], SamplingParams(max_new_tokens=24)).completions[0].tokens
        with torch.no_grad():
            x = torch.tensor([ids])  # an explicit mask: the prompt holds <|im_end|>, which is also the pad id
            theirs = hf.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=24,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=2,
            )[0, len(ids) :].tolist()
        assert ours == theirs


def test_batched_prompts_of_different_lengths_match_each_alone(engine, smollm2_tokenizer, chat_ids):
    prompts = [*chat_ids, smollm2_tokenizer.encode("def fibonacci(n):")]
    assert len({len(p) for p in prompts}) == 4
    params = SamplingParams(max_new_tokens=12)
    batched = engine.generate(prompts, params).completions
    for p, b in zip(prompts, batched, strict=True):
        assert engine.generate([p], params).completions[0].tokens == b.tokens


def test_seeded_sampling_repeats_exactly(engine, chat_ids):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, top_k=50, seed=7)
    a = engine.generate([chat_ids[1]], params).completions[0].tokens
    b = engine.generate([chat_ids[1]], params).completions[0].tokens
    c = engine.generate([chat_ids[1]], SamplingParams(**{**params.__dict__, "seed": 8})).completions[0].tokens
    assert a == b
    assert a != c


def test_no_recompilation_per_token_or_prompt_length(engine, smollm2_tokenizer):
    params = SamplingParams(max_new_tokens=20)
    engine.generate([smollm2_tokenizer.encode("Hello there")], params)
    before = engine.compiled_variants()
    for text in [
        "Hi",
        "A much longer prompt than the first one, with many more tokens in it.",
        "Once upon a time",
    ]:
        engine.generate([smollm2_tokenizer.encode(text)], SamplingParams(max_new_tokens=30))
    assert engine.compiled_variants() == before


def test_stop_strings_cut_exactly_and_stream_the_same_text(engine, smollm2_tokenizer, chat_ids):
    params = SamplingParams(max_new_tokens=40)
    [full], _ = generate_text(engine, smollm2_tokenizer, [chat_ids[1]], params)
    assert len(full.text) > 20
    stop = full.text[10:14]
    cut = full.text.index(stop)
    pieces = []
    [short], _ = generate_text(
        engine,
        smollm2_tokenizer,
        [chat_ids[1]],
        params,
        stop_strings=[stop],
        on_text=lambda row, t: pieces.append(t),
    )
    assert short.text == full.text[:cut]
    assert "".join(pieces) == short.text
    assert short.finish_reason == "stop"


def test_eos_stops_and_is_not_in_the_text(engine, smollm2_tokenizer, chat_ids):
    [c], _ = generate_text(engine, smollm2_tokenizer, [chat_ids[0]], SamplingParams(max_new_tokens=40))
    assert c.text == "The capital of France is Paris."
    assert c.tokens[-1] == smollm2_tokenizer.eos_id and c.finish_reason == "stop"


def test_stream_decoder_never_emits_half_a_character(smollm2_tokenizer):
    text = "naïve café — 東京 🚀🎉 done"
    ids = smollm2_tokenizer.encode(text)
    decoder = StreamDecoder(smollm2_tokenizer)
    pieces = [decoder.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text
    assert len(ids) > len(text.split())  # the emoji really are split across tokens


def test_sampling_filters():
    logits = jnp.asarray([[1.0, 3.0, 2.0, 0.5]])
    seen = jnp.zeros((1, 4), bool)
    base = {
        "temperature": jnp.float32(1.0),
        "top_k": jnp.int32(0),
        "top_p": jnp.float32(1.0),
        "min_p": jnp.float32(0.0),
        "repetition_penalty": jnp.float32(1.0),
    }
    import jax

    keys = [jax.random.key(i) for i in range(40)]

    def draws(**over):
        return {int(sample_logits(logits, k, {**base, **over}, seen, greedy=False)[0]) for k in keys}

    assert draws(top_k=jnp.int32(1)) == {1}
    assert draws(top_p=jnp.float32(0.01)) == {1}
    assert draws(min_p=jnp.float32(0.99)) == {1}
    assert draws(top_k=jnp.int32(2)) == {1, 2}
    assert len(draws()) >= 3
    penalised = sample_logits(
        logits,
        keys[0],
        {**base, "repetition_penalty": jnp.float32(10.0)},
        jnp.asarray([[False, True, False, False]]),
        greedy=True,
    )
    assert int(penalised[0]) == 2


@pytest.mark.parametrize(
    "bad",
    [
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(temperature=-1.0),
        dict(top_k=-1),
        dict(max_new_tokens=0),
        dict(min_p=1.0),
        dict(repetition_penalty=0.0),
    ],
)
def test_invalid_sampling_values_are_one_sentence(bad):
    with pytest.raises(VishwamError):
        SamplingParams(**bad)


def test_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(VishwamError, match="does not fit the model's context"):
        engine.generate([[1] * engine.cfg.max_seq_len], SamplingParams(max_new_tokens=1))


def _cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "vishwam_cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
    )


def test_cli_generate_json_and_stdin(smollm2_dir):
    import json

    proc = _cli("generate", smollm2_dir, "--chat", CHATS[0], "--json", "--max-tokens", "16")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"] == "The capital of France is Paris."
    assert {"prompt_tokens", "completion_tokens", "prefill_tokens_per_s", "decode_tokens_per_s"} <= set(out)
    piped = _cli("generate", smollm2_dir, "--max-tokens", "5", "--quiet", stdin="The capital of France is")
    assert piped.returncode == 0 and piped.stdout == ""
    streamed = _cli("generate", smollm2_dir, "--max-tokens", "6", stdin="The capital of France is")
    assert streamed.returncode == 0 and len(streamed.stdout.strip()) > 0


def test_cli_generate_bad_input(smollm2_dir, tmp_path):
    bad = _cli("generate", smollm2_dir, "--prompt", "hi", "--top-p", "1.5")
    assert bad.returncode == 1 and "top_p must be in (0, 1]" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "config.json").write_text((smollm2_dir / "config.json").read_text())
    missing = _cli("generate", tmp_path, "--prompt", "hi")
    assert missing.returncode == 1 and "Error:" in missing.stderr and "Traceback" not in missing.stderr
    assert np.isfinite(len(missing.stderr))
