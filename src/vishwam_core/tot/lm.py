"""The language model as the search sees it: text requests in, sampled texts out, every token counted.

    lm.complete([Request(prompt, n=3, temperature=0.7, max_tokens=64, stop=("\\n\\n",))])
    -> [Reply(texts=[...3 texts...], prompt_tokens=..., completion_tokens=...)]

`EngineLM` runs each `complete` call as few engine calls as the sampling settings allow (one per
distinct (temperature, max_tokens, stop) group, split only above `max_batch` rows): a BFS step's
proposals for every state are one batch, its value prompts another. Counting is per sequence, as the
engine prefills and decodes each row: a request with n=3 costs 3 LM calls and 3 prompts' tokens. A
greedy request (temperature 0) with n > 1 is generated once and copied, and counted once.

`FunctionLM` wraps any Python callable (a scripted fake in tests, or an outside API); it counts
whitespace-separated words as tokens. This module knows nothing of the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vishwam_core.errors import VishwamError


@dataclass(frozen=True)
class Request:
    prompt: str
    n: int = 1
    temperature: float = 0.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()


@dataclass
class Reply:
    texts: list[str]
    prompt_tokens: int  # summed over the n sequences
    completion_tokens: int
    lm_calls: int  # sequences actually generated


@dataclass
class Usage:
    lm_calls: int = 0  # sequences generated
    batches: int = 0  # complete() calls
    engine_calls: int = 0  # engine.generate() calls (one batched forward loop each)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    too_long: int = 0  # requests skipped mid-run because the prompt left no room (empty replies)

    def add(self, reply: Reply) -> None:
        self.lm_calls += reply.lm_calls
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class LanguageModel(Protocol):
    usage: Usage

    def complete(self, requests: Sequence[Request]) -> list[Reply]: ...

    def check_fits(self, prompts: Sequence[str], max_tokens: int, what: str) -> None: ...


# (prompt, n, temperature, call index) -> n texts
CompleteFn = Callable[[str, int, float, int], list[str]]


@dataclass
class FunctionLM:
    """Any callable as a model; `context` (in words) makes `check_fits` meaningful for tests."""

    fn: CompleteFn
    context: int | None = None
    usage: Usage = field(default_factory=Usage)
    prompts: list[str] = field(default_factory=list)  # every prompt generated from, in order

    def complete(self, requests: Sequence[Request]) -> list[Reply]:
        self.usage.batches += 1
        self.usage.engine_calls += 1
        out = []
        for r in requests:
            calls = 1 if r.temperature == 0 else r.n
            texts = list(self.fn(r.prompt, calls, r.temperature, self.usage.batches))
            if len(texts) != calls:
                raise VishwamError(f"The model function returned {len(texts)} texts for n={calls}.")
            texts = [_cut(t, r.stop) for t in texts]
            if calls == 1:
                texts = texts * r.n
            self.prompts.extend([r.prompt] * calls)
            reply = Reply(
                texts,
                prompt_tokens=calls * len(r.prompt.split()),
                completion_tokens=sum(len(t.split()) for t in texts[:calls]),
                lm_calls=calls,
            )
            self.usage.add(reply)
            out.append(reply)
        return out

    def check_fits(self, prompts: Sequence[str], max_tokens: int, what: str) -> None:
        if self.context is None:
            return
        longest = max(len(p.split()) for p in prompts)
        if longest + max_tokens > self.context:
            raise _too_short(self.context, longest, max_tokens, what)


def _cut(text: str, stop: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


def _too_short(context: int, longest: int, max_tokens: int, what: str) -> VishwamError:
    return VishwamError(
        f"The model's context of {context} tokens is too short for the {what} prompts "
        f"({longest} prompt tokens + {max_tokens} new are needed); use a model with a longer context, "
        f"shorter prompts (--prompts compact) or fewer new tokens."
    )


class EngineLM:
    """Requests through `vishwam_core.chat.generate_text` over one `Engine`.

    `chat=True` renders each prompt as a user message through the tokenizer's chat template (instruct
    models); `chat=False` feeds the text as is (models trained on plain prompt/response shards).
    Every engine call takes a fresh seed (base seed + call count), so runs repeat exactly."""

    def __init__(
        self,
        engine,
        tokenizer,
        chat: bool = False,
        system: str | None = None,
        seed: int = 0,
        max_batch: int | None = None,
        top_p: float = 1.0,
    ):
        if chat and not tokenizer.chat_template:
            raise VishwamError("This model's tokenizer has no chat template; run it with --no-chat.")
        self.engine = engine
        self.tokenizer = tokenizer
        self.chat = chat
        self.system = system
        self.seed = seed
        self.max_batch = max_batch
        self.top_p = top_p
        self.context = engine.cfg.max_seq_len
        self.usage = Usage()
        self._ids: dict[str, list[int]] = {}

    def encode(self, prompt: str) -> list[int]:
        ids = self._ids.get(prompt)
        if ids is None:
            from vishwam_core.chat import render_prompt

            if self.chat:
                ids = render_prompt(self.tokenizer, chat=prompt, system=self.system)
            else:
                ids = render_prompt(self.tokenizer, prompt=prompt)
            if len(self._ids) > 50_000:  # a memo for repeated prompts, not a leak
                self._ids.clear()
            self._ids[prompt] = ids
        return ids

    def check_fits(self, prompts: Sequence[str], max_tokens: int, what: str) -> None:
        longest = max(len(self.encode(p)) for p in prompts)
        if longest + max_tokens > self.context:
            raise _too_short(self.context, longest, max_tokens, what)

    def complete(self, requests: Sequence[Request]) -> list[Reply]:
        from vishwam_core.chat import generate_text
        from vishwam_core.generate import SamplingParams

        self.usage.batches += 1
        # A state grown past the context mid-run gets empty replies (counted) rather than ending a run
        # of many puzzles; `check_fits` on the first puzzle's longest prompts catches the usual case.
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.temperature, r.max_tokens, r.stop), []).append(i)
        texts: list[list[str]] = [[] for _ in requests]
        prompt_tokens = [0] * len(requests)
        completion_tokens = [0] * len(requests)
        calls = [0] * len(requests)
        for (temperature, max_tokens, stop), members in groups.items():
            rows: list[tuple[int, list[int]]] = []
            for i in members:
                ids = self.encode(requests[i].prompt)
                if len(ids) + max_tokens > self.context:
                    self.usage.too_long += 1
                    texts[i] = [""] * requests[i].n
                    continue
                copies = 1 if temperature == 0 else requests[i].n
                rows.extend((i, ids) for _ in range(copies))
            size = self.max_batch or len(rows)
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                params = SamplingParams(
                    max_new_tokens=max_tokens,
                    temperature=temperature,
                    top_p=self.top_p if temperature > 0 else 1.0,
                    seed=self.seed + self.usage.engine_calls,
                )
                self.usage.engine_calls += 1
                done, _ = generate_text(
                    self.engine, self.tokenizer, [ids for _, ids in chunk], params, stop_strings=stop
                )
                for (i, ids), c in zip(chunk, done, strict=True):
                    texts[i].append(c.text)
                    prompt_tokens[i] += len(ids)
                    completion_tokens[i] += len(c.tokens)
                    calls[i] += 1
        out = []
        for i, r in enumerate(requests):
            if len(texts[i]) == 1 and r.n > 1:  # greedy: one generation stands for all n
                texts[i] = texts[i] * r.n
            reply = Reply(texts[i], prompt_tokens[i], completion_tokens[i], calls[i])
            self.usage.add(reply)
            out.append(reply)
        return out
