"""The lm-evaluation-harness backend: `VishwamLM`, registered with lm-eval as model `vishwam`.

lm-eval builds the requests (prompts, few-shot contexts, choices) and scores the answers; this module
only answers them, with the same tokenization and truncation rules as lm-eval's own `hf` backend so
the numbers are comparable:

- loglikelihood: context and continuation split as `TemplateLM._encode_pair` does (trailing context
  spaces move to the continuation; the whole string is encoded and the context's tokens cut off), the
  input left-truncated to `max_length + 1` tokens, log-softmax in float32.
- loglikelihood_rolling: lm-eval's own disjoint rolling windows (`get_rolling_token_windows`).
- generate_until: the ONE generation engine (`vishwam_core.generate` through `vishwam_core.chat`),
  stop sequences cut exactly, the tokenizer's EOS always a stop, `max_gen_toks` new tokens at most.

`Scorer` does the loglikelihood work. Requests that share a context (the choices of one question) are
scored from one pass over that context: its keys and values are computed once into a KV cache, which
is then copied to one row per continuation, and only the continuation tokens run through the rest of
the model and the vocabulary projection. Shapes are bucketed (prefixes in chunks of 32 tokens, batch rows
in multiples of 8, cache length in multiples of 256) so XLA compiles a handful of programs, not one
per request.

Imports lm_eval and jax at module level: import this module only when evaluating.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from vishwam_core.errors import VishwamError
from vishwam_core.generate import CompiledPrograms
from vishwam_core.model import KVCache, Transformer, unstack_layers

log = logging.getLogger(__name__)

# progress(kind, done, total): kind is "loglikelihood" or "generate_until".
Progress = Callable[[str, int, int], None]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _row_bucket(n: int) -> int:
    """Batch rows: powers of two up to 8, then multiples of 8 (few shapes, little padding)."""
    return 1 << max(0, (n - 1).bit_length()) if n <= 8 else _round_up(n, 8)


def kv_bytes_per_token(cfg) -> int:
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * jnp.dtype(cfg.compute_dtype).itemsize


class Scorer:
    """log P(continuation | context) for many (context ids, continuation ids) pairs.

    `batch_rows` bounds the continuations scored together, `prefix_rows` the distinct contexts
    prefilled together; `cache_bytes` bounds the KV cache of one batch, `logit_tokens` the
    (rows x tokens) whose logits exist at once."""

    def __init__(
        self,
        model: Transformer,
        max_length: int,
        batch_rows: int = 64,
        prefix_rows: int = 8,
        prefill_chunk: int = 32,
        cache_bytes: int = 1 << 30,
        logit_tokens: int = 2048,
    ):
        self.cfg = model.cfg
        self.max_length = max_length
        self.batch_rows = batch_rows
        self.prefix_rows = prefix_rows
        self.prefill_chunk = prefill_chunk
        self.cache_slots = max(1, cache_bytes // kv_bytes_per_token(model.cfg))
        self.logit_tokens = logit_tokens
        self._graphdef, self._state = nnx.split(model)
        self.layers = unstack_layers(model)  # per-layer weights, as the generation engine uses them
        self._programs = CompiledPrograms()
        self.forward_tokens = 0  # tokens actually run through the model (prefixes once, padding included)

    # ---- compiled pieces -------------------------------------------------------------------
    @property
    def compile_seconds(self) -> float:
        return self._programs.compile_seconds

    def _prefill_impl(self, state, layers, cache, tokens, positions):
        model = nnx.merge(self._graphdef, state)
        _, cache = model(tokens, positions=positions, cache=cache, layers=layers, return_hidden=True)
        return cache

    @staticmethod
    def _expand_impl(cache, rows):
        """One cache row per continuation: row r takes its context's keys and values (rows[r])."""
        take = lambda a: jnp.take(a, rows, axis=0)  # noqa: E731
        return KVCache(
            k=tuple(map(take, cache.k)),
            v=tuple(map(take, cache.v)),
            positions=take(cache.positions),
            index=cache.index,
        )

    def _score_impl(self, state, layers, cache, tokens, positions, targets, mask):
        """tokens/positions/targets/mask (R, C) -> (cache, sum of target log-probs (R,), all greedy (R,))."""
        model = nnx.merge(self._graphdef, state)
        hidden, cache = model(tokens, positions=positions, cache=cache, layers=layers, return_hidden=True)
        logp = jax.nn.log_softmax(model.logits(hidden).astype(jnp.float32), axis=-1)  # (R, C, V)
        picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # (R, C)
        greedy = (jnp.argmax(logp, axis=-1) == targets) | ~mask
        return cache, jnp.sum(jnp.where(mask, picked, 0.0), axis=-1), jnp.all(greedy, axis=-1)

    # ---- the work ---------------------------------------------------------------------------
    def score(
        self,
        pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
        progress: Callable[[int], None] | None = None,
    ) -> list[tuple[float, bool]]:
        L = self.max_length
        prefixes, tails, targets = [], [], []
        for ctx, cont in pairs:
            if not ctx or not cont:
                raise VishwamError("A loglikelihood request needs a non-empty context and continuation.")
            if len(cont) > L:
                raise VishwamError(f"A continuation of {len(cont)} tokens does not fit max_length {L}.")
            whole = [*ctx, *cont][-(L + 1) :]  # lm-eval's left truncation
            ctx_kept = whole[: len(whole) - len(cont)]
            prefixes.append(tuple(ctx_kept[:-1]))
            tails.append([ctx_kept[-1], *cont[:-1]])  # predicts cont, one token each
            targets.append(list(cont))

        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, p in enumerate(prefixes):
            groups[p].append(i)
        # A unit is one context and as many of its continuations as one batch may hold (fewer when they
        # are long: rolling windows share the empty context); longest contexts first, as lm-eval's
        # backends order requests, so the first batch shows the largest memory need.
        units = []
        for p, members in groups.items():
            members = sorted(members, key=lambda i: -len(tails[i]))
            start = 0
            while start < len(members):
                cap = self._rows_cap(len(p), len(tails[members[start]]))
                units.append((p, members[start : start + cap]))
                start += cap
        units.sort(key=lambda u: (-len(u[0]), -max(len(tails[i]) for i in u[1])))

        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        batch: list[tuple[tuple[int, ...], list[int]]] = []
        for unit in units:
            if batch and not self._fits([*batch, unit], tails):
                self._score_batch(batch, tails, targets, results, progress)
                batch = []
            batch.append(unit)
        if batch:
            self._score_batch(batch, tails, targets, results, progress)
        return results  # type: ignore[return-value]

    def _dims(self, longest_prefix: int, longest_tail: int) -> tuple[int, int, int, int]:
        """(prefix length padded, tail chunk, tail chunks, cache length)."""
        # One chunk in multiples of 4 for short continuations (the choices of a question: padding there
        # is paid once per choice); long ones (rolling windows) in power-of-two chunks up to 256, so
        # their logits stay bounded.
        chunk = (
            _round_up(longest_tail, 4)
            if longest_tail <= 64
            else min(1 << (longest_tail - 1).bit_length(), 256)
        )
        n_chunks = -(-longest_tail // chunk)
        prefix_len = _round_up(longest_prefix, self.prefill_chunk)
        return prefix_len, chunk, n_chunks, _round_up(prefix_len + n_chunks * chunk, 256)

    def _shape(self, batch, tails) -> tuple[int, int, int, int]:
        longest_prefix = max(len(prefix) for prefix, _ in batch)
        return self._dims(longest_prefix, max(len(tails[i]) for _, members in batch for i in members))

    def _rows_cap(self, prefix_len: int, tail_len: int) -> int:
        """The most continuation rows of this shape one batch may hold under every budget."""
        _, chunk, _, cache_len = self._dims(prefix_len, tail_len)
        cap = min(self.batch_rows, self.logit_tokens // chunk, self.cache_slots // cache_len)
        while cap > 1 and (
            _row_bucket(cap) * chunk > self.logit_tokens or _row_bucket(cap) * cache_len > self.cache_slots
        ):
            cap -= 1
        return max(cap, 1)

    def _fits(self, batch, tails) -> bool:
        rows = sum(len(members) for _, members in batch)
        if len(batch) > self.prefix_rows or rows > self.batch_rows:
            return False
        _, chunk, _, cache_len = self._shape(batch, tails)
        rows_bucket = _row_bucket(rows)
        return rows_bucket * cache_len <= self.cache_slots and rows_bucket * chunk <= self.logit_tokens

    def _score_batch(self, keys, tails, targets, results, progress) -> None:
        prefix_len, chunk, n_chunks, cache_len = self._shape(keys, tails)
        n_prefix, n_rows = len(keys), sum(len(m) for _, m in keys)
        bp, br = _row_bucket(n_prefix), _row_bucket(n_rows)

        cache = KVCache.create(self.cfg, bp, cache_len)
        if prefix_len:
            tok = np.zeros((bp, prefix_len), np.int32)
            pos = np.full((bp, prefix_len), -1, np.int32)
            for g, (prefix, _) in enumerate(keys):
                tok[g, : len(prefix)] = prefix
                pos[g, : len(prefix)] = np.arange(len(prefix))
            C = self.prefill_chunk
            for c in range(0, prefix_len, C):
                cache = self._programs(
                    "prefill",
                    self._prefill_impl,
                    (2,),
                    self._state,
                    self.layers,
                    cache,
                    tok[:, c : c + C],
                    pos[:, c : c + C],
                )
            self.forward_tokens += bp * prefix_len

        width = n_chunks * chunk
        row_group = np.zeros((br,), np.int32)
        tok = np.zeros((br, width), np.int32)
        pos = np.full((br, width), -1, np.int32)
        tgt = np.zeros((br, width), np.int32)
        mask = np.zeros((br, width), bool)
        order: list[int] = []
        r = 0
        for g, (prefix, members) in enumerate(keys):
            for i in members:
                n = len(tails[i])
                row_group[r] = g
                tok[r, :n] = tails[i]
                pos[r, :n] = len(prefix) + np.arange(n)
                tgt[r, :n] = targets[i]
                mask[r, :n] = True
                order.append(i)
                r += 1
        cache = self._programs("expand", self._expand_impl, (), cache, row_group)
        logprob = np.zeros((br,), np.float64)
        greedy = np.ones((br,), bool)
        for c in range(0, width, chunk):
            s = slice(c, c + chunk)
            cache, lp, gr = self._programs(
                "score",
                self._score_impl,
                (2,),
                self._state,
                self.layers,
                cache,
                tok[:, s],
                pos[:, s],
                tgt[:, s],
                mask[:, s],
            )
            logprob += np.asarray(lp, np.float64)
            greedy &= np.asarray(gr)
        self.forward_tokens += br * width
        for r, i in enumerate(order):
            results[i] = (float(logprob[r]), bool(greedy[r]))
        if progress is not None:
            progress(len(order))


@register_model("vishwam")
class VishwamLM(TemplateLM):
    """lm-eval's view of a vishwam model directory (or an in-memory model and tokenizer).

    `vishwam eval` builds one directly; lm-eval's own CLI can too once this module is imported
    (`--model vishwam --model_args pretrained=DIR,batch_size=32`)."""

    def __init__(
        self,
        pretrained: str | None = None,
        model: Transformer | None = None,
        tokenizer=None,
        batch_size: int | str | None = 64,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        seed: int = 0,
        progress: Progress | None = None,
        **unused,
    ):
        super().__init__()
        from vishwam_core.checkpoint import load_model, load_tokenizer

        if model is None:
            if pretrained is None:
                raise VishwamError("The vishwam backend needs pretrained=DIR (a model directory) or a model.")
            tokenizer = tokenizer or load_tokenizer(pretrained)
            model = load_model(pretrained)
        if tokenizer is None:
            raise VishwamError("The vishwam backend needs the model's tokenizer.")
        for key in unused:  # lm-eval passes device / max_batch_size to every backend
            if key not in ("device", "max_batch_size", "dtype", "trust_remote_code"):
                raise VishwamError(f"The vishwam backend does not take '{key}'.")
        self.name = str(pretrained or model.cfg.name)
        self.model = model
        self.tokenizer = tokenizer
        self._max_length = int(max_length or model.cfg.max_seq_len)
        self._max_gen_toks = int(max_gen_toks)
        self.batch_rows = 64 if batch_size in (None, "auto") else int(batch_size)
        self.seed = seed
        self.progress = progress
        self.scorer = Scorer(model, self._max_length, batch_rows=max(self.batch_rows, 1))
        self._engine = None
        self.timings = {
            "loglikelihood_requests": 0,
            "loglikelihood_seconds": 0.0,
            "generate_requests": 0,
            "generate_seconds": 0.0,
        }

    # ---- what TemplateLM needs ---------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        # As lm-eval's hf backend: BOS when the tokenizer has one, else EOS.
        bos = self.tokenizer.bos_id
        return bos if bos is not None else self.tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return Path(self.name).name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            bos = self.tokenizer.bos_id
            bos_text = self.tokenizer.decode([bos]) if bos is not None else None
            add_special_tokens = not (bos_text and string.startswith(bos_text))
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template if chat_template else None

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    # ---- the three request types --------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        # TemplateLM's tokenization (the hf backend's); its tqdm bar off, vishwam reports progress.
        return super().loglikelihood(requests, disable_tqdm=True)

    def _loglikelihood_tokens(
        self, requests, disable_tqdm: bool = False, **kwargs
    ) -> list[tuple[float, bool]]:
        t = time.perf_counter()
        total, done = len(requests), 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if self.progress is not None:
                self.progress("loglikelihood", done, total)

        out = self.scorer.score([(ctx, cont) for _, ctx, cont in requests], progress=advance)
        self.timings["loglikelihood_requests"] += total
        self.timings["loglikelihood_seconds"] += time.perf_counter() - t
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows), strict=True):
            totals[i] += logprob
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from vishwam_core.chat import generate_text
        from vishwam_core.generate import Engine, SamplingParams

        if self._engine is None:  # shares the scorer's per-layer weights: one copy, not two
            self._engine = Engine(self.model, layers=self.scorer.layers)
        t = time.perf_counter()
        eos = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        by_kwargs: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            by_kwargs[repr(sorted(req.args[1].items()))].append(i)
        out: list[str | None] = [None] * len(requests)
        done = 0
        for indices in by_kwargs.values():
            gen_kwargs = requests[indices[0]].args[1]
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            max_ctx = self.max_length - max_gen_toks
            if max_ctx <= 0:
                raise VishwamError(
                    f"max_gen_toks {max_gen_toks} leaves no room for a prompt in max_length {self.max_length}."
                )
            params = SamplingParams(max_new_tokens=max_gen_toks, **self._sampling(kwargs))
            prompts = {i: self.tok_encode(requests[i].args[0])[-max_ctx:] for i in indices}
            ordered = sorted(indices, key=lambda i: -len(prompts[i]))  # similar lengths batch together
            for start in range(0, len(ordered), self.batch_rows):
                rows = ordered[start : start + self.batch_rows]
                completions, _ = generate_text(
                    self._engine, self.tokenizer, [prompts[i] for i in rows], params, stop_strings=until
                )
                for i, c in zip(rows, completions, strict=True):
                    out[i] = postprocess_generated_text(c.text, until, None)
                done += len(rows)
                if self.progress is not None:
                    self.progress("generate_until", done, len(requests))
        self.timings["generate_requests"] += len(requests)
        self.timings["generate_seconds"] += time.perf_counter() - t
        return out  # type: ignore[return-value]

    def _sampling(self, kwargs: dict) -> dict:
        """lm-eval's normalized generation kwargs -> SamplingParams fields."""
        do_sample = kwargs.pop("do_sample", False)
        temperature = float(kwargs.pop("temperature", 0.0))
        fields = {"temperature": temperature if do_sample else 0.0, "seed": self.seed}
        for ours, theirs in (("top_p", "top_p"), ("top_k", "top_k"), ("min_p", "min_p")):
            if theirs in kwargs:
                fields[ours] = kwargs.pop(theirs)
        if "repetition_penalty" in kwargs:
            fields["repetition_penalty"] = float(kwargs.pop("repetition_penalty"))
        if do_sample and fields["temperature"] == 0:
            fields["temperature"] = 1.0  # transformers' default when sampling
        if kwargs:
            log.warning("vishwam ignores these generation kwargs: %s", ", ".join(sorted(kwargs)))
        return fields
