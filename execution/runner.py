"""Run one local process safely: no shell, own process group, watchdog, capped output.

Pure Python (no Django): ``execution.local_runtime`` passes callbacks that store
output as run events, poll the run's cancel flag and beat the worker heartbeat.

How it works, in one thread:

* The child is spawned with ``start_new_session=True``, so it leads a new process
  group (pgid == pid) and everything it starts can be signalled at once.
* One ``selectors`` loop reads stdout and stderr as they come and wakes up for the
  timers (flush, heartbeat tick, cancel poll, timeout, kill escalation). Nothing
  blocks on the child, so the watchdog always runs.
* Output is cut into whole lines and batched into :class:`OutputChunk` lists of at
  most ~64 KiB (:data:`CHUNK_MAX_BYTES`); ``on_output`` receives a batch at most
  every ``flush_interval_s`` or when it is full, never once per line.
* The leader's exit is observed with ``waitid(WNOWAIT)``: the zombie is *not*
  reaped until the whole group has been SIGKILLed, so its pid (= the pgid) cannot
  be reused by an unrelated process group that ``killpg`` would hit.
* The worker makes itself a child subreaper (Linux): orphaned grandchildren are
  re-parented to it instead of to PID 1, so it can reap them. In containers whose
  PID 1 does not reap orphans (or when the worker *is* PID 1), killed
  grandchildren would otherwise stay zombies, still members of the group.

Output semantics: per stream, concatenating the ``text`` of every chunk gives the
stream as the child wrote it (decoded as UTF-8 with ``errors="replace"``). Every
chunk ends on a line boundary (its last line keeps its ``"\\n"``, ``"\\r\\n"``
stays as written), except (a) the final partial line of a stream, flushed without
newline at EOF, and (b) a single line longer than a chunk, which is delivered in
consecutive ≤64 KiB pieces of which only the last ends with the newline.
Recover lines with ``"".join(texts).splitlines(keepends=True)``.

Sandboxed (``sandbox=BwrapSandbox(...)``, see ``execution.sandbox``): the
child is bwrap, leading the process group; the command and everything it
starts live in the sandbox's PID namespace. Stopping sends SIGTERM to every
process inside (``setsid()`` does not leave a namespace), then SIGKILL to the
group and to everything inside; with ``--die-with-parent`` and the namespace's
init gone, the kernel leaves nothing behind.

Known limit without a sandbox: a descendant that calls ``setsid()`` leaves the
group and is not stopped; the pipes it holds are abandoned after a short grace.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Literal

from execution.sandbox import BwrapSandbox, SandboxProcesses

__all__ = ["CHUNK_MAX_BYTES", "OutputChunk", "ProcessResult", "run_process"]

logger = logging.getLogger(__name__)

StreamName = Literal["stdout", "stderr"]

# Chunks are stored as one event each: keep them (and each on_output batch) this small.
CHUNK_MAX_BYTES = 64 * 1024
# should_cancel may hit the database: poll it at this pace, never in a tight loop.
CANCEL_POLL_INTERVAL_S = 0.2
# One os.read: large enough that 100k short lines take a few dozen reads.
READ_SIZE = 64 * 1024
# After the leader exits, how long background processes may keep the pipes open
# (flushing their last output) before the group is killed.
EXIT_DRAIN_S = 0.5
# After the final SIGKILL, how long to wait for EOF before abandoning the pipes
# (only a process that left the group can still hold them).
PIPE_ABANDON_S = 2.0
# How often to look for the leader's exit when no pipe is open to wake us up.
EXIT_POLL_S = 0.02
# How long to wait for killed group members to disappear before giving up.
REAP_TIMEOUT_S = 2.0

_EXIT_NOT_FOUND = 127  # shell convention: command not found
_EXIT_CANNOT_EXECUTE = 126  # shell convention: found but not executable
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class OutputChunk:
    """Consecutive output of one stream: whole lines, in the order they were read."""

    stream: StreamName
    text: str


@dataclass(frozen=True)
class ProcessResult:
    """What happened to the process.

    ``exit_code`` is the leader's exit status, negative for a signal (as Popen
    reports it), 127/126 when the executable was not found/not executable, and
    ``None`` when nothing could be started (``error`` says why). ``truncated``
    output does not change it.
    """

    exit_code: int | None
    canceled: bool = False
    timed_out: bool = False
    truncated: bool = False
    dropped_bytes: int = 0
    duration_s: float = 0.0
    error: str | None = None
    pid: int | None = None


def run_process(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout_s: float,
    on_output: Callable[[list[OutputChunk]], None],
    should_cancel: Callable[[], bool],
    on_tick: Callable[[], None] | None = None,
    max_output_bytes: int,
    cancel_grace_s: float = 2.0,
    flush_interval_s: float = 0.2,
    tick_interval_s: float = 1.0,
    sandbox: BwrapSandbox | None = None,
) -> ProcessResult:
    """Run ``argv`` (no shell) in ``cwd`` with exactly ``env`` and wait for it.

    With ``sandbox``, the command runs inside it (``cwd`` must be in its
    workspace); an executable the sandbox cannot see is reported like a missing
    one (127).

    Stops the process group with SIGTERM, then SIGKILL after ``cancel_grace_s``,
    when ``timeout_s`` elapses (``timed_out``) or ``should_cancel()`` returns true
    (``canceled``). Delivers at most ``max_output_bytes`` of output, cut after the
    last whole line that fits; the rest is read and dropped (``truncated``,
    ``dropped_bytes``) so the child never blocks on a full pipe.

    A spawn failure is reported in the result, never raised. An exception from a
    callback propagates, but only after the process group has been killed and
    reaped. Raises ``ValueError`` for an empty ``argv`` or a non-positive timeout.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    _become_child_subreaper()
    started = time.monotonic()
    try:
        proc, inside = _spawn(argv, cwd=cwd, env=env, sandbox=sandbox)
    except OSError as exc:
        return _spawn_failure(exc, argv[0], cwd, started)
    except _CannotStart as problem:
        return ProcessResult(
            exit_code=problem.exit_code,
            duration_s=time.monotonic() - started,
            error=problem.message,
        )
    supervisor = _Supervisor(
        proc,
        sandbox=inside,
        started=started,
        timeout_s=timeout_s,
        on_output=on_output,
        should_cancel=should_cancel,
        on_tick=on_tick,
        max_output_bytes=max_output_bytes,
        cancel_grace_s=cancel_grace_s,
        flush_interval_s=flush_interval_s,
        tick_interval_s=tick_interval_s,
    )
    return supervisor.run()


class _CannotStart(Exception):
    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def _spawn(
    argv: Sequence[str], *, cwd: str, env: Mapping[str, str], sandbox: BwrapSandbox | None
) -> tuple[subprocess.Popen[bytes], SandboxProcesses | None]:
    """Start the child as the leader of a new process group (raises OSError as
    Popen); in a sandbox, also say which processes are inside it."""
    options = {
        "shell": False,
        "cwd": cwd,  # also for bwrap: Popen reports a missing cwd as it always did
        "env": dict(env),  # bwrap's own environment: /proc/1/environ inside shows it
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "start_new_session": True,
    }
    if sandbox is None:
        return subprocess.Popen(list(argv), **options), None
    if os.path.isdir(cwd):
        problem = sandbox.check_executable(argv[0], cwd=cwd, path=env.get("PATH", ""))
        if problem is not None:
            raise _CannotStart(problem.exit_code, problem.message)
    with sandbox.launch(argv, cwd=cwd, env=env) as launch:  # closes launch.info on error
        proc = subprocess.Popen(launch.argv, pass_fds=launch.pass_fds, **options)
    return proc, SandboxProcesses.from_info(launch.info)


def _spawn_failure(exc: OSError, executable: str, cwd: str, started: float) -> ProcessResult:
    """Map Popen's OSError to a result, with the shell's exit codes for exec failures."""
    duration = time.monotonic() - started
    if exc.filename == cwd:  # Popen names the directory when chdir failed
        message = f"cannot use working directory {cwd}: {exc.strerror}"
        return ProcessResult(exit_code=None, duration_s=duration, error=message)
    if isinstance(exc, FileNotFoundError):
        message = f"executable not found: {executable}"
        return ProcessResult(exit_code=_EXIT_NOT_FOUND, duration_s=duration, error=message)
    message = f"cannot execute {executable}: {exc.strerror or exc}"
    return ProcessResult(exit_code=_EXIT_CANNOT_EXECUTE, duration_s=duration, error=message)


_subreaper_enabled = False


def _become_child_subreaper() -> None:
    """Adopt orphaned descendants (Linux), so killed grandchildren can be reaped here."""
    global _subreaper_enabled
    if _subreaper_enabled or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    except (OSError, AttributeError) as exc:
        logger.warning("cannot become a child subreaper, orphans go to PID 1: %s", exc)
    _subreaper_enabled = True  # one attempt per process: the attribute is process-wide


# --------------------------------------------------------------------------- output


class _LineBuffer:
    """Holds a stream's partial last line between reads."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> bytes:
        """Append ``data``; return everything up to the last newline."""
        self._pending += data
        cut = self._pending.rfind(b"\n") + 1
        if cut == 0 and len(self._pending) >= CHUNK_MAX_BYTES:
            cut = len(self._pending)  # a huge line: pass it on in pieces, bound memory
        ready = bytes(self._pending[:cut])
        del self._pending[:cut]
        return ready

    def finish(self) -> bytes:
        """The final partial line (EOF)."""
        rest = bytes(self._pending)
        self._pending.clear()
        return rest


class _OutputSink:
    """Applies the output cap, decodes, and batches chunks for ``on_output``."""

    def __init__(
        self, on_output: Callable[[list[OutputChunk]], None], max_output_bytes: int
    ) -> None:
        self._on_output = on_output
        self._budget = max(0, max_output_bytes)
        self._delivered = 0
        self.truncated = False
        self.dropped_bytes = 0
        # An incremental decoder keeps a UTF-8 sequence split across pieces intact.
        streams: tuple[StreamName, ...] = ("stdout", "stderr")
        self._decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace") for stream in streams
        }
        self._batch: list[tuple[StreamName, list[str]]] = []
        self._batch_bytes = 0

    @property
    def pending(self) -> bool:
        return bool(self._batch)

    def add(self, stream: StreamName, data: bytes) -> None:
        """Deliver ``data`` (whole lines, or a piece of an over-long line) if it fits."""
        if not data:
            return
        if self.truncated:
            self.dropped_bytes += len(data)
            return
        room = self._budget - self._delivered
        if len(data) > room:
            # Keep whole lines only; from here on everything is read and dropped.
            keep = data.rfind(b"\n", 0, room) + 1
            self.dropped_bytes += len(data) - keep
            self.truncated = True
            data = data[:keep]
        self._delivered += len(data)
        self._append(stream, data)

    def _append(self, stream: StreamName, data: bytes) -> None:
        while data:
            room = CHUNK_MAX_BYTES - self._batch_bytes
            cut = len(data) if len(data) <= room else data.rfind(b"\n", 0, room) + 1
            if cut == 0 and self._batch_bytes:
                self.flush()  # the next line does not fit: start a new batch
                continue
            if cut == 0:
                cut = room  # one line longer than a whole chunk: split it
            self._add_text(stream, self._decoders[stream].decode(data[:cut]), cut)
            data = data[cut:]
            if self._batch_bytes >= CHUNK_MAX_BYTES:
                self.flush()

    def _add_text(self, stream: StreamName, text: str, size: int) -> None:
        self._batch_bytes += size
        if not text:
            return  # the decoder holds an incomplete character for the next piece
        if self._batch and self._batch[-1][0] == stream:
            self._batch[-1][1].append(text)
        else:
            self._batch.append((stream, [text]))

    def finish(self) -> None:
        """Flush what the decoders still hold (a truncated character) and the batch."""
        for stream, decoder in self._decoders.items():
            tail = decoder.decode(b"", final=True)
            if tail:
                self._add_text(stream, tail, 0)
        self.flush()

    def flush(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch:
            self._on_output([OutputChunk(stream, "".join(texts)) for stream, texts in batch])


# ----------------------------------------------------------------------- supervisor


class _Supervisor:
    """The event loop around one child: pipes, timers, termination and cleanup."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        sandbox: SandboxProcesses | None,
        started: float,
        timeout_s: float,
        on_output: Callable[[list[OutputChunk]], None],
        should_cancel: Callable[[], bool],
        on_tick: Callable[[], None] | None,
        max_output_bytes: int,
        cancel_grace_s: float,
        flush_interval_s: float,
        tick_interval_s: float,
    ) -> None:
        self._proc = proc
        self._pgid = proc.pid  # start_new_session: the child leads its own group
        self._sandbox = sandbox
        self._started = started
        self._deadline = started + timeout_s
        self._should_cancel = should_cancel
        self._on_tick = on_tick
        self._cancel_grace_s = cancel_grace_s
        self._flush_interval_s = flush_interval_s
        self._tick_interval_s = tick_interval_s
        self._sink = _OutputSink(on_output, max_output_bytes)

        self._selector = selectors.DefaultSelector()
        self._buffers: dict[int, _LineBuffer] = {}
        self._pipes: list[IO[bytes]] = [p for p in (proc.stdout, proc.stderr) if p is not None]
        for pipe, stream in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            if pipe is not None:
                self._selector.register(pipe.fileno(), selectors.EVENT_READ, stream)
                self._buffers[pipe.fileno()] = _LineBuffer()

        now = time.monotonic()
        self._last_flush = now
        self._next_tick = now + tick_interval_s
        self._next_cancel_poll = now + CANCEL_POLL_INTERVAL_S
        self._kill_at: float | None = None  # SIGKILL escalation after SIGTERM
        self._exited_at: float | None = None  # when the leader's exit was seen
        self._group_killed_at: float | None = None  # final SIGKILL after the leader exited
        self.canceled = False
        self.timed_out = False

    # -- main loop

    def run(self) -> ProcessResult:
        try:
            self._pump()
            self._drain_buffers()
            self._sink.finish()
        finally:
            # Whatever happened (even a callback raising), leave nothing behind.
            self._signal_group(signal.SIGKILL)
            self._close_pipes()
            self._proc.wait()
            self._reap_group()
        return ProcessResult(
            exit_code=self._proc.returncode,
            canceled=self.canceled,
            timed_out=self.timed_out,
            truncated=self._sink.truncated,
            dropped_bytes=self._sink.dropped_bytes,
            duration_s=time.monotonic() - self._started,
            pid=self._proc.pid,
        )

    def _pump(self) -> None:
        """Read and run timers until the leader exited and the pipes are closed."""
        while True:
            now = time.monotonic()
            self._service_timers(now)
            if self._exited_at is None and self._leader_exited():
                self._exited_at = now
            if self._exited_at is not None and self._after_exit(now):
                return
            timeout = max(0.0, self._next_wakeup(now) - now)
            for key, _ in self._selector.select(timeout):
                self._read(key.fd, key.data)

    def _after_exit(self, now: float) -> bool:
        """True when there is nothing left to read (or to wait for)."""
        if not self._selector.get_map():
            return True
        assert self._exited_at is not None
        if self._group_killed_at is None and now - self._exited_at >= EXIT_DRAIN_S:
            # Background members still hold the pipes: the run is over, stop them.
            self._signal_group(signal.SIGKILL)
            self._group_killed_at = now
        return self._group_killed_at is not None and now - self._group_killed_at >= PIPE_ABANDON_S

    def _next_wakeup(self, now: float) -> float:
        candidates = [now + CANCEL_POLL_INTERVAL_S]
        if self._on_tick is not None:
            candidates.append(self._next_tick)
        if self._sink.pending:
            candidates.append(self._last_flush + self._flush_interval_s)
        if self._exited_at is None:
            candidates += [self._deadline] if self._kill_at is None else [self._kill_at]
            if not self._selector.get_map():
                candidates.append(now + EXIT_POLL_S)  # no pipe will wake us at exit
        else:
            candidates.append(now + EXIT_POLL_S)
        return min(candidates)

    def _read(self, fd: int, stream: StreamName) -> None:
        data = os.read(fd, READ_SIZE)
        buffer = self._buffers[fd]
        if data:
            self._sink.add(stream, buffer.feed(data))
            return
        self._selector.unregister(fd)  # EOF
        self._sink.add(stream, buffer.finish())

    def _drain_buffers(self) -> None:
        """Partial lines of pipes that were abandoned before EOF."""
        for key in list(self._selector.get_map().values()):
            self._sink.add(key.data, self._buffers[key.fd].finish())
            self._selector.unregister(key.fd)

    # -- timers

    def _service_timers(self, now: float) -> None:
        if self._sink.pending and now - self._last_flush >= self._flush_interval_s:
            self._sink.flush()
            self._last_flush = now
        if self._on_tick is not None and now >= self._next_tick:
            self._on_tick()
            self._next_tick = now + self._tick_interval_s
        if self._exited_at is not None:
            return  # nothing left to stop
        if self._kill_at is not None:
            if now >= self._kill_at:
                self._signal_group(signal.SIGKILL)
                self._kill_at = float("inf")
            return
        if now >= self._deadline:
            self.timed_out = True
            self._terminate(now)
        elif now >= self._next_cancel_poll:
            self._next_cancel_poll = now + CANCEL_POLL_INTERVAL_S
            if self._should_cancel():
                self.canceled = True
                self._terminate(now)

    def _terminate(self, now: float) -> None:
        """SIGTERM the group (in a sandbox: everything inside it); SIGKILL follows
        after the grace unless everything exited."""
        # bwrap forwards no signal, and SIGTERM to bwrap would end the sandbox at
        # once: the command gets its grace only when signalled inside.
        if self._sandbox is None or not self._sandbox.signal_command(signal.SIGTERM):
            self._signal_group(signal.SIGTERM)
        self._kill_at = now + self._cancel_grace_s

    # -- process group

    def _leader_exited(self) -> bool:
        """Look at the leader's state without reaping it (its pid must stay ours)."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            return os.waitid(os.P_PID, self._proc.pid, flags) is not None
        except ChildProcessError:
            return True  # reaped by someone else: it has exited in any case

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._pgid, sig)
        except ProcessLookupError:
            pass  # the group is already gone
        except PermissionError:
            logger.warning("cannot signal process group %s", self._pgid)
        if sig == signal.SIGKILL and self._sandbox is not None:
            # --die-with-parent already takes the sandbox down with bwrap; this
            # also covers a bwrap that died before it could arrange that.
            self._sandbox.kill_all()

    def _close_pipes(self) -> None:
        self._selector.close()
        for pipe in self._pipes:
            pipe.close()

    def _reap_group(self) -> None:
        """Collect group members re-parented to us until none is left (or time is up);
        in a sandbox, also wait until nothing inside runs any more."""
        deadline = time.monotonic() + REAP_TIMEOUT_S
        self._reap_members(deadline)
        while self._sandbox is not None and self._sandbox.any_alive():
            if time.monotonic() >= deadline:
                logger.warning("sandbox of process %s still has processes", self._pgid)
                return
            time.sleep(0.01)

    def _reap_members(self, deadline: float) -> None:
        while True:
            try:
                while os.waitpid(-self._pgid, os.WNOHANG)[0]:
                    pass  # reaped one; look for more
            except ChildProcessError:
                pass  # none of our children is in the group (any more)
            try:
                os.killpg(self._pgid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            if time.monotonic() >= deadline:
                logger.warning("process group %s still has members after SIGKILL", self._pgid)
                return
            time.sleep(0.01)
