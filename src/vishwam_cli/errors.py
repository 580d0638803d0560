"""Map known failures to one actionable sentence and exit 1; tracebacks only with VISHWAM_DEBUG=1.

Usage errors (bad flags, missing arguments) are Click's and exit 2.
"""

from __future__ import annotations

import os
import sys


def debug_enabled() -> bool:
    return os.environ.get("VISHWAM_DEBUG", "") not in ("", "0", "false")


def message_for(exc: BaseException) -> str | None:
    """One sentence for a failure we can explain, else None."""
    from vishwam_core.errors import VishwamError

    if isinstance(exc, VishwamError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename or exc} does not exist."
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename} is a directory; a file was expected."
    if isinstance(exc, PermissionError):
        return f"Permission denied: {exc.filename}."
    if isinstance(exc, MemoryError):
        return "Out of memory; try a smaller batch, sequence length or model."
    if isinstance(exc, OSError) and exc.errno == 28:
        return f"No space left on device while writing {exc.filename or 'output'}."
    return None


def fail(exc: BaseException) -> None:
    """Print the sentence for `exc` on stderr and exit 1 (re-raise under VISHWAM_DEBUG=1)."""
    if debug_enabled():
        raise exc
    msg = message_for(exc)
    if msg is None:
        msg = f"Internal error ({type(exc).__name__}: {exc}). Re-run with VISHWAM_DEBUG=1 for the traceback."
    print(f"Error: {msg}", file=sys.stderr)
    sys.exit(1)
