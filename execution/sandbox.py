"""The bubblewrap sandbox of a local run: what the command sees, and how to stop it.

Pure Python (no Django); ``execution.sandbox_config`` decides whether runs are
sandboxed and ``execution.runner`` spawns through :meth:`BwrapSandbox.launch`.

Inside the sandbox (bubblewrap, https://github.com/containers/bubblewrap):

* its own PID, IPC, UTS, cgroup and network namespaces (``--unshare-all``);
  the host network only with ``share_network`` (``--share-net``);
* a fresh ``/proc`` listing only the sandbox's processes, a minimal ``/dev``,
  a private, empty ``/tmp``;
* the system read-only: ``/usr``, ``/bin``, ``/sbin``, ``/lib*`` and the few
  ``/etc`` entries programs need (:data:`ETC_ENTRIES`); nothing else of the host
  (no ``/home``, ``/root``, ``/var``, ``/run``, no service checkout);
* the workspace read-write, at its own (real) path, so paths in output and in
  the run's ``cwd`` mean the same inside and out;
* exactly the run's environment (``--clearenv`` then ``--setenv``), no
  capabilities (``--cap-drop ALL``, which matters when the worker is root), a
  new session (no terminal to push keystrokes into);
* ``--die-with-parent``: when bwrap dies, the kernel kills everything inside,
  processes that called ``setsid()`` included, because they all live in the
  sandbox's PID namespace.

bwrap's options are handed over on a memfd (``--args FD``), not on the command
line, so the run's environment values never show in the host's ``ps``.

Exit codes: bwrap reports a command ended by signal N as ``128 + N`` (the
shell's convention), not as a negative number.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ETC_ENTRIES",
    "SYSTEM_DIRS",
    "BwrapSandbox",
    "ExecutableProblem",
    "Launch",
    "SandboxProcesses",
    "probe",
]

# Read-only system directories, bound when they exist (a symlink, as on merged-/usr
# systems, is recreated as the same symlink).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What programs read from /etc: users and groups for `id`/`ls -l`, name
# resolution, TLS trust stores, the dynamic linker's cache, Debian's
# alternatives (/usr/bin/python → /etc/alternatives/…). Deliberately not
# /etc/ssl as a whole: /etc/ssl/private holds host keys.
ETC_ENTRIES = (
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "resolv.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "localtime",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/ca-trust",
    "mime.types",
)
PROBE_TIMEOUT_S = 10.0
# bwrap reports the sandbox right after creating it; a slower answer means it failed.
INFO_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ExecutableProblem:
    """Why a command cannot start in the sandbox, with the shell's exit code."""

    exit_code: int
    message: str


@dataclass(frozen=True)
class Launch:
    """bwrap's command line, the descriptors it must inherit, and the read end
    of its ``--info-fd`` pipe."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    info: int


@dataclass(frozen=True)
class BwrapSandbox:
    """How to run one command under bubblewrap.

    ``bwrap`` is the path of the executable, ``workspace`` the directory bound
    read-write (the run's cwd must be inside it), ``share_network`` whether the
    command may use the host's network.
    """

    bwrap: str
    workspace: str
    share_network: bool = False

    def options(self, *, cwd: str, env: Mapping[str, str]) -> list[str]:
        """bwrap's options, in order (later mounts go on top of earlier ones)."""
        opts = ["--unshare-all"]
        if self.share_network:
            opts.append("--share-net")
        opts += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                opts += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                opts += ["--ro-bind", path, path]
        for entry in ETC_ENTRIES:
            opts += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
        opts += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (its own)
        # After /tmp: a workspace under /tmp is bound on top of the private tmpfs.
        workspace = os.path.realpath(self.workspace)
        opts += ["--bind", workspace, workspace]
        if os.path.abspath(self.workspace) != workspace:
            # HOME is the workspace as configured: make that path work too.
            opts += ["--symlink", workspace, os.path.abspath(self.workspace)]
        opts += ["--chdir", os.path.realpath(cwd), "--clearenv"]
        for name, value in env.items():
            opts += ["--setenv", name, value]
        return opts

    @contextlib.contextmanager
    def launch(self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> Iterator[Launch]:
        """What to give ``Popen``, inside the ``with``. On exit the child's ends
        are closed here; ``Launch.info`` then belongs to the caller
        (:meth:`SandboxProcesses.from_info`)."""
        args_fd = os.memfd_create("ccdash-bwrap-args", os.MFD_CLOEXEC)
        info_read, info_write = os.pipe()
        try:
            options = ["--info-fd", str(info_write), *self.options(cwd=cwd, env=env)]
            data = b"".join(os.fsencode(arg) + b"\0" for arg in options)
            view = memoryview(data)
            while view:
                view = view[os.write(args_fd, view) :]
            os.lseek(args_fd, 0, os.SEEK_SET)
            argv = [self.bwrap, "--args", str(args_fd), "--", *argv]
            yield Launch(argv, (args_fd, info_write), info_read)
        except BaseException:
            os.close(info_read)
            raise
        finally:
            os.close(args_fd)
            os.close(info_write)

    def visible_roots(self) -> tuple[str, ...]:
        """Real paths under which an executable exists inside the sandbox too."""
        roots = [os.path.realpath(path) for path in SYSTEM_DIRS if os.path.isdir(path)]
        return (*roots, os.path.realpath(self.workspace))

    def check_executable(self, name: str, *, cwd: str, path: str) -> ExecutableProblem | None:
        """Find ``name`` as ``execvp`` would inside the sandbox; ``None`` when it will run.

        bwrap itself would only say "execvp failed" with status 1; checking here
        keeps the shell's 127 (not found) and 126 (not executable) and says when
        a program exists on the host but not in the sandbox.
        """
        dirs = [""] if "/" in name else [entry or "." for entry in path.split(":")]
        roots = self.visible_roots()
        hidden = not_executable = None
        for directory in dirs:
            candidate = os.path.join(cwd, directory, name)
            if not os.path.isfile(candidate):
                continue
            if not os.access(candidate, os.X_OK):
                not_executable = not_executable or candidate
                continue
            real = os.path.realpath(candidate)
            if any(real == root or real.startswith(root + "/") for root in roots):
                return None
            hidden = hidden or real
        if hidden:
            return ExecutableProblem(
                127,
                f"executable not found in the sandbox: {name} is {hidden}, outside the "
                "system directories and the workspace",
            )
        if not_executable:
            return ExecutableProblem(126, f"cannot execute {name}: Permission denied")
        return ExecutableProblem(127, f"executable not found: {name}")


class SandboxProcesses:
    """The processes inside one running sandbox.

    bwrap reports (``--info-fd``) the host pid of the sandbox's init (PID 1
    inside, bwrap's child) and the inode of its PID namespace. Every process of
    the sandbox lives in that namespace, whatever its session or process group;
    a process is recognised by the namespace, never by pid alone, so a recycled
    pid is never signalled.
    """

    def __init__(self, init: int | None, namespace: int | None) -> None:
        self.init = init
        self.namespace = namespace

    @classmethod
    def from_info(cls, info_fd: int, *, timeout_s: float = INFO_TIMEOUT_S) -> SandboxProcesses:
        """Read bwrap's ``--info-fd`` JSON from ``info_fd`` (closed here). A bwrap
        that failed before creating the sandbox gives nothing to stop."""
        data = b""
        deadline = time.monotonic() + timeout_s
        try:
            while not data.rstrip().endswith(b"}"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([info_fd], [], [], remaining)[0]:
                    break
                chunk = os.read(info_fd, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(info_fd)
        try:
            info = json.loads(data)
            return cls(int(info["child-pid"]), int(info["pid-namespace"]))
        except (ValueError, KeyError, TypeError):
            return cls(None, None)

    def signal_command(self, sig: signal.Signals) -> int:
        """Send ``sig`` to every process inside except bwrap's init (which has no
        handler for it and would ignore it); how many were signalled."""
        sent = 0
        for pid in self._members():
            if pid == self.init:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                sent += 1
        return sent

    def kill_all(self) -> None:
        """SIGKILL the sandbox's init: the kernel then kills every process left in
        its PID namespace, and the namespace ends."""
        if self._init_state() not in (None, "Z"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.init, signal.SIGKILL)

    def any_alive(self) -> bool:
        """Whether the sandbox still runs, i.e. its init does (an init exits only
        after every other process of its namespace is gone). Reaps the init when
        it was left to us: bwrap exits without waiting for it, and the worker, a
        child subreaper, adopts it."""
        state = self._init_state()
        if state == "Z" and _parent_pid(self.init) == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.init, os.WNOHANG)
        return state not in (None, "Z")

    def _init_state(self) -> str | None:
        """The init's process state, ``None`` once it is gone (its pid checked
        against the namespace, so a recycled pid is not taken for it)."""
        if self.init is None or _pid_namespace(self.init) != self.namespace:
            return None
        return _state(self.init)

    def _members(self) -> list[int]:
        if self.namespace is None:
            return []
        return [pid for pid in _pids() if _pid_namespace(pid) == self.namespace]


def probe(bwrap: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Start a trivial sandbox; ``None`` when it worked, else why not.

    bwrap can be installed and still unable to create namespaces (a container
    without the privilege, unprivileged user namespaces disabled).
    """
    env = {"PATH": "/usr/bin:/bin"}
    try:
        with tempfile.TemporaryDirectory(prefix="ccdash-sandbox-probe-") as workspace:
            sandbox = BwrapSandbox(bwrap=bwrap, workspace=workspace)
            with sandbox.launch(["true"], cwd=workspace, env=env) as launch:
                done = subprocess.run(
                    launch.argv,
                    env=env,
                    pass_fds=launch.pass_fds,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=timeout_s,
                    check=False,
                )
            os.close(launch.info)  # nothing to stop: the sandbox ended with `true`
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {bwrap}: {exc}"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()[:500]
        return f"{bwrap} cannot create a sandbox here (exit {done.returncode}): {detail}"
    return None


# ------------------------------------------------------------------------- /proc


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _pid_namespace(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None  # gone, or not ours to look at


def _stat_fields(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ppid …": comm may hold spaces and parentheses.
            return stat.read().rpartition(b")")[2].split()
    except OSError:
        return []


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0].decode() if fields else None


def _parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else None
