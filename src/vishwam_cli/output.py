"""One output object per command: human text, `--json` (one JSON document on stdout) or `--quiet`.

Data goes to stdout; logs, progress and hints go to stderr, so pipelines can parse stdout.
Progress is a rich bar when stderr is a terminal and plain periodic lines otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet

    def log(self, message: str) -> None:
        """A progress or status line on stderr (silent under --quiet and --json)."""
        if not (self.quiet or self.json_mode):
            print(message, file=sys.stderr, flush=True)

    def result(self, data: dict[str, Any], render: Callable[[dict[str, Any]], None] | None = None) -> None:
        """The command's result: JSON on stdout under --json, else the human rendering."""
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        elif not self.quiet:
            (render or _render_plain)(data)

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        """Yields `advance(n, info=None)`; `info` is a short status (e.g. the loss) shown beside the
        count. Rich bar on a TTY; otherwise a plain line at most every 5 s."""
        if self.quiet or self.json_mode:
            yield lambda n=1, info=None: None
            return
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from vishwam_cli.console import stderr_console

            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=True,
            ) as bar:
                task = bar.add_task(description, total=total)

                def advance_bar(n: int = 1, info: str | None = None) -> None:
                    bar.update(task, advance=n, description=f"{description} {info}" if info else description)

                yield advance_bar
            return
        state = {"done": 0, "last": time.monotonic()}

        def advance(n: int = 1, info: str | None = None) -> None:
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] >= 5 or (total and state["done"] >= total):
                state["last"] = now
                of = f"/{total}" if total else ""
                tail = f" {info}" if info else ""
                print(f"{description}: {state['done']}{of}{tail}", file=sys.stderr, flush=True)

        yield advance


def _render_plain(data: dict[str, Any]) -> None:
    for key, value in data.items():
        print(f"{key}: {value}")
