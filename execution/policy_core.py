"""Building blocks shared by the command policy modules: verdicts, reason codes,
findings, the evaluation context and the argument helpers.

Pure Python, no Django. ``execution.policy`` is the public entry point and
re-exports what callers need; ``execution.policy_rules`` holds the per-command
rules and ``execution.policy_tables`` the data they read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Verdict = Literal["allow", "requires_approval", "deny"]
Risk = Literal["low", "medium", "high"]

ALLOW: Verdict = "allow"
APPROVAL: Verdict = "requires_approval"
DENY: Verdict = "deny"

VERDICT_RANK: Mapping[str, int] = MappingProxyType({ALLOW: 0, APPROVAL: 1, DENY: 2})
RISK_RANK: Mapping[str, int] = MappingProxyType({"low": 0, "medium": 1, "high": 2})

# Stable machine codes: stored on runs and shown by the API, so never rename one.
COMMAND_ALLOWED = "command_allowed"
COMMAND_EMPTY = "command_empty"
COMMAND_UNPARSEABLE = "command_unparseable"
COMMAND_UNKNOWN = "command_unknown"
DESTRUCTIVE_COMMAND = "destructive_command"
NETWORK_COMMAND = "network_command"
COMPOUND_SHELL = "compound_shell"
SHELL_INTERPRETER = "shell_interpreter"
INLINE_CODE = "inline_code"
EXECUTES_OTHER_COMMAND = "executes_other_command"
WORKSPACE_EXECUTABLE = "workspace_executable"
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
        INLINE_CODE: "a shell or interpreter runs code given on the command line",
        EXECUTES_OTHER_COMMAND: "an option makes the tool run another command or code",
        WORKSPACE_EXECUTABLE: "the executable lives in the workspace, so its name proves nothing",
        PRIVILEGE_ESCALATION: "the command changes user (sudo, su, ...)",
        CWD_OUTSIDE_WORKSPACE: "the working directory resolves outside the workspace",
        PATH_OUTSIDE_WORKSPACE: "a write target resolves outside the workspace",
        ENV_PROFILE_UNKNOWN: "the env profile is not configured",
        WORKSPACE_ROOT_INVALID: "the project's workspace root is not an absolute path",
    }
)


# ---------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """What one rule concluded; the decision is the strictest finding."""

    verdict: Verdict
    risk: Risk
    code: str
    message: str


def allow(message: str) -> Finding:
    return Finding(ALLOW, "low", COMMAND_ALLOWED, message)


def approval(risk: Risk, code: str, message: str) -> Finding:
    return Finding(APPROVAL, risk, code, message)


def deny(risk: Risk, code: str, message: str) -> Finding:
    return Finding(DENY, risk, code, message)


def unknown(name: str, detail: str = "") -> Finding:
    message = f"{name} is not in any known class" if not detail else f"{name}: {detail}"
    return approval("medium", COMMAND_UNKNOWN, message)


def objections(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.verdict != ALLOW]


# ------------------------------------------------------------- workspace paths


@dataclass(frozen=True)
class Context:
    """Where a command runs: realpaths of the workspace and the cwd, and the
    directories a bare executable name is looked up in (the env profile's PATH)."""

    root: str
    cwd: str
    search_path: tuple[str, ...] = ()

    def moved_to(self, directory: str) -> Context:
        """The context after ``-C directory`` (relative to the current cwd)."""
        return Context(self.root, resolve_path(directory, self.cwd), self.search_path)


def is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_path(arg: str, cwd: str) -> str:
    """Where a path argument lands, following symlinks like most tools do."""
    return os.path.realpath(os.path.join(cwd, arg))


def resolve_entry(arg: str, cwd: str) -> str:
    """Where a directory entry is, without following the entry itself if it is a link.

    ``rm link`` removes the link and ``./link`` is a file of the workspace even
    when it points elsewhere; a trailing slash makes tools follow the link.
    """
    path = os.path.join(cwd, arg)
    head, tail = os.path.split(path.rstrip(os.sep))
    if arg.endswith(os.sep) or tail in ("", ".", ".."):
        return os.path.realpath(path)
    return os.path.join(os.path.realpath(head), tail)


def outside(paths: Iterable[str], ctx: Context) -> list[str]:
    """The paths (as written) that resolve outside the workspace."""
    return [p for p in paths if not is_within(resolve_path(p, ctx.cwd), ctx.root)]


# ------------------------------------------------------------ argument helpers


def split_args(
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


def has_short_flag(flags: Iterable[str], letters: str, *long_names: str) -> bool:
    """True if any flag is one of ``long_names`` or a short cluster containing a letter."""
    for flag in flags:
        if flag in long_names:
            return True
        if flag.startswith("-") and not flag.startswith("--") and set(flag[1:]) & set(letters):
            return True
    return False


def first_operand(args: Sequence[str], skip_valued: Iterable[str] = ()) -> tuple[int, str]:
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


def match_long(name: str, options: Iterable[str], *, fold_case: bool = False) -> str | None:
    """The long option ``name`` stands for, exact or abbreviated.

    getopt_long, argparse and git all accept any unambiguous prefix
    (``--outp=/x`` is ``--output=/x``), so a prefix of a watched option counts as
    that option. An ambiguous prefix is an error for the tool; treating it as
    the watched option only makes the verdict stricter.
    """
    if fold_case:
        name = name.lower()
    candidates = [opt for opt in options if opt.startswith("--")]
    for option in candidates:
        if (option.lower() if fold_case else option) == name:
            return option
    if len(name) <= 2:
        return None
    for option in sorted(candidates):
        if (option.lower() if fold_case else option).startswith(name):
            return option
    return None


@dataclass(frozen=True)
class OptionUse:
    """One occurrence of a watched option: its canonical spelling and its value."""

    option: str
    value: str


def scan_options(
    args: Sequence[str],
    watched: Iterable[str],
    *,
    valued: Iterable[str] = (),
    takes_value: Iterable[str] | None = None,
    clusters: bool = True,
    fold_case: bool = False,
) -> Iterator[OptionUse]:
    """Yield every use of a ``watched`` option in ``args``, with its value.

    Spellings: ``--long VALUE``, ``--long=VALUE``, an abbreviated ``--lo=VALUE``,
    ``-s VALUE``, ``-sVALUE`` and, when the tool bundles short options
    (``clusters``), ``-rs VALUE``. ``valued`` names other options whose value must
    be skipped so it is not read as an option. ``takes_value`` (default: every
    watched option) says which watched options consume a value. Tools that do not
    bundle (gcc, javac) match a watched short option as a prefix: ``-ofile``.
    Scanning stops at ``--``.
    """
    watched = frozenset(watched)
    needs_value = watched if takes_value is None else frozenset(takes_value)
    valued = frozenset(valued)
    long_options = watched | {opt for opt in valued if opt.startswith("--")}
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            return
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            option = match_long(name, long_options, fold_case=fold_case)
            if option is None:
                continue
            if not eq and (option in needs_value or option in valued):
                value = args[i] if i < len(args) else ""
                i += 1
            if option in watched:
                yield OptionUse(option, value)
            continue
        if not token.startswith("-") or token == "-":
            continue
        if not clusters:
            for option in sorted(watched | valued, key=len, reverse=True):
                if option.startswith("--") or not token.startswith(option):
                    continue
                value = token[len(option) :]
                if not value and (option in needs_value or option in valued):
                    value = args[i] if i < len(args) else ""
                    i += 1
                if option in watched:
                    yield OptionUse(option, value)
                break
            continue
        for j, letter in enumerate(token[1:], start=1):
            option = "-" + letter
            if option not in watched and option not in valued:
                continue
            value = token[j + 1 :]
            if not value and (option in needs_value or option in valued):
                value = args[i] if i < len(args) else ""
                i += 1
            if option in watched:
                yield OptionUse(option, value if option in needs_value else "")
            if option in needs_value or option in valued:
                break
