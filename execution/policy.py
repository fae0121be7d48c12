"""Policy engine evaluated before every dispatch, local or external.

Pure Python (no Django, no ORM): the glue in ``execution.policy_gate`` feeds it a
command line, the project's workspace root, the requested cwd and env profile,
and stores the :class:`PolicyDecision` on the run.

A decision is the strictest verdict and the highest risk over every rule that
fired; each rule contributes a stable snake_case reason code (see
:data:`REASON_CODES`) and a human message. The rules, in short:

* the command must parse (``shlex``) and not be empty;
* we execute argv **without a shell**, so shell syntax (``;``, ``&&``, ``|``,
  redirections, ``$(...)``, backticks, ``&``, newlines) would be passed as
  literal arguments and silently do something else than the user reads: denied;
* executables are matched on their basename (``/bin/rm`` is ``rm``) against
  module-level tables: privilege escalation is denied, shells and command
  launchers need approval, destructive commands are denied (or need approval
  when they stay inside the workspace), network commands need approval,
  known safe tools are allowed, anything else needs approval;
* write-ish tools may only target paths inside the workspace;
* the cwd must resolve (symlinks and ``..`` included) inside the workspace;
* the env profile must be one of the configured ones.

What the engine does *not* do: it guards the command line, not the program.
``python script.py``, ``make`` or ``npm test`` run code the engine cannot see;
they are allowed because that code lives in the workspace, under review and
version control, like any build the engineer runs by hand. Shell expansions
(``$HOME``, ``*.py``) are not expanded either; outside ``rm`` (where they are
denied) they only make the command fail or print literally, nothing hidden runs.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = [
    "DEFAULT_ENV_PROFILES",
    "DEFAULT_PATH",
    "REASON_CODES",
    "EnvProfile",
    "PolicyDecision",
    "build_env",
    "evaluate",
]

Verdict = Literal["allow", "requires_approval", "deny"]
Risk = Literal["low", "medium", "high"]

ALLOW: Verdict = "allow"
APPROVAL: Verdict = "requires_approval"
DENY: Verdict = "deny"

_VERDICT_RANK: Mapping[str, int] = {ALLOW: 0, APPROVAL: 1, DENY: 2}
_RISK_RANK: Mapping[str, int] = {"low": 0, "medium": 1, "high": 2}

# Stable machine codes: stored on runs and shown by the API, so never rename one.
COMMAND_ALLOWED = "command_allowed"
COMMAND_EMPTY = "command_empty"
COMMAND_UNPARSEABLE = "command_unparseable"
COMMAND_UNKNOWN = "command_unknown"
DESTRUCTIVE_COMMAND = "destructive_command"
NETWORK_COMMAND = "network_command"
COMPOUND_SHELL = "compound_shell"
SHELL_INTERPRETER = "shell_interpreter"
PRIVILEGE_ESCALATION = "privilege_escalation"
CWD_OUTSIDE_WORKSPACE = "cwd_outside_workspace"
PATH_OUTSIDE_WORKSPACE = "path_outside_workspace"
ENV_PROFILE_UNKNOWN = "env_profile_unknown"
WORKSPACE_ROOT_INVALID = "workspace_root_invalid"

REASON_CODES: Mapping[str, str] = MappingProxyType(
    {
        COMMAND_ALLOWED: "the executable is in the allow class",
        COMMAND_EMPTY: "the command is empty",
        COMMAND_UNPARSEABLE: "the command cannot be split into arguments",
        COMMAND_UNKNOWN: "the executable (or this use of it) is not in any known class",
        DESTRUCTIVE_COMMAND: "the command deletes or overwrites data or stops the machine",
        NETWORK_COMMAND: "the command talks to the network or installs packages",
        COMPOUND_SHELL: "shell syntax that would not be interpreted (argv runs without a shell)",
        SHELL_INTERPRETER: "the command runs another command line the policy cannot inspect",
        PRIVILEGE_ESCALATION: "the command changes user (sudo, su, ...)",
        CWD_OUTSIDE_WORKSPACE: "the working directory resolves outside the workspace",
        PATH_OUTSIDE_WORKSPACE: "a write target resolves outside the workspace",
        ENV_PROFILE_UNKNOWN: "the env profile is not configured",
        WORKSPACE_ROOT_INVALID: "the project's workspace root is not an absolute path",
    }
)


# --------------------------------------------------------------------------- env


DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_LANG = "C.UTF-8"


@dataclass(frozen=True)
class EnvProfile:
    """A named environment for local runs.

    ``values`` are fixed variables; ``passthrough`` names host variables that may
    be copied through when present. Nothing else of the host environment ever
    reaches a run (credentials often live there).
    """

    values: Mapping[str, str] = field(default_factory=dict)
    passthrough: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Validate at settings-load time rather than when Popen rejects the env.
        for name in (*self.values, *self.passthrough):
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"invalid environment variable name: {name!r}")
        for name, value in self.values.items():
            if not isinstance(value, str) or "\0" in value:
                raise ValueError(f"environment value of {name} must be a string without NUL")
        # Freeze the containers: profiles are shared module-level defaults.
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "passthrough", tuple(self.passthrough))


DEFAULT_ENV_PROFILES: Mapping[str, EnvProfile] = MappingProxyType(
    {
        "default": EnvProfile(values={"PATH": DEFAULT_PATH, "LANG": DEFAULT_LANG}),
        "python": EnvProfile(
            values={
                "PATH": DEFAULT_PATH,
                "LANG": DEFAULT_LANG,
                # Output reaches the run's events as it is printed, not at exit.
                "PYTHONUNBUFFERED": "1",
                # No __pycache__ litter in the workspace.
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        ),
    }
)


def build_env(
    profile: EnvProfile, *, workspace_root: str, host_env: Mapping[str, str]
) -> dict[str, str]:
    """The complete environment of a local run: defaults, allowed host names, profile values.

    Precedence, lowest first: ``PATH``/``LANG`` defaults, the profile's passthrough
    names found in ``host_env``, the profile's fixed values. ``HOME`` is always the
    workspace root, so tools that write dotfiles (``~/.cache``, ``~/.npmrc``) stay
    inside the workspace and never read the service account's home.
    """
    env = {"PATH": DEFAULT_PATH, "LANG": DEFAULT_LANG}
    env.update({name: host_env[name] for name in profile.passthrough if name in host_env})
    env.update(profile.values)
    env["HOME"] = workspace_root
    return env


# ---------------------------------------------------------------------- decision


@dataclass(frozen=True)
class PolicyDecision:
    """The outcome of :func:`evaluate`.

    ``reason_codes`` and ``messages`` explain the verdict: for an allowed command
    that is ``("command_allowed",)``; otherwise every code of a rule that asked for
    approval or denial (deduplicated, in rule order).
    """

    verdict: Verdict
    risk: Risk
    reason_codes: tuple[str, ...]
    argv: tuple[str, ...]
    resolved_cwd: str
    env_profile: str
    messages: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.verdict == ALLOW

    @property
    def requires_approval(self) -> bool:
        return self.verdict == APPROVAL

    @property
    def denied(self) -> bool:
        return self.verdict == DENY


@dataclass(frozen=True)
class _Finding:
    verdict: Verdict
    risk: Risk
    code: str
    message: str


def _allow(message: str) -> _Finding:
    return _Finding(ALLOW, "low", COMMAND_ALLOWED, message)


def _approval(risk: Risk, code: str, message: str) -> _Finding:
    return _Finding(APPROVAL, risk, code, message)


def _deny(risk: Risk, code: str, message: str) -> _Finding:
    return _Finding(DENY, risk, code, message)


def evaluate(
    command: str,
    *,
    workspace_root: str,
    cwd: str | None = None,
    env_profile: str | None = None,
    env_profiles: Mapping[str, EnvProfile],
) -> PolicyDecision:
    """Decide whether ``command`` may run in ``cwd`` with ``env_profile``.

    Never raises for bad input: every problem becomes a ``deny`` with its code.
    ``cwd`` may be absolute or relative to the workspace; ``None`` means the root.
    """
    profile_name = env_profile or "default"
    findings: list[_Finding] = []

    root, resolved_cwd, cwd_findings = _check_workspace(workspace_root, cwd)
    findings += cwd_findings
    # The profile *is* the env allowlist: an unknown name must never fall back to another.
    if profile_name not in env_profiles:
        findings.append(
            _deny("low", ENV_PROFILE_UNKNOWN, f"env profile {profile_name!r} is not configured")
        )

    argv, parse_findings = _parse(command)
    findings += parse_findings
    if argv:
        context = _Context(root=root, cwd=resolved_cwd)
        findings += _check_command_line(command, argv, context)

    return _decide(findings, argv=argv, resolved_cwd=resolved_cwd, env_profile=profile_name)


def _decide(
    findings: Sequence[_Finding], *, argv: Sequence[str], resolved_cwd: str, env_profile: str
) -> PolicyDecision:
    verdict = max((f.verdict for f in findings), key=_VERDICT_RANK.__getitem__, default=ALLOW)
    risk = max((f.risk for f in findings), key=_RISK_RANK.__getitem__, default="low")
    # Explain the verdict: allow findings only matter when nothing objected.
    explaining = [f for f in findings if f.verdict != ALLOW] or list(findings)
    return PolicyDecision(
        verdict=verdict,
        risk=risk,
        reason_codes=tuple(dict.fromkeys(f.code for f in explaining)),
        argv=tuple(argv),
        resolved_cwd=resolved_cwd,
        env_profile=env_profile,
        messages=tuple(dict.fromkeys(f.message for f in explaining)),
    )


# ------------------------------------------------------------- workspace and cwd


@dataclass(frozen=True)
class _Context:
    root: str  # realpath of the workspace root
    cwd: str  # realpath of the working directory


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_workspace(workspace_root: str, cwd: str | None) -> tuple[str, str, list[_Finding]]:
    """Resolve root and cwd with realpath, so neither ``..`` nor a symlink can escape."""
    if not workspace_root or not os.path.isabs(workspace_root) or "\0" in workspace_root:
        # A relative root would resolve against the worker's own cwd.
        message = f"workspace root {workspace_root!r} is not an absolute path"
        finding = _deny("high", WORKSPACE_ROOT_INVALID, message)
        return "", "", [finding]
    root = os.path.realpath(workspace_root)
    if not cwd:
        return root, root, []
    if "\0" in cwd:
        return root, root, [_deny("high", CWD_OUTSIDE_WORKSPACE, "cwd contains a NUL byte")]
    resolved = os.path.realpath(os.path.join(root, cwd))  # join keeps an absolute cwd as is
    if _is_within(resolved, root):
        return root, resolved, []
    message = f"cwd {cwd!r} resolves to {resolved}, outside the workspace {root}"
    return root, resolved, [_deny("high", CWD_OUTSIDE_WORKSPACE, message)]


def _resolve_path(arg: str, cwd: str) -> str:
    """Where a path argument lands, following symlinks like most tools do."""
    return os.path.realpath(os.path.join(cwd, arg))


def _resolve_unlink_target(arg: str, cwd: str) -> str:
    """Where ``rm`` acts: it removes a symlink itself, not what the link points to."""
    path = os.path.join(cwd, arg)
    head, tail = os.path.split(path.rstrip(os.sep))
    if arg.endswith(os.sep) or tail in ("", ".", ".."):
        return os.path.realpath(path)  # a trailing slash makes rm follow the link
    return os.path.join(os.path.realpath(head), tail)


# ------------------------------------------------------------ parsing and syntax


# Outside quotes these characters make a shell do something else than run one
# argv: sequence, background, pipe, redirect, subshell, command substitution.
_UNQUOTED_OPERATOR_CHARS = frozenset(";&|<>()`\n")
# The classic ``:(){ :|:& };:`` and its renamings.
_FORK_BOMB = re.compile(r"(?P<name>[^\s(){};|&]+)\s*\(\s*\)\s*\{[^}]*(?P=name)\s*\|\s*(?P=name)")


def _parse(command: str) -> tuple[list[str], list[_Finding]]:
    if "\0" in command:
        return [], [_deny("medium", COMMAND_UNPARSEABLE, "the command contains a NUL byte")]
    try:
        argv = shlex.split(command)
    except ValueError as exc:  # unbalanced quotes, trailing backslash
        return [], [_deny("medium", COMMAND_UNPARSEABLE, f"cannot parse the command: {exc}")]
    if not argv:
        return [], [_deny("low", COMMAND_EMPTY, "the command is empty")]
    return argv, []


def _shell_segments(command: str) -> tuple[list[str], list[str]]:
    """Split ``command`` at shell operators that a shell would honour.

    Returns the operators found (in order, as written) and the text between them.
    Tracks quoting like a POSIX shell: nothing is special inside single quotes;
    inside double quotes only ``$(`` and backticks are (they still substitute).
    """
    operators: list[str] = []
    segments: list[str] = []
    start = 0
    quote = ""
    i = 0
    while i < len(command):
        char = command[i]
        if char == "\\" and quote != "'":
            i += 2  # an escaped character is never an operator
            continue
        if quote == "'":
            quote = "" if char == "'" else quote
        elif char == "$" and command[i + 1 : i + 2] == "(":
            operators.append("$(")
        elif quote == '"':
            if char == "`":
                operators.append("`")
            elif char == '"':
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in _UNQUOTED_OPERATOR_CHARS:
            operators.append("newline" if char == "\n" else char)
            segments.append(command[start:i])
            start = i + 1
        i += 1
    segments.append(command[start:])
    return operators, segments


def _check_command_line(command: str, argv: list[str], ctx: _Context) -> list[_Finding]:
    findings: list[_Finding] = []
    if _FORK_BOMB.search(command):
        findings.append(_deny("high", DESTRUCTIVE_COMMAND, "the command is a fork bomb"))
    operators, segments = _shell_segments(command)
    if not operators:
        return findings + _check_argv(argv, ctx)
    shown = " ".join(dict.fromkeys(operators))
    findings.append(
        _deny(
            "medium",
            COMPOUND_SHELL,
            f"shell syntax ({shown}) is not interpreted: commands run without a shell; "
            "split the work into separate runs or a script in the workspace",
        )
    )
    # Also classify each piece, so the decision shows what the line would have done.
    # Unknown pieces are left out: after a redirection they are file names.
    for segment in segments:
        try:
            pieces = shlex.split(segment)
        except ValueError:
            continue  # quotes spanning an operator: the compound denial already stands
        if pieces:
            objections = [f for f in _check_argv(pieces, ctx) if f.verdict != ALLOW]
            findings += [f for f in objections if f.code != COMMAND_UNKNOWN]
    return findings


# ---------------------------------------------------------- command classes


# Allow class (low risk): read, inspect, build and test tools whose every use is
# confined to printing or to the workspace. Matched on the executable's basename.
SAFE_COMMANDS: frozenset[str] = frozenset(
    {
        # print and inspect
        "echo", "printf", "ls", "cat", "head", "tail", "wc", "pwd", "true", "false",
        "sleep", "seq", "date", "grep", "egrep", "fgrep", "rg", "sort", "uniq", "cut",
        "tr", "diff", "cmp", "comm", "basename", "dirname", "realpath", "readlink",
        "stat", "file", "du", "df", "tree", "which", "whoami", "id", "uname", "nproc",
        "test", "[", "md5sum", "sha1sum", "sha256sum", "sha512sum", "base64", "od",
        "xxd", "jq", "yes", "column", "nl", "paste", "fold", "expand", "tac", "rev",
        # build and test (they run workspace code, like a human at the keyboard would)
        "make", "cmake", "pytest", "py.test", "ruff", "mypy", "black", "isort",
        "flake8", "pylint", "coverage", "tsc", "eslint", "prettier", "jest", "vitest",
        "rustc", "gcc", "g++", "cc", "clang", "javac", "java",
        # interpreters: python has its own rule (python -m pip is a package manager)
        "node", "ruby", "perl", "php",
    }
)  # fmt: skip

# Changing user is never something a workbench run should do.
PRIVILEGE_COMMANDS: frozenset[str] = frozenset(
    {"sudo", "su", "doas", "pkexec", "runuser", "setpriv", "chroot"}
)

# Shells and launchers run a command line of their own that this policy cannot see.
SHELL_INTERPRETERS: frozenset[str] = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox",
     "eval", "exec", "source", ".", "xargs", "parallel", "watch", "script", "expect"}
)  # fmt: skip

# Remote shells and raw sockets can move anything anywhere: high risk.
NETWORK_HIGH_RISK: frozenset[str] = frozenset(
    {"ssh", "scp", "sftp", "nc", "ncat", "netcat", "telnet", "socat", "ftp", "mosh"}
)
# Downloads and package managers: medium risk, an approver checks the source.
NETWORK_COMMANDS: frozenset[str] = frozenset(
    {"curl", "wget", "apt", "apt-get", "aptitude", "npx", "gem", "brew", "conda", "uvx"}
)

# Stop the machine or wipe disks: nothing a workspace run needs, ever.
DESTRUCTIVE_COMMANDS: frozenset[str] = frozenset(
    {"shutdown", "reboot", "halt", "poweroff", "init", "telinit", "mkfs", "mke2fs",
     "mkswap", "wipefs", "fdisk", "sfdisk", "cfdisk", "parted", "blkdiscard", "kexec"}
)  # fmt: skip

# Wrappers that run another command after their own options; that command is judged.
# name -> (flags, options that take a value, leading positionals before the command)
_WRAPPERS: Mapping[str, tuple[frozenset[str], frozenset[str], int]] = MappingProxyType(
    {
        "env": (frozenset({"-i", "--ignore-environment", "-0", "--null"}),
                frozenset({"-u", "--unset"}), 0),
        "nice": (frozenset(), frozenset({"-n", "--adjustment"}), 0),
        "nohup": (frozenset(), frozenset(), 0),
        "timeout": (frozenset({"--preserve-status", "--foreground", "-v", "--verbose"}),
                    frozenset({"-s", "--signal", "-k", "--kill-after"}), 1),
        "time": (frozenset({"-p"}), frozenset(), 0),
    }
)  # fmt: skip

_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?$")

_Rule = Callable[[str, list[str], _Context], list[_Finding]]


def _executable_name(arg0: str) -> str:
    name = os.path.basename(arg0)
    return "python" if _PYTHON_NAME.match(name) else name


def _check_argv(argv: list[str], ctx: _Context) -> list[_Finding]:
    """Classify one argv by its executable; the order is strictest class first."""
    name = _executable_name(argv[0])
    args = argv[1:]
    if name in PRIVILEGE_COMMANDS:
        return [_deny("high", PRIVILEGE_ESCALATION, f"{name} changes user")]
    if name in SHELL_INTERPRETERS:
        message = f"{name} runs a command line the policy cannot inspect"
        return [_approval("high", SHELL_INTERPRETER, message)]
    if name in DESTRUCTIVE_COMMANDS or name.startswith("mkfs."):
        return [_deny("high", DESTRUCTIVE_COMMAND, f"{name} stops the machine or wipes a disk")]
    if name in NETWORK_HIGH_RISK:
        return [_approval("high", NETWORK_COMMAND, f"{name} opens a remote connection")]
    if name in NETWORK_COMMANDS:
        return [_approval("medium", NETWORK_COMMAND, f"{name} downloads or installs")]
    if name in _WRAPPERS:
        return _check_wrapper(name, args, ctx)
    rule = _COMMAND_RULES.get(name)
    if rule is not None:
        return rule(name, args, ctx)
    if name in SAFE_COMMANDS:
        return [_allow(f"{name} is in the allow class")]
    return [_unknown(name)]


def _unknown(name: str, detail: str = "") -> _Finding:
    message = f"{name} is not in any known class" if not detail else f"{name}: {detail}"
    return _approval("medium", COMMAND_UNKNOWN, message)


# ---------------------------------------------------------- argument helpers


def _split_args(
    args: Sequence[str], valued: Iterable[str] = ()
) -> tuple[list[str], list[str], dict[str, str]]:
    """GNU-style split into (flags, operands, option values); options may follow operands.

    ``valued`` names options that take a value (``-t DIR``, ``-tDIR``, ``--target=DIR``).
    After ``--`` everything is an operand.
    """
    valued = frozenset(valued)
    flags: list[str] = []
    operands: list[str] = []
    values: dict[str, str] = {}
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            operands.extend(tokens)
        elif token.startswith("--") and "=" in token:
            name, _, value = token.partition("=")
            flags.append(name)
            values[name] = value
        elif token in valued:
            flags.append(token)
            values[token] = next(tokens, "")
        elif token[:2] in valued and not token.startswith("--"):
            flags.append(token[:2])
            values[token[:2]] = token[2:]
        elif token.startswith("-") and token != "-":
            flags.append(token)
        else:
            operands.append(token)
    return flags, operands, values


def _has_short_flag(flags: Iterable[str], letters: str, *long_names: str) -> bool:
    """True if any flag is one of ``long_names`` or a short cluster containing a letter."""
    for flag in flags:
        if flag in long_names:
            return True
        if flag.startswith("-") and not flag.startswith("--") and set(flag[1:]) & set(letters):
            return True
    return False


def _first_operand(args: Sequence[str], skip_valued: Iterable[str] = ()) -> tuple[int, str]:
    """Index and value of the first non-option argument (a subcommand), or (-1, "")."""
    skip = frozenset(skip_valued)
    i = 0
    while i < len(args):
        token = args[i]
        if token in skip:
            i += 2
            continue
        if not token.startswith("-"):
            return i, token
        i += 1
    return -1, ""


# ---------------------------------------------------------- per-command rules


def _check_wrapper(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """``env FOO=1 cmd``, ``nice -n 5 cmd``, ``timeout 10 cmd``: judge ``cmd``."""
    flags, valued, positionals = _WRAPPERS[name]
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            i += 1
            break
        if name == "env" and "=" in token and not token.startswith("-"):
            i += 1  # NAME=VALUE assignment
        elif token in flags or (name == "nice" and re.fullmatch(r"-\d+", token)):
            i += 1
        elif token in valued:
            i += 2
        elif token.startswith("--") and token.partition("=")[0] in valued:
            i += 1
        elif token[:2] in valued:
            i += 1  # short option with its value attached (-n5)
        elif token.startswith("-"):
            # env -S / -C (split strings, change directory) and anything unexpected.
            return [_unknown(name, f"option {token} is not understood by the policy")]
        else:
            break
    i += positionals
    if i >= len(args):
        return [_allow(f"{name} without a command")]
    return _check_argv(args[i:], ctx)


def _check_delete(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """rm, rmdir, unlink, shred.

    Deleting outside the workspace, the workspace itself, or a target that only a
    shell would expand (``~``, ``*``, ``$VAR``) is denied: without a shell those
    expansions do not happen, so the user meant something we cannot see.
    Deleting inside the workspace is legitimate (``rm -rf build``) but not
    undoable for untracked files, so it needs approval.
    """
    flags, operands, _ = _split_args(args)
    denials: list[_Finding] = []
    if "--no-preserve-root" in flags:
        denials.append(_deny("high", DESTRUCTIVE_COMMAND, f"{name} --no-preserve-root"))
    for operand in operands:
        if operand.startswith("~") or any(c in operand for c in "*?[$"):
            message = f"{name} target {operand!r} relies on shell expansion"
            denials.append(_deny("high", DESTRUCTIVE_COMMAND, message))
            continue
        target = _resolve_unlink_target(operand, ctx.cwd)
        if target == ctx.root or not _is_within(target, ctx.root):
            where = "is the workspace itself" if target == ctx.root else "is outside the workspace"
            message = f"{name} target {operand!r} ({target}) {where}"
            denials.append(_deny("high", DESTRUCTIVE_COMMAND, message))
    if denials:
        return denials
    recursive = name == "rm" and _has_short_flag(flags, "rR", "--recursive")
    message = f"{name} deletes files in the workspace"
    return [_approval("high" if recursive else "medium", DESTRUCTIVE_COMMAND, message)]


def _targets_outside(operands: Iterable[str], ctx: _Context) -> list[str]:
    return [op for op in operands if not _is_within(_resolve_path(op, ctx.cwd), ctx.root)]


_CHMOD_MODE = re.compile(r"^[0-7]{1,4}$|^[ugoa]*[-+=][rwxXstugo]*(,[ugoa]*[-+=][rwxXstugo]*)*$")


def _check_permissions(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """chmod, chown, chgrp: fine inside the workspace; recursive outside is destructive."""
    if name == "chmod":
        # A mode can look like an option (chmod -w file): drop modes, keep paths.
        args = [arg for arg in args if not _CHMOD_MODE.match(arg)]
    flags, operands, _ = _split_args(args)
    if name != "chmod" and not any(flag.startswith("--reference") for flag in flags):
        operands = operands[1:]  # the owner or group
    recursive = _has_short_flag(flags, "R", "--recursive")
    outside = _targets_outside(operands, ctx)
    if not outside:
        return [_allow(f"{name} inside the workspace")]
    if recursive or any(_resolve_path(op, ctx.cwd) == "/" for op in outside):
        message = f"{name} {'-R ' if recursive else ''}on {', '.join(outside)}"
        return [_deny("high", DESTRUCTIVE_COMMAND, message)]
    message = f"{name} target outside the workspace: {', '.join(outside)}"
    return [_deny("high", PATH_OUTSIDE_WORKSPACE, message)]


def _check_create(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """mkdir, touch, tee: every operand is written, so every operand must be inside."""
    _, operands, _ = _split_args(args, valued={"-m", "--mode", "-d", "-r", "-t"})
    outside = _targets_outside(operands, ctx)
    if outside:
        message = f"{name} target outside the workspace: {', '.join(outside)}"
        return [_deny("high", PATH_OUTSIDE_WORKSPACE, message)]
    return [_allow(f"{name} inside the workspace")]


def _check_copy(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """cp, mv: sources may come from anywhere, the destination must be inside."""
    flags, operands, values = _split_args(
        args, valued={"-t", "--target-directory", "-S", "--suffix"}
    )
    destination = values.get("-t") or values.get("--target-directory")
    if destination is None and "-T" not in flags and len(operands) < 2:
        return [_allow(f"{name} without a destination")]  # fails on its own
    if destination is None:
        destination = operands[-1]
    outside = _targets_outside([destination], ctx)
    if outside:
        message = f"{name} destination outside the workspace: {destination}"
        return [_deny("high", PATH_OUTSIDE_WORKSPACE, message)]
    return [_allow(f"{name} inside the workspace")]


def _check_dd(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """dd of=/dev/sda overwrites a disk; other uses are rare enough to need approval."""
    harmless = {"/dev/null", "/dev/stdout", "/dev/stderr"}
    for arg in args:
        if arg.startswith("of="):
            target = _resolve_path(arg[3:], ctx.cwd)
            if target.startswith("/dev/") and target not in harmless:
                return [_deny("high", DESTRUCTIVE_COMMAND, f"dd writes to device {arg[3:]}")]
    return [_unknown(name)]


def _check_find(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """find is read-only unless it deletes or runs commands per file."""
    if "-delete" in args:
        return [_approval("high", DESTRUCTIVE_COMMAND, "find -delete removes files")]
    runners = {"-exec", "-execdir", "-ok", "-okdir"} & set(args)
    if runners:
        message = f"find {sorted(runners)[0]} runs a command per file"
        return [_approval("high", SHELL_INTERPRETER, message)]
    return [_allow("find lists files")]


def _check_rsync(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """rsync to ``host:path`` or ``rsync://`` is network; a local rsync --delete can wipe."""
    _, operands, _ = _split_args(args, valued={"-e", "--rsh"})
    if any(":" in op.split("/", 1)[0] or op.startswith("rsync://") for op in operands):
        return [_approval("medium", NETWORK_COMMAND, "rsync to or from a remote host")]
    return [_unknown(name)]


def _check_systemctl(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    _, sub = _first_operand(args)
    if sub in {"poweroff", "reboot", "halt", "kexec", "suspend", "hibernate", "rescue"}:
        return [_deny("high", DESTRUCTIVE_COMMAND, f"systemctl {sub} stops the machine")]
    return [_unknown(name)]


# git: subcommands that stay local and keep history recoverable (reflog).
_GIT_ALLOWED = frozenset(
    {"status", "diff", "log", "show", "rev-parse", "ls-files", "blame", "describe",
     "shortlog", "grep", "reflog", "cat-file", "ls-tree", "show-ref", "version", "help",
     "add", "commit", "init", "branch", "tag", "switch", "stash", "merge", "rebase",
     "cherry-pick", "mv"}
)  # fmt: skip
_GIT_NETWORK = frozenset({"clone", "fetch", "pull", "push", "ls-remote", "submodule"})
# Global options that change nothing but output; -C/-c/--git-dir can redirect git
# elsewhere or make it run configured programs (core.pager, core.sshCommand).
_GIT_HARMLESS_GLOBALS = frozenset({"--no-pager", "-P", "--no-optional-locks", "--version"})
_GIT_FORCE_PUSH = frozenset(
    {"-f", "--force", "--force-with-lease", "--force-if-includes", "--mirror", "--delete", "-d"}
)


def _check_git(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    index, sub = _first_operand(args)
    leading = args[:index] if index >= 0 else args
    odd_globals = [opt for opt in leading if opt not in _GIT_HARMLESS_GLOBALS]
    if odd_globals:
        return [_unknown("git", f"global option {odd_globals[0]} needs a review")]
    rest = args[index + 1 :] if index >= 0 else []
    if not sub:
        return [_allow("git without a subcommand")]
    if sub == "push":
        return _check_git_push(rest)
    if sub == "reset" and "--hard" in rest:
        message = "git reset --hard discards uncommitted work"
        return [_approval("high", DESTRUCTIVE_COMMAND, message)]
    if sub == "clean":
        flags, _, _ = _split_args(rest)
        if _has_short_flag(flags, "f", "--force"):
            message = "git clean -f deletes untracked files"
            return [_approval("high", DESTRUCTIVE_COMMAND, message)]
        return [_allow("git clean without -f only lists")]
    if sub == "reset" or sub in _GIT_ALLOWED:
        return [_allow(f"git {sub} is local")]
    if sub in _GIT_NETWORK:
        return [_approval("medium", NETWORK_COMMAND, f"git {sub} talks to a remote")]
    return [_unknown("git", f"subcommand {sub!r} (or an alias) is not in any known class")]


def _check_git_push(rest: list[str]) -> list[_Finding]:
    findings = [_approval("medium", NETWORK_COMMAND, "git push talks to a remote")]
    flags, operands, _ = _split_args(rest)
    forced = [flag for flag in flags if flag in _GIT_FORCE_PUSH]
    forced += [op for op in operands[1:] if op.startswith(("+", ":"))]  # +ref, :ref
    if forced:
        message = f"git push {forced[0]} rewrites or deletes remote history"
        findings.append(_deny("high", DESTRUCTIVE_COMMAND, message))
    return findings


# Package managers: (allowed local subcommands, network subcommands). A bare
# invocation is looked up as "".
_PACKAGE_MANAGERS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = MappingProxyType(
    {
        "npm": (
            frozenset({"test", "t", "tst", "run", "run-script", "start", "ls", "list"}),
            frozenset({"install", "i", "ci", "add", "update", "up", "upgrade", "publish",
                       "audit", "outdated", "view", "info", "exec", "x", "create", "init"}),
        ),
        "yarn": (
            frozenset({"test", "run"}),
            frozenset({"", "install", "add", "upgrade", "up", "dlx", "create", "publish"}),
        ),
        "pnpm": (
            frozenset({"test", "t", "run", "ls", "list"}),
            frozenset({"install", "i", "add", "update", "up", "dlx", "create", "publish"}),
        ),
        "pip": (
            frozenset({"list", "show", "freeze", "check", "help", "--version", "-V"}),
            frozenset({"install", "download", "wheel", "search", "index"}),
        ),
        "docker": (
            frozenset({"ps", "images", "version", "info"}),
            frozenset({"pull", "push", "login", "search"}),
        ),
    }
)  # fmt: skip


def _check_package_manager(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    key = "pip" if name in ("pip", "pip3") else name
    local, network = _PACKAGE_MANAGERS[key]
    # pip accepts its version flag as the only argument.
    sub = args[0] if args and args[0] in local else _first_operand(args)[1]
    invocation = f"{name} {sub}".rstrip()
    if sub in network:
        return [_approval("medium", NETWORK_COMMAND, f"{invocation} talks to a package registry")]
    if sub in local:
        return [_allow(f"{invocation} is local")]
    return [_unknown(name, f"subcommand {sub!r} is not in any known class")]


def _check_python(name: str, args: list[str], ctx: _Context) -> list[_Finding]:
    """python script.py / -m module / -c code: allowed, except ``-m pip`` (judged as pip)."""
    i = 0
    while i < len(args):
        token = args[i]
        if token == "-m":
            module = args[i + 1] if i + 1 < len(args) else ""
            if module in ("pip", "pip3"):
                return _check_package_manager("pip", args[i + 2 :], ctx)
            break
        if token == "-c" or not token.startswith("-"):
            break  # inline code or a script: the rest are its own arguments
        i += 2 if token in ("-W", "-X") else 1
    return [_allow("python runs workspace code")]


_COMMAND_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "rm": _check_delete,
        "rmdir": _check_delete,
        "unlink": _check_delete,
        "shred": _check_delete,
        "chmod": _check_permissions,
        "chown": _check_permissions,
        "chgrp": _check_permissions,
        "mkdir": _check_create,
        "touch": _check_create,
        "tee": _check_create,
        "cp": _check_copy,
        "mv": _check_copy,
        "dd": _check_dd,
        "find": _check_find,
        "rsync": _check_rsync,
        "systemctl": _check_systemctl,
        "git": _check_git,
        "npm": _check_package_manager,
        "yarn": _check_package_manager,
        "pnpm": _check_package_manager,
        "pip": _check_package_manager,
        "pip3": _check_package_manager,
        "docker": _check_package_manager,
        "python": _check_python,
    }
)
