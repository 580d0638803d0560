"""The ONE generation engine: token ids in, token ids out.

Batched chunked prefill into a KV cache, then one token at a time: greedy, temperature, top-k, top-p,
min-p and repetition penalty (applied in transformers' order), seeded, with stop token ids,
max_new_tokens and a per-token callback (which may stop a row, e.g. on a stop string).

Shapes are bucketed so nothing recompiles per token or per prompt length: prompts are fed in fixed
chunks (right-padded; pad slots hold position -1, which the attention mask never sees), the batch is
padded to a power of two and the cache length to a multiple of `cache_bucket`. One compiled prefill
and one compiled decode step exist per (batch, cache length) bucket.

Works on ids only: chat templates, stop strings and UTF-8 streaming live in `vishwam_core.chat`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vishwam_core.errors import VishwamError
from vishwam_core.model import KVCache, Transformer, unstack_layers


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise VishwamError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
        if self.temperature < 0:
            raise VishwamError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise VishwamError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise VishwamError(f"top_k must be >= 0 (0 turns it off), got {self.top_k}.")
        if not 0 <= self.min_p < 1:
            raise VishwamError(f"min_p must be in [0, 1), got {self.min_p}.")
        if self.repetition_penalty <= 0:
            raise VishwamError(f"repetition_penalty must be > 0, got {self.repetition_penalty}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    tokens: list[int]
    finish_reason: str  # "stop" (a stop id, or the callback asked) | "length"
    prompt_tokens: int


@dataclass
class GenerationResult:
    completions: list[Completion]
    prefill_tokens: int
    prefill_seconds: float
    decode_tokens: int
    decode_seconds: float
    timings: dict = field(default_factory=dict)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0


# on_token(row, token_id) -> True to stop that row (after this token).
TokenCallback = Callable[[int, int], bool | None]


def sample_logits(logits, key, params: dict, seen, greedy: bool):
    """logits (B, V) f32 -> next ids (B,). `params` holds traced scalars, so changing them does not
    recompile; `seen` (B, V) bool marks tokens already in the sequence (for the repetition penalty)."""
    penalty = params["repetition_penalty"]
    logits = jnp.where(seen, jnp.where(logits > 0, logits / penalty, logits * penalty), logits)
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / params["temperature"]
    order = jnp.argsort(-logits, axis=-1)  # (B, V) best first
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    rank = jnp.arange(logits.shape[-1])[None, :]
    keep = (params["top_k"] <= 0) | (rank < params["top_k"])
    probs = jax.nn.softmax(jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
    keep &= (jnp.cumsum(probs, axis=-1) - probs) < params["top_p"]  # the nucleus, at least one token
    keep &= probs >= params["min_p"] * probs[:, :1]
    choice = jax.random.categorical(key, jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
    return jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def _bucket_batch(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class CompiledPrograms:
    """Functions compiled ahead of time, one program per (name, argument shapes and dtypes), with the
    seconds spent compiling them counted apart from running them. The generation engine and eval's
    scorer each hold one; callers bucket their shapes so few programs are ever made."""

    def __init__(self) -> None:
        self._programs: dict[tuple, object] = {}
        self.compile_seconds = 0.0

    def __len__(self) -> int:
        return len(self._programs)

    def __call__(self, name: str, fn, donate: tuple[int, ...], *args):
        key = (name, *(tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(a)) for a in args))
        compiled = self._programs.get(key)
        if compiled is None:
            t = time.perf_counter()
            compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
            self.compile_seconds += time.perf_counter() - t
            self._programs[key] = compiled
        return compiled(*args)


class Engine:
    """Holds a model's weights split per layer and the compiled steps; call `generate` repeatedly."""

    def __init__(
        self,
        model: Transformer,
        prefill_chunk: int = 64,
        cache_bucket: int = 256,
        layers: list[dict[str, jax.Array]] | None = None,
    ):
        """`layers`: the model's `unstack_layers` copy, when the caller already holds one (so two
        users of one model, e.g. eval's scorer and this engine, keep one copy of the weights)."""
        self.cfg = model.cfg
        self.prefill_chunk = prefill_chunk
        self.cache_bucket = cache_bucket
        self._graphdef, self._state = nnx.split(model)
        self._layers = layers if layers is not None else unstack_layers(model)
        self._programs = CompiledPrograms()

    @property
    def compile_seconds(self) -> float:
        return self._programs.compile_seconds

    # ---- compiled pieces -------------------------------------------------------------------
    def _prefill_impl(self, state, layers, cache, tokens, positions, last_index, last_hidden):
        """One chunk: tokens/positions (B, C); rows whose last prompt token is in this chunk
        (last_index >= 0) take their hidden state from it."""
        model = nnx.merge(self._graphdef, state)
        hidden, cache = model(tokens, positions=positions, cache=cache, layers=layers, return_hidden=True)
        here = jnp.take_along_axis(hidden, jnp.clip(last_index, 0)[:, None, None], axis=1)[:, 0]  # (B, D)
        return jnp.where((last_index >= 0)[:, None], here, last_hidden), cache

    def _first_token_impl(self, state, hidden, key, params, seen, greedy: bool):
        model = nnx.merge(self._graphdef, state)
        next_ids = sample_logits(model.logits(hidden), key, params, seen, greedy)
        return next_ids, seen.at[jnp.arange(seen.shape[0]), next_ids].set(True)

    def _decode_impl(self, state, layers, cache, tokens, positions, key, params, seen, greedy: bool):
        model = nnx.merge(self._graphdef, state)
        logits, cache = model(tokens[:, None], positions=positions[:, None], cache=cache, layers=layers)
        next_ids = sample_logits(logits[:, -1], key, params, seen, greedy)
        seen = seen.at[jnp.arange(seen.shape[0]), next_ids].set(True)
        return next_ids, cache, seen

    def compiled_variants(self) -> int:
        """How many (step, shape) programs have been compiled so far (tests count these)."""
        return len(self._programs)

    # ---- the loop ---------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams = SamplingParams(),
        on_token: TokenCallback | None = None,
    ) -> GenerationResult:
        cfg = self.cfg
        if not prompts:
            raise VishwamError("No prompts to generate from.")
        lengths = [len(p) for p in prompts]
        if min(lengths) == 0:
            raise VishwamError("Every prompt needs at least one token.")
        if max(lengths) >= cfg.max_seq_len:
            raise VishwamError(
                f"A prompt of {max(lengths)} tokens does not fit the model's context of {cfg.max_seq_len} tokens."
            )
        max_new = min(params.max_new_tokens, cfg.max_seq_len - max(lengths))
        n, B, C = len(prompts), _bucket_batch(len(prompts)), self.prefill_chunk
        n_chunks = -(-max(lengths) // C)
        cache_len = -(-(n_chunks * C + max_new) // self.cache_bucket) * self.cache_bucket

        tokens = np.zeros((B, n_chunks * C), np.int32)
        positions = np.full((B, n_chunks * C), -1, np.int32)
        seen = np.zeros((B, cfg.vocab_size), bool)
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = p
            positions[i, : len(p)] = np.arange(len(p))
            seen[i, np.asarray(p)] = True
        sampling = {
            "temperature": jnp.float32(max(params.temperature, 1e-6)),
            "top_k": jnp.int32(params.top_k),
            "top_p": jnp.float32(params.top_p),
            "min_p": jnp.float32(params.min_p),
            "repetition_penalty": jnp.float32(params.repetition_penalty),
        }
        base_key = jax.random.key(params.seed)

        greedy = params.greedy
        first = functools.partial(self._first_token_impl, greedy=greedy)
        decode = functools.partial(self._decode_impl, greedy=greedy)
        compile_before = self.compile_seconds
        t0 = time.perf_counter()
        cache = KVCache.create(cfg, B, cache_len)
        hidden = jnp.zeros((B, cfg.d_model), jnp.dtype(cfg.compute_dtype))
        for c in range(n_chunks):
            last = np.array(
                [ln - 1 - c * C if c * C <= ln - 1 < (c + 1) * C else -1 for ln in lengths] + [-1] * (B - n),
                np.int32,
            )
            hidden, cache = self._programs(
                "prefill",
                self._prefill_impl,
                (2,),
                self._state,
                self._layers,
                cache,
                tokens[:, c * C : (c + 1) * C],
                positions[:, c * C : (c + 1) * C],
                last,
                hidden,
            )
        next_ids, seen = self._programs(
            f"first-{greedy}",
            first,
            (),
            self._state,
            hidden,
            jax.random.fold_in(base_key, 0),
            sampling,
            jnp.asarray(seen),
        )
        next_host = np.asarray(next_ids)
        t1 = time.perf_counter()
        prefill_compile = self.compile_seconds - compile_before

        outputs: list[list[int]] = [[] for _ in range(n)]
        finish = ["length"] * n
        done = [False] * n
        stop_ids = set(params.stop_token_ids)
        pos = np.array(lengths + [0] * (B - n), np.int32)
        decoded = 0
        for step in range(max_new):
            for i in range(n):
                if done[i]:
                    continue
                tok = int(next_host[i])
                outputs[i].append(tok)
                decoded += 1
                stop = tok in stop_ids
                if on_token is not None and on_token(i, tok):
                    stop = True
                if stop:
                    done[i], finish[i] = True, "stop"
            if all(done) or step == max_new - 1:
                break
            next_ids, cache, seen = self._programs(
                f"decode-{greedy}",
                decode,
                (2, 7),
                self._state,
                self._layers,
                cache,
                next_ids,
                jnp.asarray(pos),
                jax.random.fold_in(base_key, step + 1),
                sampling,
                seen,
            )
            pos += 1
            next_host = np.asarray(next_ids)
        t2 = time.perf_counter()
        decode_compile = self.compile_seconds - compile_before - prefill_compile
        return GenerationResult(
            completions=[Completion(outputs[i], finish[i], lengths[i]) for i in range(n)],
            prefill_tokens=sum(lengths),
            prefill_seconds=t1 - t0 - prefill_compile,
            decode_tokens=decoded - n,  # each row's first token came from the prefill
            decode_seconds=t2 - t1 - decode_compile,
            timings={
                "batch_bucket": B,
                "cache_len": cache_len,
                "prefill_chunks": n_chunks,
                "compile_seconds": prefill_compile + decode_compile,
            },
        )
