"""Options every command shares."""

from __future__ import annotations

from typing import Annotated

import typer

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout; logs stay on stderr.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
Force = Annotated[bool, typer.Option("--force", help="Replace OUT if it already exists.")]

DTYPE_ALIASES = {
    "f32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "f16": "float16",
    "float16": "float16",
}


def parse_dtype(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in DTYPE_ALIASES:
        raise typer.BadParameter(f"'{value}' is not one of f32, bf16, f16.")
    return DTYPE_ALIASES[value]
