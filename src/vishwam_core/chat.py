"""Text in, text out over the generation engine: chat templates, stop strings cut exactly, and
detokenization as a stream of valid UTF-8 (never half a character, never text past a stop string).

The engine (`vishwam_core.generate`) knows only token ids; this is the thin layer above it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vishwam_core.generate import Engine, GenerationResult, SamplingParams
from vishwam_core.tokenizer import Tokenizer


class StreamDecoder:
    """Turns token ids, one at a time, into text increments that are always whole UTF-8 characters.

    Byte-level BPE splits characters across tokens; a partial character decodes to U+FFFD, so text
    is held back until the character completes."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # everything emitted so far

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        if full.endswith("\ufffd"):
            return ""
        new, self.text = full[len(self.text) :], full
        return new


@dataclass
class TextCompletion:
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int


class _Row:
    """Per-row streaming state: stop-string search and the held-back tail."""

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str], on_text):
        self.decoder = StreamDecoder(tokenizer, skip_special_tokens=True)
        self.stop_strings = [s for s in stop_strings if s]
        self.hold = max((len(s) for s in self.stop_strings), default=1) - 1
        self.on_text = on_text
        self.text = ""  # accepted text (stop string excluded)
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> bool:
        self.text += self.decoder.push(token_id)
        cut = min((i for i in (self.text.find(s) for s in self.stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            self._emit(len(self.text))
            return True
        self._emit(len(self.text) - self.hold)
        return False

    def _emit(self, upto: int) -> None:
        if self.on_text is not None and upto > self.emitted:
            self.on_text(self.text[self.emitted : upto])
            self.emitted = upto

    def finish(self) -> None:
        self._emit(len(self.text))


def render_prompt(
    tokenizer: Tokenizer,
    prompt: str | None = None,
    chat: str | list[dict] | None = None,
    system: str | None = None,
) -> list[int]:
    """A plain prompt, or a chat message (or message list) rendered through the chat template."""
    if chat is not None:
        messages = [{"role": "user", "content": chat}] if isinstance(chat, str) else list(chat)
        if system is not None:
            messages = [{"role": "system", "content": system}, *messages]
        return tokenizer.encode(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True), add_special_tokens=False
        )
    return tokenizer.encode(prompt or "")


def generate_text(
    engine: Engine,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    stop_strings: Sequence[str] = (),
    on_text: Callable[[int, str], None] | None = None,
) -> tuple[list[TextCompletion], GenerationResult]:
    """Generate for each prompt; `on_text(row, text)` streams whole characters, never a stop string.

    The tokenizer's EOS is always a stop token (plus any in `params.stop_token_ids`)."""
    stop_ids = set(params.stop_token_ids)
    if tokenizer.eos_id is not None:
        stop_ids.add(tokenizer.eos_id)
    params = SamplingParams(**{**params.__dict__, "stop_token_ids": tuple(sorted(stop_ids))})
    rows = [
        _Row(tokenizer, stop_strings, (lambda t, i=i: on_text(i, t)) if on_text else None)
        for i in range(len(prompt_ids))
    ]
    result = engine.generate(prompt_ids, params, on_token=lambda i, tok: rows[i].push(tok))
    out = []
    for row, comp in zip(rows, result.completions, strict=True):
        row.finish()
        out.append(TextCompletion(row.text, comp.tokens, comp.finish_reason, comp.prompt_tokens))
    return out, result
