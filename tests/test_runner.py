"""The local process runner: output, cap, timeout, cancel, process-group cleanup, env."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from execution.runner import CHUNK_MAX_BYTES, OutputChunk, ProcessResult, run_process

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


def run(argv, recorder: Recorder | None = None, **overrides) -> ProcessResult:
    recorder = recorder or Recorder()
    params = {
        "cwd": str(Path.cwd()),
        "env": PATH_ENV,
        "timeout_s": 30.0,
        "on_output": recorder.on_output,
        "should_cancel": lambda: False,
        "on_tick": recorder.on_tick,
        "max_output_bytes": 10 * 1024 * 1024,
    }
    params.update(overrides)
    return run_process(argv, **params)


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


def test_echo_output_is_captured():
    recorder = Recorder()

    result = run(["echo", "hi"], recorder)

    assert result.exit_code == 0
    assert recorder.chunks == [OutputChunk("stdout", "hi\n")]


def test_stderr_is_delivered_as_its_own_stream():
    recorder = Recorder()

    run(["sh", "-c", "echo out; echo err >&2"], recorder)

    assert recorder.text("stdout") == "out\n"
    assert recorder.text("stderr") == "err\n"


def test_final_partial_line_is_flushed_at_eof():
    recorder = Recorder()

    run(["printf", "one\ntwo"], recorder)

    assert recorder.text() == "one\ntwo"


def test_invalid_utf8_is_replaced_not_fatal():
    recorder = Recorder()

    result = run(["printf", "caf\\351\\n"], recorder)

    assert result.exit_code == 0
    assert recorder.text() == "caf\ufffd\n"


def test_nonzero_exit_code_is_reported():
    assert run(["sh", "-c", "exit 3"]).exit_code == 3


def test_process_runs_in_the_given_cwd(tmp_path):
    recorder = Recorder()

    run(["pwd"], recorder, cwd=str(tmp_path))

    assert recorder.text() == f"{tmp_path}\n"


def test_env_is_exactly_what_was_passed():
    recorder = Recorder()

    run(["/usr/bin/env"], recorder, env={"ONLY": "this"})

    assert recorder.text() == "ONLY=this\n"


def test_hundred_thousand_lines_stream_in_order_in_few_batches():
    recorder = Recorder()
    started = time.monotonic()

    result = run(["seq", "1", "100000"], recorder)

    assert time.monotonic() - started < 3.0
    assert result.exit_code == 0
    assert result.truncated is False
    assert recorder.text() == "".join(f"{i}\n" for i in range(1, 100001))
    assert len(recorder.batches) < 100  # batched, never one call per line


def test_chunks_hold_whole_lines_and_stay_under_64_kib():
    recorder = Recorder()

    run(["seq", "1", "100000"], recorder)

    for chunk in recorder.chunks:
        assert len(chunk.text.encode()) <= CHUNK_MAX_BYTES
        assert chunk.text.endswith("\n")
    for batch in recorder.batches:
        assert sum(len(chunk.text.encode()) for chunk in batch) <= CHUNK_MAX_BYTES


def test_line_longer_than_a_chunk_arrives_in_consecutive_pieces():
    recorder = Recorder()
    line = "x" * (3 * CHUNK_MAX_BYTES) + "\n"
    code = f"import sys; sys.stdout.write('x' * {3 * CHUNK_MAX_BYTES} + '\\n')"

    run([sys.executable, "-c", code], recorder)

    assert recorder.text() == line
    assert all(len(chunk.text) <= CHUNK_MAX_BYTES for chunk in recorder.chunks)


def test_output_cap_keeps_an_in_order_prefix_of_whole_lines():
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


def test_output_cap_counts_both_streams():
    recorder = Recorder()

    result = run(["sh", "-c", "echo 12345; echo 67890 >&2"], recorder, max_output_bytes=8)

    assert result.truncated is True
    assert recorder.text("stdout") + recorder.text("stderr") in ("12345\n", "67890\n")
    assert result.dropped_bytes == 6


def test_output_beyond_the_cap_is_drained_so_the_child_finishes():
    # 2 MB through a 1 KB cap: a child that blocked on a full pipe would time out.
    code = "for _ in range(20000): print('y' * 99)"

    result = run([sys.executable, "-c", code], max_output_bytes=1024, timeout_s=10)

    assert result.timed_out is False
    assert result.exit_code == 0
    assert result.dropped_bytes == 20000 * 100 - 1000


# --------------------------------------------------------- timeout and cancel


def test_timeout_kills_the_process():
    started = time.monotonic()

    result = run(["sleep", "60"], timeout_s=0.5)

    assert result.timed_out is True
    assert result.exit_code is not None and result.exit_code < 0
    assert time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_cancel_of_sleep_returns_quickly_and_leaves_no_group():
    started = time.monotonic()

    result = run(["sleep", "60"], should_cancel=cancel_after(0.3))

    assert result.canceled is True
    assert time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_cancel_kills_background_grandchildren():
    started = time.monotonic()

    result = run(["sh", "-c", "sleep 60 & sleep 60; wait"], should_cancel=cancel_after(0.3))

    assert result.canceled is True
    assert time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored():
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


def test_background_process_outliving_the_leader_is_killed():
    recorder = Recorder()
    started = time.monotonic()

    result = run(["sh", "-c", "sleep 60 & echo started"], recorder)

    assert result.exit_code == 0
    assert recorder.text() == "started\n"
    assert time.monotonic() - started < 3.0
    assert_group_gone(result.pid)


def test_should_cancel_is_polled_at_a_bounded_rate():
    recorder = Recorder()
    should_cancel = cancel_after(1e9, recorder)

    run(["sleep", "1"], recorder, should_cancel=should_cancel)

    assert 2 <= recorder.cancel_polls <= 8  # every ~0.2 s, not in a tight loop


def test_on_tick_is_called_while_running():
    recorder = Recorder()

    run(["sleep", "0.55"], recorder, tick_interval_s=0.1)

    assert recorder.ticks >= 3


def test_callback_error_propagates_after_the_group_is_killed():
    pids: list[int] = []

    def failing_on_output(chunks: list[OutputChunk]) -> None:
        pids.append(int(chunks[0].text))
        raise RuntimeError("database is gone")

    with pytest.raises(RuntimeError, match="database is gone"):
        run(["sh", "-c", "echo $$; sleep 60"], on_output=failing_on_output, flush_interval_s=0.05)

    assert_group_gone(pids[0])


# ------------------------------------------------------------ spawn failures


def test_missing_executable_returns_127_with_an_error():
    result = run(["no-such-tool-xyz"])

    assert result.exit_code == 127
    assert "no-such-tool-xyz" in result.error
    assert result.pid is None


def test_non_executable_file_returns_126_with_an_error(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)

    result = run([str(script)])

    assert result.exit_code == 126
    assert result.error


def test_missing_cwd_is_reported_without_an_exit_code(tmp_path):
    result = run(["ls"], cwd=str(tmp_path / "gone"))

    assert result.exit_code is None
    assert "gone" in result.error


def test_empty_argv_is_a_programming_error():
    with pytest.raises(ValueError):
        run([])
