"""Policy engine evaluated before every dispatch, local or external.

Pure Python (no Django, no ORM): the glue in ``execution.policy_gate`` feeds it a
command line, the project's workspace root, the requested cwd and env profile,
and stores the :class:`PolicyDecision` on the run. This module parses the line
and combines findings; ``execution.policy_rules`` judges one argv and
``execution.policy_tables`` holds the command classes it reads.

A decision is the strictest verdict and the highest risk over every rule that
fired; each rule contributes a stable snake_case reason code (see
:data:`REASON_CODES`) and a human message. The rules, in short:

* the command must parse (``shlex``) and not be empty;
* we execute argv **without a shell**, so shell syntax (``;``, ``&&``, ``|``,
  redirections, ``$(...)``, backticks, ``&``, newlines) would be passed as
  literal arguments and silently do something else than the user reads: denied;
* the executable is judged by what it resolves to: a path is followed from the
  cwd and a bare name looked up in the profile's ``PATH``, symlinks included.
  A file of the workspace needs approval whatever its name (``cp /bin/bash
  ./echo``); outside it the name is matched against the tables, and so is the
  program a symlink points to;
* privilege escalation is denied; shells, launchers and inline code (``python
  -c``, ``node -e``, ``bash -c``, ``env ... <interpreter>``) need approval;
  destructive commands are denied (or need approval when they stay inside the
  workspace); network commands need approval; known safe tools are allowed,
  anything else needs approval;
* options that write (``-o``, ``--output``, ``--basetemp``), move (``-C``) or
  run something else (``--exec``, ``--eval``, ``find -exec``) are checked: a
  write or move outside the workspace is denied, running another command needs
  approval;
* the cwd must resolve (symlinks and ``..`` included) inside the workspace;
* the env profile must be one of the configured ones.

What the engine does *not* do: it guards the command line, not the program.
``python script.py``, ``make`` or ``npm test`` run code the engine cannot see;
they are allowed because that code lives in the workspace, under review and
version control, like any build the engineer runs by hand (the sandbox, not the
policy, confines what that code does). Shell expansions (``$HOME``, ``*.py``)
are not expanded either; outside ``rm`` (where they are denied) they only make
the command fail or print literally, nothing hidden runs.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from execution.policy_core import (
    ALLOW,
    APPROVAL,
    COMMAND_ALLOWED,
    COMMAND_EMPTY,
    COMMAND_UNKNOWN,
    COMMAND_UNPARSEABLE,
    COMPOUND_SHELL,
    CWD_OUTSIDE_WORKSPACE,
    DENY,
    DESTRUCTIVE_COMMAND,
    ENV_PROFILE_UNKNOWN,
    EXECUTES_OTHER_COMMAND,
    INLINE_CODE,
    NETWORK_COMMAND,
    PATH_OUTSIDE_WORKSPACE,
    PRIVILEGE_ESCALATION,
    REASON_CODES,
    RISK_RANK,
    SHELL_INTERPRETER,
    VERDICT_RANK,
    WORKSPACE_EXECUTABLE,
    WORKSPACE_ROOT_INVALID,
    Context,
    Finding,
    Risk,
    Verdict,
    deny,
    is_within,
)
from execution.policy_rules import check_argv
from execution.policy_tables import (
    DESTRUCTIVE_COMMANDS,
    NETWORK_COMMANDS,
    NETWORK_HIGH_RISK,
    PRIVILEGE_COMMANDS,
    SAFE_COMMANDS,
    SHELL_INTERPRETERS,
)

__all__ = [
    "ALLOW",
    "APPROVAL",
    "COMMAND_ALLOWED",
    "COMMAND_EMPTY",
    "COMMAND_UNKNOWN",
    "COMMAND_UNPARSEABLE",
    "COMPOUND_SHELL",
    "CWD_OUTSIDE_WORKSPACE",
    "DEFAULT_ENV_PROFILES",
    "DEFAULT_PATH",
    "DENY",
    "DESTRUCTIVE_COMMAND",
    "DESTRUCTIVE_COMMANDS",
    "ENV_PROFILE_UNKNOWN",
    "EXECUTES_OTHER_COMMAND",
    "INLINE_CODE",
    "NETWORK_COMMAND",
    "NETWORK_COMMANDS",
    "NETWORK_HIGH_RISK",
    "PATH_OUTSIDE_WORKSPACE",
    "PRIVILEGE_COMMANDS",
    "PRIVILEGE_ESCALATION",
    "REASON_CODES",
    "SAFE_COMMANDS",
    "SHELL_INTERPRETER",
    "SHELL_INTERPRETERS",
    "WORKSPACE_EXECUTABLE",
    "WORKSPACE_ROOT_INVALID",
    "EnvProfile",
    "Finding",
    "PolicyDecision",
    "Risk",
    "Verdict",
    "build_env",
    "decide",
    "evaluate",
]


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


def _search_path(profile: EnvProfile | None) -> tuple[str, ...]:
    """The directories a bare executable name is looked up in for this profile.

    A profile that passes the host's ``PATH`` through without fixing one is
    judged against the default: the policy cannot know the worker's environment.
    """
    values = profile.values if profile is not None else {}
    return tuple(values.get("PATH", DEFAULT_PATH).split(os.pathsep))


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
    profile = env_profiles.get(profile_name)
    findings: list[Finding] = []

    root, resolved_cwd, cwd_findings = _check_workspace(workspace_root, cwd)
    findings += cwd_findings
    # The profile *is* the env allowlist: an unknown name must never fall back to another.
    if profile is None:
        findings.append(
            deny("low", ENV_PROFILE_UNKNOWN, f"env profile {profile_name!r} is not configured")
        )

    argv, parse_findings = _parse(command)
    findings += parse_findings
    if argv and root:  # without a valid root there is no workspace to judge against
        context = Context(root=root, cwd=resolved_cwd, search_path=_search_path(profile))
        findings += _check_command_line(command, argv, context)

    return decide(findings, argv=argv, resolved_cwd=resolved_cwd, env_profile=profile_name)


def decide(
    findings: Sequence[Finding], *, argv: Sequence[str], resolved_cwd: str, env_profile: str
) -> PolicyDecision:
    """The strictest verdict and highest risk of ``findings``, explained by the
    codes that objected (or, when nothing did, by the allowing ones)."""
    verdict = max((f.verdict for f in findings), key=VERDICT_RANK.__getitem__, default=ALLOW)
    risk = max((f.risk for f in findings), key=RISK_RANK.__getitem__, default="low")
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


def _check_workspace(workspace_root: str, cwd: str | None) -> tuple[str, str, list[Finding]]:
    """Resolve root and cwd with realpath, so neither ``..`` nor a symlink can escape."""
    if not workspace_root or not os.path.isabs(workspace_root) or "\0" in workspace_root:
        # A relative root would resolve against the worker's own cwd.
        message = f"workspace root {workspace_root!r} is not an absolute path"
        finding = deny("high", WORKSPACE_ROOT_INVALID, message)
        return "", "", [finding]
    root = os.path.realpath(workspace_root)
    if not cwd:
        return root, root, []
    if "\0" in cwd:
        return root, root, [deny("high", CWD_OUTSIDE_WORKSPACE, "cwd contains a NUL byte")]
    resolved = os.path.realpath(os.path.join(root, cwd))  # join keeps an absolute cwd as is
    if is_within(resolved, root):
        return root, resolved, []
    message = f"cwd {cwd!r} resolves to {resolved}, outside the workspace {root}"
    return root, resolved, [deny("high", CWD_OUTSIDE_WORKSPACE, message)]


# ------------------------------------------------------------ parsing and syntax


# Outside quotes these characters make a shell do something else than run one
# argv: sequence, background, pipe, redirect, subshell, command substitution.
_UNQUOTED_OPERATOR_CHARS = frozenset(";&|<>()`\n")
# The classic ``:(){ :|:& };:`` and its renamings.
_FORK_BOMB = re.compile(r"(?P<name>[^\s(){};|&]+)\s*\(\s*\)\s*\{[^}]*(?P=name)\s*\|\s*(?P=name)")


def _parse(command: str) -> tuple[list[str], list[Finding]]:
    if "\0" in command:
        return [], [deny("medium", COMMAND_UNPARSEABLE, "the command contains a NUL byte")]
    try:
        argv = shlex.split(command)
    except ValueError as exc:  # unbalanced quotes, trailing backslash
        return [], [deny("medium", COMMAND_UNPARSEABLE, f"cannot parse the command: {exc}")]
    if not argv:
        return [], [deny("low", COMMAND_EMPTY, "the command is empty")]
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


_FILE_NAME_CODES = frozenset({COMMAND_UNKNOWN, WORKSPACE_EXECUTABLE})


def _check_command_line(command: str, argv: list[str], ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    if _FORK_BOMB.search(command):
        findings.append(deny("high", DESTRUCTIVE_COMMAND, "the command is a fork bomb"))
    operators, segments = _shell_segments(command)
    if not operators:
        return findings + check_argv(argv, ctx)
    shown = " ".join(dict.fromkeys(operators))
    findings.append(
        deny(
            "medium",
            COMPOUND_SHELL,
            f"shell syntax ({shown}) is not interpreted: commands run without a shell; "
            "split the work into separate runs or a script in the workspace",
        )
    )
    # Also classify each piece, so the decision shows what the line would have done.
    # Unknown pieces are left out: after a redirection they are file names
    # (``> ./out`` is not a workspace executable either).
    for segment in segments:
        try:
            pieces = shlex.split(segment)
        except ValueError:
            continue  # quotes spanning an operator: the compound denial already stands
        if pieces:
            objections = [f for f in check_argv(pieces, ctx) if f.verdict != ALLOW]
            findings += [f for f in objections if f.code not in _FILE_NAME_CODES]
    return findings
