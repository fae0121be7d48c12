"""The local process runner: output, cap, timeout, cancel, process-group cleanup, env.

Every test runs twice: bare (``sandbox=None``, process-group isolation only)
and inside the bubblewrap sandbox, whose workspace is the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from execution.runner import CHUNK_MAX_BYTES, OutputChunk, ProcessResult, run_process
from execution.sandbox import BwrapSandbox
from tests.integration.processes import ROOT, wait_for
from tests.sandboxing import kill_processes_with, live_processes_with, require_bwrap, unique_seconds

PATH_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


class Recorder:
    """Collects on_output batches and counts callback calls."""

    def __init__(self) -> None:
        self.batches: list[list[OutputChunk]] = []
        self.ticks = 0
        self.cancel_polls = 0

    def on_output(self, chunks: list[OutputChunk]) -> None:
        self.batches.append(list(chunks))

    def on_tick(self) -> None:
        self.ticks += 1

    @property
    def chunks(self) -> list[OutputChunk]:
        return [chunk for batch in self.batches for chunk in batch]

    def text(self, stream: str = "stdout") -> str:
        return "".join(chunk.text for chunk in self.chunks if chunk.stream == stream)


class Runner:
    """``run_process`` with test defaults, bare or in a sandbox over ``workspace``."""

    def __init__(self, workspace: str, sandbox: BwrapSandbox | None) -> None:
        self.workspace = workspace
        self.sandbox = sandbox

    def __call__(self, argv, recorder: Recorder | None = None, **overrides) -> ProcessResult:
        recorder = recorder or Recorder()
        params = {
            "cwd": self.workspace,
            "env": PATH_ENV,
            "timeout_s": 30.0,
            "on_output": recorder.on_output,
            "should_cancel": lambda: False,
            "on_tick": recorder.on_tick,
            "max_output_bytes": 10 * 1024 * 1024,
            "sandbox": self.sandbox,
        }
        params.update(overrides)
        return run_process(argv, **params)

    def killed_by(self, sig: signal.Signals) -> int:
        """The exit code of a command ended by ``sig``: bwrap reports 128 + N."""
        return -sig if self.sandbox is None else 128 + sig


def make_runner(tmp_path, mode: str) -> Runner:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    sandbox = None
    if mode == "bwrap":
        sandbox = BwrapSandbox(bwrap=require_bwrap(), workspace=str(workspace))
    return Runner(str(workspace), sandbox)


@pytest.fixture(params=["bare", "bwrap"])
def run(request, tmp_path) -> Runner:
    return make_runner(tmp_path, request.param)


@pytest.fixture
def sandboxed(tmp_path) -> Runner:
    """Only in the sandbox: without it a setsid() child leaves the process group
    and survives (the documented limit of EXECUTION_SANDBOX=none)."""
    return make_runner(tmp_path, "bwrap")


def cancel_after(seconds: float, recorder: Recorder | None = None):
    start = time.monotonic()

    def should_cancel() -> bool:
        if recorder is not None:
            recorder.cancel_polls += 1
        return time.monotonic() - start >= seconds

    return should_cancel


def assert_group_gone(pgid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


# ------------------------------------------------------------------- output


def test_echo_output_is_captured(run):
    recorder = Recorder()

    result = run(["echo", "hi"], recorder)

    assert result.exit_code == 0
    assert recorder.chunks == [OutputChunk("stdout", "hi\n")]


def test_stderr_is_delivered_as_its_own_stream(run):
    recorder = Recorder()

    run(["sh", "-c", "echo out; echo err >&2"], recorder)

    assert recorder.text("stdout") == "out\n"
    assert recorder.text("stderr") == "err\n"


def test_final_partial_line_is_flushed_at_eof(run):
    recorder = Recorder()

    run(["printf", "one\ntwo"], recorder)

    assert recorder.text() == "one\ntwo"


def test_invalid_utf8_is_replaced_not_fatal(run):
    recorder = Recorder()

    result = run(["printf", "caf\\351\\n"], recorder)

    assert result.exit_code == 0
    assert recorder.text() == "caf\ufffd\n"


def test_nonzero_exit_code_is_reported(run):
    assert run(["sh", "-c", "exit 3"]).exit_code == 3


def test_process_runs_in_the_given_cwd(run):
    recorder = Recorder()
    cwd = os.path.join(run.workspace, "sub")
    os.mkdir(cwd)

    run(["pwd"], recorder, cwd=cwd)

    assert recorder.text() == f"{cwd}\n"


def test_env_is_exactly_what_was_passed(run):
    recorder = Recorder()

    run(["/usr/bin/env"], recorder, env={"ONLY": "this"})

    # bwrap adds PWD, the directory it changed to.
    extra = "" if run.sandbox is None else f"PWD={run.workspace}\n"
    assert recorder.text() == "ONLY=this\n" + extra


def test_hundred_thousand_lines_stream_in_order_in_few_batches(run):
    recorder = Recorder()
    started = time.monotonic()

    result = run(["seq", "1", "100000"], recorder)

    assert time.monotonic() - started < 3.0
    assert result.exit_code == 0
    assert result.truncated is False
    assert recorder.text() == "".join(f"{i}\n" for i in range(1, 100001))
    assert len(recorder.batches) < 100  # batched, never one call per line


def test_chunks_hold_whole_lines_and_stay_under_64_kib(run):
    recorder = Recorder()

    run(["seq", "1", "100000"], recorder)

    for chunk in recorder.chunks:
        assert len(chunk.text.encode()) <= CHUNK_MAX_BYTES
        assert chunk.text.endswith("\n")
    for batch in recorder.batches:
        assert sum(len(chunk.text.encode()) for chunk in batch) <= CHUNK_MAX_BYTES


def test_line_longer_than_a_chunk_arrives_in_consecutive_pieces(run):
    recorder = Recorder()
    line = "x" * (3 * CHUNK_MAX_BYTES) + "\n"
    code = f"import sys; sys.stdout.write('x' * {3 * CHUNK_MAX_BYTES} + '\\n')"

    run(["python3", "-c", code], recorder)

    assert recorder.text() == line
    assert all(len(chunk.text) <= CHUNK_MAX_BYTES for chunk in recorder.chunks)


def test_output_cap_keeps_an_in_order_prefix_of_whole_lines(run):
    recorder = Recorder()
    cap = 100_000
    full = "".join(f"{i}\n" for i in range(1, 100001))

    result = run(["seq", "1", "100000"], recorder, max_output_bytes=cap)

    stored = recorder.text()
    assert result.exit_code == 0
    assert result.truncated is True
    assert full.startswith(stored)
    assert stored.endswith("\n")
    assert cap - len("100000\n") < len(stored) <= cap
    assert result.dropped_bytes == len(full) - len(stored)


def test_output_cap_counts_both_streams(run):
    recorder = Recorder()

    result = run(["sh", "-c", "echo 12345; echo 67890 >&2"], recorder, max_output_bytes=8)

    assert result.truncated is True
    assert recorder.text("stdout") + recorder.text("stderr") in ("12345\n", "67890\n")
    assert result.dropped_bytes == 6


def test_output_beyond_the_cap_is_drained_so_the_child_finishes(run):
    # 2 MB through a 1 KB cap: a child that blocked on a full pipe would time out.
    code = "for _ in range(20000): print('y' * 99)"

    result = run(["python3", "-c", code], max_output_bytes=1024, timeout_s=10)

    assert result.timed_out is False
    assert result.exit_code == 0
    assert result.dropped_bytes == 20000 * 100 - 1000


# --------------------------------------------------------- timeout and cancel


def test_timeout_kills_the_process(run):
    started = time.monotonic()

    result = run(["sleep", "60"], timeout_s=0.5)

    assert result.timed_out is True
    assert result.exit_code == run.killed_by(signal.SIGTERM)
    assert time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_cancel_of_sleep_returns_quickly_and_leaves_no_group(run):
    started = time.monotonic()

    result = run(["sleep", "60"], should_cancel=cancel_after(0.3))

    assert result.canceled is True
    assert time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_cancel_kills_background_grandchildren(run):
    started = time.monotonic()

    result = run(["sh", "-c", "sleep 60 & sleep 60; wait"], should_cancel=cancel_after(0.3))

    assert result.canceled is True
    assert time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(run):
    started = time.monotonic()

    result = run(
        ["sh", "-c", "trap '' TERM; sleep 60"],
        should_cancel=cancel_after(0.3),
        cancel_grace_s=0.5,
    )

    assert result.canceled is True
    assert result.exit_code == -9
    assert 0.7 <= time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_background_process_outliving_the_leader_is_killed(run):
    recorder = Recorder()
    started = time.monotonic()

    result = run(["sh", "-c", "sleep 60 & echo started"], recorder)

    assert result.exit_code == 0
    assert recorder.text() == "started\n"
    assert time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_should_cancel_is_polled_at_a_bounded_rate(run):
    recorder = Recorder()
    should_cancel = cancel_after(1e9, recorder)

    run(["sleep", "1"], recorder, should_cancel=should_cancel)

    assert 2 <= recorder.cancel_polls <= 8  # every ~0.2 s, not in a tight loop


def test_on_tick_is_called_while_running(run):
    recorder = Recorder()

    run(["sleep", "0.55"], recorder, tick_interval_s=0.1)

    assert recorder.ticks >= 3


def test_callback_error_propagates_after_the_group_is_killed(run):
    marker = unique_seconds(60)

    def failing_on_output(chunks: list[OutputChunk]) -> None:
        raise RuntimeError("database is gone")

    with pytest.raises(RuntimeError, match="database is gone"):
        run(["sh", "-c", f"echo started; sleep {marker}"], on_output=failing_on_output)

    assert live_processes_with(marker) == []


# ------------------------------------------------------------ spawn failures


def test_missing_executable_returns_127_with_an_error(run):
    result = run(["no-such-tool-xyz"])

    assert result.exit_code == 127
    assert "no-such-tool-xyz" in result.error
    assert result.pid is None


def test_non_executable_file_returns_126_with_an_error(run):
    script = Path(run.workspace) / "script.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)

    result = run([str(script)])

    assert result.exit_code == 126
    assert result.error


def test_missing_cwd_is_reported_without_an_exit_code(run):
    result = run(["ls"], cwd=os.path.join(run.workspace, "gone"))

    assert result.exit_code is None
    assert "gone" in result.error


def test_empty_argv_is_a_programming_error(run):
    with pytest.raises(ValueError):
        run([])


# ------------------------------------------------------------ setsid children


# start_new_session=True is setsid() in the child before exec: once "started"
# is printed, the sleep runs in a session (and process group) of its own.
SETSID_CHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen(['sleep', sys.argv[1]], start_new_session=True); "
    "print('started', flush=True); time.sleep(60)"
)


def test_cancel_ends_a_setsid_child_of_the_sandboxed_command(sandboxed):
    recorder = Recorder()
    marker = unique_seconds()
    try:
        result = sandboxed(
            ["python3", "-c", SETSID_CHILD, marker], recorder, should_cancel=cancel_after(0.5)
        )

        assert result.canceled is True
        assert recorder.text() == "started\n"
        assert live_processes_with(marker) == []
    finally:
        kill_processes_with(marker)


def test_timeout_ends_a_setsid_child_of_the_sandboxed_command(sandboxed):
    recorder = Recorder()
    marker = unique_seconds()
    try:
        result = sandboxed(["python3", "-c", SETSID_CHILD, marker], recorder, timeout_s=0.5)

        assert result.timed_out is True
        assert recorder.text() == "started\n"
        assert live_processes_with(marker) == []
    finally:
        kill_processes_with(marker)


def test_a_setsid_child_ends_with_the_sandboxed_command(sandboxed):
    marker = unique_seconds()
    started = f"until pgrep -fx 'sleep {marker}' >/dev/null; do sleep 0.01; done"
    try:
        result = sandboxed(["sh", "-c", f"setsid sleep {marker} & {started}; echo started"])

        assert result.exit_code == 0
        assert live_processes_with(marker) == []
    finally:
        kill_processes_with(marker)


def test_sigterm_reaches_the_command_inside_the_sandbox_first(sandboxed):
    recorder = Recorder()

    result = sandboxed(
        ["sh", "-c", "trap 'echo stopping; exit 7' TERM; sleep 60 & wait"],
        recorder,
        should_cancel=cancel_after(0.5),
        cancel_grace_s=5.0,
    )

    assert result.canceled is True
    assert recorder.text() == "stopping\n"
    assert result.exit_code == 7  # it ended on its own, within the grace


def test_an_executable_outside_the_sandbox_is_reported_as_not_found(sandboxed, tmp_path):
    outside = tmp_path / "tool"
    outside.write_text("#!/bin/sh\necho ran\n")
    outside.chmod(0o755)

    result = sandboxed([str(outside)])

    assert result.exit_code == 127
    assert "outside" in result.error


def test_a_killed_worker_takes_its_whole_sandbox_with_it(sandboxed):
    # The worker dies without running any cleanup (OOM killer, kill -9): bwrap's
    # --die-with-parent ends the sandbox, setsid() children included.
    marker = unique_seconds()
    worker_code = (
        "import sys\n"
        "from execution.runner import run_process\n"
        "from execution.sandbox import BwrapSandbox\n"
        "bwrap, workspace, code, marker = sys.argv[1:]\n"
        "run_process(['python3', '-c', code, marker], cwd=workspace,"
        " env={'PATH': '/usr/bin:/bin'}, timeout_s=60, on_output=lambda chunks: None,"
        " should_cancel=lambda: False, max_output_bytes=1000,"
        " sandbox=BwrapSandbox(bwrap, workspace))\n"
    )
    argv = [sandboxed.sandbox.bwrap, sandboxed.workspace, SETSID_CHILD, marker]
    worker = subprocess.Popen([sys.executable, "-c", worker_code, *argv], cwd=ROOT)
    try:
        wait_for(lambda: live_processes_with(marker), timeout=10)

        worker.kill()
        worker.wait()

        wait_for(lambda: live_processes_with(marker) == [], timeout=5)
    finally:
        worker.kill()
        worker.wait()
        kill_processes_with(marker)
