"""Tokenizers: loading `tokenizer.json` + `tokenizer_config.json`, rebuilding a byte-level BPE from a
GGUF vocabulary, training a new byte-level BPE, saving in the Hugging Face layout, and rendering chat
templates.

Built on the `tokenizers` library; this module knows nothing of models or weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from vishwam_core.errors import VishwamError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)

# llama.cpp's pre-tokenizer regexes, by the GGUF key `tokenizer.ggml.pre` (llama-vocab.cpp).
_LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GGUF_PRE_TOKENIZERS = ("smollm", "gpt-2", "default", "llama-bpe", "llama3", "qwen2")

# GGUF token types (llama.cpp's llama_token_type).
_CONTROL, _USER_DEFINED = 3, 4


def _pre_tokenizer(kind: str):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "smollm":  # every digit on its own, then GPT-2's byte-level split
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if kind in ("gpt-2", "default"):
        return byte_level
    pattern = {"llama-bpe": _LLAMA3_PATTERN, "llama3": _LLAMA3_PATTERN, "qwen2": _QWEN2_PATTERN}.get(kind)
    if pattern is None:
        raise VishwamError(
            f"Unsupported GGUF pre-tokenizer '{kind}': vishwam rebuilds {', '.join(GGUF_PRE_TOKENIZERS)}."
        )
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


@dataclass
class Tokenizer:
    """A `tokenizers.Tokenizer` plus the fields of tokenizer_config.json that matter to vishwam."""

    backend: Any  # tokenizers.Tokenizer
    config: dict[str, Any] = field(default_factory=dict)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        path = directory / "tokenizer.json" if directory.is_dir() else directory
        if not path.exists():
            raise VishwamError(f"No tokenizer.json in {directory}.")
        from tokenizers import Tokenizer as Backend

        try:
            backend = Backend.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise VishwamError(f"{path} is not a readable tokenizer.json ({e}).") from None
        config: dict[str, Any] = {}
        cfg_path = path.parent / "tokenizer_config.json"
        if cfg_path.exists():
            config = json.loads(cfg_path.read_text())
        template = path.parent / "chat_template.jinja"
        if "chat_template" not in config and template.exists():
            config["chat_template"] = template.read_text()
        return cls(backend, config)

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any]) -> Tokenizer:
        """Rebuild the tokenizer llama.cpp would use from a GGUF's `tokenizer.*` metadata."""
        from tokenizers import AddedToken, decoders, models, processors
        from tokenizers import Tokenizer as Backend

        kind = fields.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise VishwamError(
                f"Unsupported GGUF tokenizer model '{kind}': vishwam rebuilds byte-level BPE ('gpt2') tokenizers."
            )
        tokens: list[str] = fields.get("tokenizer.ggml.tokens") or []
        if not tokens:
            raise VishwamError("The GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens).")
        merges = [tuple(m.split(" ", 1)) for m in fields.get("tokenizer.ggml.merges") or []]
        types: list[int] = fields.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        vocab = {tok: i for i, tok in enumerate(tokens)}
        backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        backend.pre_tokenizer = _pre_tokenizer(fields.get("tokenizer.ggml.pre") or "default")
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        backend.add_tokens(
            [
                AddedToken(tokens[i], special=t == _CONTROL, normalized=False)
                for i, t in enumerate(types)
                if t in (_CONTROL, _USER_DEFINED)
            ]
        )

        def token(key: str) -> str | None:
            i = fields.get(f"tokenizer.ggml.{key}_token_id")
            return tokens[i] if i is not None and 0 <= i < len(tokens) else None

        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": token("bos"),
            "eos_token": token("eos"),
            "unk_token": token("unknown"),
            "pad_token": token("padding"),
            "add_bos_token": bool(fields.get("tokenizer.ggml.add_bos_token", False)),
            "add_eos_token": bool(fields.get("tokenizer.ggml.add_eos_token", False)),
            "clean_up_tokenization_spaces": False,
            "model_max_length": int(fields.get("context_length") or 8192),
        }
        if fields.get("tokenizer.chat_template"):
            config["chat_template"] = fields["tokenizer.chat_template"]
        return cls(backend, {k: v for k, v in config.items() if v is not None})

    # ---- saving ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> list[str]:
        directory = Path(directory)
        self.backend.save(str(directory / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **self.config}
        (directory / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        )
        special = {
            k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(k)
        }
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
        return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

    # ---- use ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self.token_id(_token_str(self.config.get("bos_token")))

    @property
    def eos_id(self) -> int | None:
        return self.token_id(_token_str(self.config.get("eos_token")))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.config.get("add_bos_token") and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @property
    def chat_template(self) -> str | None:
        return self.config.get("chat_template")

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render messages through the jinja2 chat template, as transformers does (sandboxed)."""
        if not self.chat_template:
            raise VishwamError(
                "This tokenizer has no chat template; pass plain text or add one to tokenizer_config.json."
            )
        from jinja2.exceptions import TemplateError

        try:
            return _compiled_template(self.chat_template).render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=_token_str(self.config.get("bos_token")) or "",
                eos_token=_token_str(self.config.get("eos_token")) or "",
            )
        except TemplateError as e:
            raise VishwamError(f"The chat template rejected these messages: {e}") from None


@lru_cache(maxsize=8)
def _compiled_template(template: str):
    """Compile a chat template once: data conversion renders it for every conversation."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


# ---- training ----------------------------------------------------------------------------------------
# The special tokens and ChatML template of a trained tokenizer, laid out as SmolLM2-Instruct's are
# (ids 0-2; the end-of-turn token doubles as EOS, so documents and assistant turns end alike).
TRAINED_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def train_bpe(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, max_length: int = 8192
) -> Tokenizer:
    """Train a byte-level BPE (every byte representable, so any text round-trips exactly).

    Pre-tokenization splits every digit and then follows GPT-2's byte-level regex, as SmolLM2's does.
    """
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    smallest = len(alphabet) + len(TRAINED_SPECIAL_TOKENS)
    if vocab_size < smallest:
        raise VishwamError(
            f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least {smallest} tokens "
            f"({len(alphabet)} bytes + {len(TRAINED_SPECIAL_TOKENS)} special tokens)."
        )
    backend = Backend(models.BPE(fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = _pre_tokenizer("smollm")
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(TRAINED_SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    endoftext, im_start, im_end = TRAINED_SPECIAL_TOKENS
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": im_start,
        "eos_token": im_end,
        "pad_token": endoftext,
        "unk_token": endoftext,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "chat_template": CHATML_TEMPLATE,
    }
    return Tokenizer(backend, config)


def _token_str(tok: Any) -> str | None:
    """tokenizer_config.json holds special tokens as strings or as AddedToken dicts."""
    if isinstance(tok, dict):
        return tok.get("content")
    return tok
