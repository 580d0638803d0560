"""Rich consoles, created on first use so `vishwam --help` stays fast."""

from __future__ import annotations

from functools import cache


@cache
def stdout_console():
    from rich.console import Console

    return Console()


@cache
def stderr_console():
    from rich.console import Console

    return Console(stderr=True)
