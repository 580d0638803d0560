"""Errors that carry one actionable sentence for the user.

Core code raises `VishwamError` (or a subclass) for every failure it can explain; the CLI prints the
message and exits 1. Anything else is a bug and keeps its traceback (under VISHWAM_DEBUG=1).
"""

from __future__ import annotations


class VishwamError(Exception):
    """A failure with a message meant for the user: one sentence saying what is wrong and what to do."""


class CheckpointError(VishwamError):
    """A model directory or weights file that cannot be read or written as asked."""


class ConversionError(VishwamError):
    """A source (GGUF, HF directory) that cannot be converted."""
