"""Per-command rules of the command policy: what one argv does.

:func:`check_argv` first resolves what the executable really is (a path or a
``PATH`` lookup, symlinks followed), then classifies it by name against
``execution.policy_tables`` and checks the options that write, move or run
somewhere else. Every rule returns findings; ``execution.policy`` combines them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from execution.policy_core import (
    CWD_OUTSIDE_WORKSPACE,
    DESTRUCTIVE_COMMAND,
    EXECUTES_OTHER_COMMAND,
    INLINE_CODE,
    NETWORK_COMMAND,
    PATH_OUTSIDE_WORKSPACE,
    PRIVILEGE_ESCALATION,
    SHELL_INTERPRETER,
    WORKSPACE_EXECUTABLE,
    Context,
    Finding,
    allow,
    approval,
    deny,
    first_operand,
    has_short_flag,
    is_within,
    match_long,
    outside,
    resolve_entry,
    resolve_path,
    scan_options,
    split_args,
    unknown,
)
from execution.policy_tables import (
    ARGUMENT_RULES,
    CODE_LOADING_ENV,
    CODE_LOADING_ENV_PREFIXES,
    DESTRUCTIVE_COMMANDS,
    GIT_ALLOWED,
    GIT_FORCE_PUSH,
    GIT_HARMLESS_GLOBALS,
    GIT_NETWORK,
    GIT_SUBCOMMAND_RULES,
    INLINE_CODE_OPTIONS,
    INTERPRETERS,
    MAKE_SHELL_VARIABLES,
    MULTI_CALL_BINARIES,
    NETWORK_COMMANDS,
    NETWORK_HIGH_RISK,
    PACKAGE_MANAGERS,
    PRIVILEGE_COMMANDS,
    PYTEST_INI_PATH_KEYS,
    PYTHON_INLINE_MODULES,
    PYTHON_TOOL_MODULES,
    SAFE_COMMANDS,
    SHELL_INTERPRETERS,
    SYSTEM_EXECUTABLE_DIRS,
    WRAPPERS,
    OptionSpec,
)

Rule = Callable[[str, list[str], Context], list[Finding]]

_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)*)?$")
# What distributions add to a program's file name: a target triplet
# (x86_64-linux-gnu-gcc-12), a version (gcc-12, perl5.36.0) or a variant
# suffix (which.debianutils, nc.openbsd, npm-cli.js).
_TRIPLET_PREFIX = re.compile(r"^[a-z0-9_]+-(?:[a-z0-9_]+-)?linux-[a-z0-9_]+-")
_VARIANT_SUFFIX = re.compile(r"(?:\.[A-Za-z][\w.-]*|-\d[\d.]*|(?<=[a-z])\d+(?:\.\d+)+)$")
_PERL_MODULE = re.compile(r"-?[\w:]+(=[\w:,.-]*)?")


def canonical_name(name: str) -> str:
    return "python" if _PYTHON_NAME.match(name) else name


def check_argv(argv: Sequence[str], ctx: Context) -> list[Finding]:
    """Classify one argv by what its executable resolves to."""
    names, findings = resolve_executable(argv[0], ctx)
    invoked = classify(names[0], list(argv[1:]), ctx)
    findings += invoked
    seen = {f.code for f in invoked if f.verdict != "allow"}
    for name in names[1:]:  # the program a symlink points to: only what it adds
        findings += [f for f in classify(name, list(argv[1:]), ctx) if f.code not in seen]
    return findings


# ------------------------------------------------------ executable resolution


def resolve_executable(arg0: str, ctx: Context) -> tuple[tuple[str, ...], list[Finding]]:
    """The names to judge ``arg0`` by, and findings about where it lives.

    A name with a slash is resolved from the cwd; a bare name is looked up in
    the profile's ``PATH`` like ``execvp`` does. A file of the workspace (or a
    ``PATH`` that searches the workspace) needs approval whatever its name: the
    run could have put anything there (``cp /bin/bash ./echo``). Outside the
    workspace the file is judged by its name and, when a symlink points to a
    different known program, by that program too (strictest wins). A bare name
    found nowhere is judged by its name: it cannot run.
    """
    invoked = canonical_name(os.path.basename(arg0.rstrip(os.sep)) or arg0)
    if "/" in arg0:
        location = resolve_entry(arg0, ctx.cwd)
    else:
        found = _search_path(arg0, ctx)
        if found is None:
            return (invoked,), []
        location = found
    real = os.path.realpath(location)
    findings: list[Finding] = []
    if is_within(location, ctx.root) or is_within(real, ctx.root):
        message = f"{arg0} is a file of the workspace ({real}); its name proves nothing"
        findings.append(approval("high", WORKSPACE_EXECUTABLE, message))
    elif not any(is_within(real, d) for d in SYSTEM_EXECUTABLE_DIRS):
        findings.append(unknown(invoked, f"{arg0} resolves to {real}, outside system directories"))
    return _judged_names(invoked, os.path.basename(real)), findings


def _search_path(name: str, ctx: Context) -> str | None:
    """Where ``execvp`` finds ``name``; a workspace directory on the way counts as found."""
    for entry in ctx.search_path:
        directory = resolve_path(entry or ".", ctx.cwd)  # an empty entry is the cwd
        candidate = os.path.join(directory, name)
        if is_within(directory, ctx.root):
            return candidate  # whether or not it exists yet: a run may create it
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _judged_names(invoked: str, real_base: str) -> tuple[str, ...]:
    resolved = canonical_name(real_base)
    if resolved == invoked or real_base in MULTI_CALL_BINARIES:
        return (invoked,)
    resolved = canonical_name(_VARIANT_SUFFIX.sub("", _TRIPLET_PREFIX.sub("", real_base)))
    if resolved == invoked or not _is_known(resolved):
        # A distribution alias (npm -> npm-cli.js, cc -> gcc-12) of a system file.
        return (invoked,)
    return (invoked, resolved)


def _is_known(name: str) -> bool:
    return any(
        name in table
        for table in (SAFE_COMMANDS, PRIVILEGE_COMMANDS, SHELL_INTERPRETERS, INTERPRETERS,
                      NETWORK_HIGH_RISK, NETWORK_COMMANDS, DESTRUCTIVE_COMMANDS, WRAPPERS,
                      COMMAND_RULES)
    )  # fmt: skip


# --------------------------------------------------------------- classification


def classify(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """Judge ``name args`` by class (strictest class first), then by its options."""
    findings = _classify_by_class(name, args, ctx)
    spec = ARGUMENT_RULES.get(name)
    if spec is not None:
        findings += check_options(name, spec, args, ctx)
    return findings


def _classify_by_class(name: str, args: list[str], ctx: Context) -> list[Finding]:
    if name in PRIVILEGE_COMMANDS:
        return [deny("high", PRIVILEGE_ESCALATION, f"{name} changes user")]
    if name in SHELL_INTERPRETERS:
        option = inline_code_option(name, args)
        if option:
            message = f"{name} {option} runs code given on the command line"
            return [approval("high", INLINE_CODE, message)]
        message = f"{name} runs a command line the policy cannot inspect"
        return [approval("high", SHELL_INTERPRETER, message)]
    if name in DESTRUCTIVE_COMMANDS or name.startswith("mkfs."):
        return [deny("high", DESTRUCTIVE_COMMAND, f"{name} stops the machine or wipes a disk")]
    if name in NETWORK_HIGH_RISK:
        return [approval("high", NETWORK_COMMAND, f"{name} opens a remote connection")]
    if name in NETWORK_COMMANDS:
        return [approval("medium", NETWORK_COMMAND, f"{name} downloads or installs")]
    if name in WRAPPERS:
        return _check_wrapper(name, args, ctx)
    rule = COMMAND_RULES.get(name)
    if rule is not None:
        return rule(name, args, ctx)
    if name in SAFE_COMMANDS:
        return [allow(f"{name} is in the allow class")]
    return [unknown(name)]


def check_options(label: str, spec: OptionSpec, args: Sequence[str], ctx: Context) -> list[Finding]:
    """Options of ``spec`` that write outside, move outside or run another command."""
    findings: list[Finding] = []
    here = ctx
    watched = spec.writes | spec.chdir | spec.executes | spec.runs_file
    uses = scan_options(
        args, watched, valued=spec.valued, clusters=spec.clusters, fold_case=spec.fold_case
    )
    for use in uses:
        shown = f"{label} {use.option} {use.value}".rstrip()
        if use.option in spec.executes:
            findings.append(
                approval("high", EXECUTES_OTHER_COMMAND, f"{shown} runs another command")
            )
        elif not use.value:
            continue
        elif use.option in spec.chdir:
            if outside([use.value], here):
                message = (
                    f"{shown} works in {resolve_path(use.value, here.cwd)}, outside the workspace"
                )
                findings.append(deny("high", CWD_OUTSIDE_WORKSPACE, message))
            else:
                here = here.moved_to(use.value)
        elif use.option in spec.writes and outside([use.value], here):
            findings.append(
                deny("high", PATH_OUTSIDE_WORKSPACE, f"{shown} writes outside the workspace")
            )
        elif use.option in spec.runs_file and outside([use.value], here):
            message = f"{shown} runs a file outside the workspace"
            findings.append(approval("high", EXECUTES_OTHER_COMMAND, message))
    if spec.written_operands is not None:
        _, operands, _ = split_args(args, valued=spec.valued | watched)
        targets = [
            op
            for i, op in enumerate(operands)
            if not spec.written_operands or i in spec.written_operands
        ]
        for target in outside(targets, here):
            message = f"{label} writes {target}, outside the workspace"
            findings.append(deny("high", PATH_OUTSIDE_WORKSPACE, message))
    if spec.response_files:
        for arg in args:
            if arg.startswith("@") and len(arg) > 1:
                findings.append(unknown(label, f"arguments read from {arg} cannot be inspected"))
    return findings


def inline_code_option(name: str, args: Sequence[str]) -> str:
    """The option through which ``name`` would run program text from argv, or ""."""
    spec = INLINE_CODE_OPTIONS.get(name)
    if spec is None:
        return ""
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            return ""
        if token.startswith("--"):
            option, eq, _ = token.partition("=")
            if match_long(option, spec.code_long):
                return token
            if not eq and match_long(option, spec.valued_long):
                i += 1
            continue
        if len(token) < 2 or not (token[0] == "-" or (spec.plus_options and token[0] == "+")):
            return ""  # the script: the rest are its own arguments
        for j, letter in enumerate(token[1:], start=1):
            rest = token[j + 1 :]
            if letter in spec.code_letters:
                return token
            if letter in spec.stop_letters:
                return ""
            if letter in spec.module_letters:
                module = rest or (args[i] if i < len(args) else "")
                i += 0 if rest else 1
                if not _PERL_MODULE.fullmatch(module):
                    return token
                break
            if letter in spec.valued_letters:
                i += 0 if rest else 1
                break
    return ""


# ---------------------------------------------------------- per-command rules


def _check_wrapper(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """``env FOO=1 cmd``, ``nice -n 5 cmd``, ``timeout 10 cmd``: judge ``cmd``.

    ``env`` also gets the whole line read for a shell or interpreter anywhere
    (``env -S 'bash -c id'`` splits its own string), and for variables that make
    the command load other code (``LD_PRELOAD``, ``BASH_ENV``, ``PATH``).
    """
    findings = _check_env_line(args) if name == "env" else []
    flags, valued, positionals = WRAPPERS[name]
    here = ctx
    i = 0
    while i < len(args):
        token = args[i]
        option, eq, attached = token.partition("=")
        if token == "--":
            i += 1
            break
        if name == "env" and eq and not token.startswith("-"):
            i += 1  # NAME=VALUE assignment
            continue
        if token in flags or (name == "nice" and re.fullmatch(r"-\d+", token)):
            i += 1
            continue
        if token in valued or (token.startswith("--") and option in valued):
            value = attached if token.startswith("--") and eq else ""
            if not eq or not token.startswith("--"):
                value = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            i += 1
        elif token.startswith("-") and token[:2] in valued:
            option, value = token[:2], token[2:]  # short option with its value attached (-n5)
            i += 1
        elif token.startswith("-"):
            # env -S (split a string) and anything unexpected.
            return [*findings, unknown(name, f"option {token} is not understood by the policy")]
        else:
            break
        if option in ("-C", "--chdir"):
            if outside([value], here):
                message = f"{name} {option} {value} works outside the workspace"
                findings.append(deny("high", CWD_OUTSIDE_WORKSPACE, message))
            else:
                here = here.moved_to(value)
    i += positionals
    if i >= len(args):
        return [*findings, allow(f"{name} without a command")]
    return findings + check_argv(args[i:], here)


# Programs that run program text; launchers and builtins (xargs, eval) are not
# programs env could start with code of their own.
_ENV_INLINE_TARGETS = INTERPRETERS | (
    SHELL_INTERPRETERS
    - {"eval", "exec", "source", ".", "xargs", "parallel", "watch", "script", "expect"}
)


def _check_env_line(args: list[str]) -> list[Finding]:
    findings: list[Finding] = []
    for arg in args:
        try:
            words = shlex.split(arg) if " " in arg else [arg]
        except ValueError:
            words = arg.split()
        for word in words:
            if word.startswith("-"):
                word = word.partition("=")[2]  # --split-string=CMD, --chdir=DIR
            variable, eq, _ = word.partition("=")
            if eq and variable and not word.startswith("-"):
                if variable in CODE_LOADING_ENV or variable.startswith(CODE_LOADING_ENV_PREFIXES):
                    message = f"env sets {variable}, which makes the command run other code"
                    findings.append(approval("high", EXECUTES_OTHER_COMMAND, message))
                continue
            program = canonical_name(os.path.basename(word))
            if program in _ENV_INLINE_TARGETS:
                message = f"env runs {program}, a shell or interpreter"
                findings.append(approval("high", INLINE_CODE, message))
    return findings


def _check_delete(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """rm, rmdir, unlink, shred.

    Deleting outside the workspace, the workspace itself, or a target that only a
    shell would expand (``~``, ``*``, ``$VAR``) is denied: without a shell those
    expansions do not happen, so the user meant something we cannot see.
    Deleting inside the workspace is legitimate (``rm -rf build``) but not
    undoable for untracked files, so it needs approval.
    """
    flags, operands, _ = split_args(args)
    denials: list[Finding] = []
    if "--no-preserve-root" in flags:
        denials.append(deny("high", DESTRUCTIVE_COMMAND, f"{name} --no-preserve-root"))
    for operand in operands:
        if operand.startswith("~") or any(c in operand for c in "*?[$"):
            message = f"{name} target {operand!r} relies on shell expansion"
            denials.append(deny("high", DESTRUCTIVE_COMMAND, message))
            continue
        target = resolve_entry(operand, ctx.cwd)
        if target == ctx.root or not is_within(target, ctx.root):
            where = "is the workspace itself" if target == ctx.root else "is outside the workspace"
            message = f"{name} target {operand!r} ({target}) {where}"
            denials.append(deny("high", DESTRUCTIVE_COMMAND, message))
    if denials:
        return denials
    recursive = name == "rm" and has_short_flag(flags, "rR", "--recursive")
    message = f"{name} deletes files in the workspace"
    return [approval("high" if recursive else "medium", DESTRUCTIVE_COMMAND, message)]


_CHMOD_MODE = re.compile(r"^[0-7]{1,4}$|^[ugoa]*[-+=][rwxXstugo]*(,[ugoa]*[-+=][rwxXstugo]*)*$")


def _check_permissions(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """chmod, chown, chgrp: fine inside the workspace; recursive outside is destructive."""
    if name == "chmod":
        # A mode can look like an option (chmod -w file): drop modes, keep paths.
        args = [arg for arg in args if not _CHMOD_MODE.match(arg)]
    flags, operands, _ = split_args(args)
    if name != "chmod" and not any(flag.startswith("--reference") for flag in flags):
        operands = operands[1:]  # the owner or group
    recursive = has_short_flag(flags, "R", "--recursive")
    elsewhere = outside(operands, ctx)
    if not elsewhere:
        return [allow(f"{name} inside the workspace")]
    if recursive or any(resolve_path(op, ctx.cwd) == "/" for op in elsewhere):
        message = f"{name} {'-R ' if recursive else ''}on {', '.join(elsewhere)}"
        return [deny("high", DESTRUCTIVE_COMMAND, message)]
    message = f"{name} target outside the workspace: {', '.join(elsewhere)}"
    return [deny("high", PATH_OUTSIDE_WORKSPACE, message)]


def _check_create(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """mkdir, touch, tee: every operand is written, so every operand must be inside."""
    _, operands, _ = split_args(args, valued={"-m", "--mode", "-d", "-r", "-t"})
    elsewhere = outside(operands, ctx)
    if elsewhere:
        message = f"{name} target outside the workspace: {', '.join(elsewhere)}"
        return [deny("high", PATH_OUTSIDE_WORKSPACE, message)]
    return [allow(f"{name} inside the workspace")]


def _check_copy(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """cp, mv: sources may come from anywhere, the destination must be inside."""
    flags, operands, values = split_args(
        args, valued={"-t", "--target-directory", "-S", "--suffix"}
    )
    destination = values.get("-t") or values.get("--target-directory")
    if destination is None and "-T" not in flags and len(operands) < 2:
        return [allow(f"{name} without a destination")]  # fails on its own
    if destination is None:
        destination = operands[-1]
    if outside([destination], ctx):
        message = f"{name} destination outside the workspace: {destination}"
        return [deny("high", PATH_OUTSIDE_WORKSPACE, message)]
    return [allow(f"{name} inside the workspace")]


def _check_dd(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """dd of=/dev/sda overwrites a disk; other uses are rare enough to need approval."""
    harmless = {"/dev/null", "/dev/stdout", "/dev/stderr"}
    for arg in args:
        if arg.startswith("of="):
            target = resolve_path(arg[3:], ctx.cwd)
            if target.startswith("/dev/") and target not in harmless:
                return [deny("high", DESTRUCTIVE_COMMAND, f"dd writes to device {arg[3:]}")]
    return [unknown(name)]


_FIND_RUNNERS = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_FIND_WRITERS = frozenset({"-fprint", "-fprint0", "-fprintf", "-fls"})


def _check_find(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """find lists files, unless its expression deletes, runs commands or writes files."""
    i = 0
    while i < len(args) and (args[i] in ("-H", "-L", "-P", "-D") or args[i].startswith("-O")):
        i += 2 if args[i] == "-D" else 1
    starts: list[str] = []
    while i < len(args) and not args[i].startswith(("-", "(", "!", ",")):
        starts.append(args[i])
        i += 1
    expression = args[i:]
    findings: list[Finding] = []
    if "-delete" in expression:
        elsewhere = outside(starts or ["."], ctx)
        if elsewhere:
            message = f"find -delete below {', '.join(elsewhere)}, outside the workspace"
            findings.append(deny("high", DESTRUCTIVE_COMMAND, message))
        else:
            findings.append(approval("high", DESTRUCTIVE_COMMAND, "find -delete removes files"))
    for runner in sorted(_FIND_RUNNERS & set(expression)):
        message = f"find {runner} runs a command per file"
        findings.append(approval("high", EXECUTES_OTHER_COMMAND, message))
    for index, token in enumerate(expression[:-1]):
        if token in _FIND_WRITERS and outside([expression[index + 1]], ctx):
            message = f"find {token} {expression[index + 1]} writes outside the workspace"
            findings.append(deny("high", PATH_OUTSIDE_WORKSPACE, message))
    return findings or [allow("find lists files")]


def _check_rsync(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """rsync to ``host:path`` or ``rsync://`` is network; a local rsync --delete can wipe."""
    _, operands, _ = split_args(args, valued={"-e", "--rsh"})
    if any(":" in op.split("/", 1)[0] or op.startswith("rsync://") for op in operands):
        return [approval("medium", NETWORK_COMMAND, "rsync to or from a remote host")]
    return [unknown(name)]


def _check_systemctl(name: str, args: list[str], ctx: Context) -> list[Finding]:
    _, sub = first_operand(args)
    if sub in {"poweroff", "reboot", "halt", "kexec", "suspend", "hibernate", "rescue"}:
        return [deny("high", DESTRUCTIVE_COMMAND, f"systemctl {sub} stops the machine")]
    return [unknown(name)]


def _check_make(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """make runs the workspace's Makefile; SHELL=... on its line swaps the recipe runner."""
    findings = [allow("make runs the workspace's Makefile")]
    for arg in args:
        variable = re.split(r"[:+?!]?=", arg, maxsplit=1)[0].removeprefix("override ").strip()
        if not arg.startswith("-") and "=" in arg and variable in MAKE_SHELL_VARIABLES:
            message = f"make {variable}=... changes the program that runs every recipe"
            findings.append(approval("high", EXECUTES_OTHER_COMMAND, message))
    return findings


def _check_git(name: str, args: list[str], ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    here = ctx
    i = 0
    while i < len(args) and args[i].startswith("-"):
        token = args[i]
        if token == "-C" and i + 1 < len(args):
            directory = args[i + 1]
            if outside([directory], here):
                message = f"git -C {directory} works outside the workspace"
                return [deny("high", CWD_OUTSIDE_WORKSPACE, message)]
            here = here.moved_to(directory)
            i += 2
        elif token in GIT_HARMLESS_GLOBALS:
            i += 1
        else:
            return [unknown("git", f"global option {token} needs a review")]
    sub = args[i] if i < len(args) else ""
    rest = args[i + 1 :]
    spec = GIT_SUBCOMMAND_RULES.get(sub)
    if spec is not None:
        findings += check_options(f"git {sub}", spec, rest, here)
    return findings + _classify_git_subcommand(sub, rest)


def _classify_git_subcommand(sub: str, rest: list[str]) -> list[Finding]:
    if not sub:
        return [allow("git without a subcommand")]
    if sub == "push":
        return _check_git_push(rest)
    if sub == "reset" and "--hard" in rest:
        message = "git reset --hard discards uncommitted work"
        return [approval("high", DESTRUCTIVE_COMMAND, message)]
    if sub == "clean":
        flags, _, _ = split_args(rest)
        if has_short_flag(flags, "f", "--force"):
            message = "git clean -f deletes untracked files"
            return [approval("high", DESTRUCTIVE_COMMAND, message)]
        return [allow("git clean without -f only lists")]
    if sub == "reset" or sub in GIT_ALLOWED:
        return [allow(f"git {sub} is local")]
    if sub in GIT_NETWORK:
        return [approval("medium", NETWORK_COMMAND, f"git {sub} talks to a remote")]
    return [unknown("git", f"subcommand {sub!r} (or an alias) is not in any known class")]


def _check_git_push(rest: list[str]) -> list[Finding]:
    findings = [approval("medium", NETWORK_COMMAND, "git push talks to a remote")]
    flags, operands, _ = split_args(rest)
    forced = [flag for flag in flags if flag in GIT_FORCE_PUSH]
    forced += [op for op in operands[1:] if op.startswith(("+", ":"))]  # +ref, :ref
    if forced:
        message = f"git push {forced[0]} rewrites or deletes remote history"
        findings.append(deny("high", DESTRUCTIVE_COMMAND, message))
    return findings


def _check_package_manager(name: str, args: list[str], ctx: Context) -> list[Finding]:
    key = "pip" if name in ("pip", "pip3") else name
    local, network = PACKAGE_MANAGERS[key]
    # pip accepts its version flag as the only argument.
    sub = args[0] if args and args[0] in local else first_operand(args)[1]
    invocation = f"{name} {sub}".rstrip()
    if sub in network:
        return [approval("medium", NETWORK_COMMAND, f"{invocation} talks to a package registry")]
    if sub in local:
        return [allow(f"{invocation} is local")]
    return [unknown(name, f"subcommand {sub!r} is not in any known class")]


def _check_pytest(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """pytest runs the workspace's tests; ``-o cache_dir=/x`` moves its cache elsewhere."""
    findings = [allow(f"{name} runs the workspace's tests")]
    spec = ARGUMENT_RULES[name]
    overrides = {"-o", "--override-ini"}
    for use in scan_options(args, overrides, valued=spec.valued - overrides):
        key, _, path = use.value.partition("=")
        if key.strip() in PYTEST_INI_PATH_KEYS and path and outside([path], ctx):
            message = f"{name} {use.option} {use.value} writes outside the workspace"
            findings.append(deny("high", PATH_OUTSIDE_WORKSPACE, message))
    return findings


def _check_interpreter(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """node, perl, ruby, php: a script of the workspace is allowed, inline code is not."""
    option = inline_code_option(name, args)
    if option:
        return [
            approval("high", INLINE_CODE, f"{name} {option} runs code given on the command line")
        ]
    return [allow(f"{name} runs a script of the workspace")]


def _check_python(name: str, args: list[str], ctx: Context) -> list[Finding]:
    """python script.py is allowed; ``-c`` is inline code; ``-m tool`` is judged as the tool."""
    option = inline_code_option("python", args)
    if option:
        return [
            approval("high", INLINE_CODE, f"python {option} runs code given on the command line")
        ]
    module, rest = _python_module(args)
    if module in PYTHON_INLINE_MODULES:
        message = f"python -m {module} runs code given on the command line"
        return [approval("high", INLINE_CODE, message)]
    if module in PYTHON_TOOL_MODULES:
        tool = PYTHON_TOOL_MODULES[module]
        if tool in ARGUMENT_RULES and not _is_known(tool):
            return [
                allow(f"python -m {module}"),
                *check_options(tool, ARGUMENT_RULES[tool], rest, ctx),
            ]
        return classify(tool, rest, ctx)
    return [allow("python runs workspace code")]


def _python_module(args: list[str]) -> tuple[str, list[str]]:
    """``python [options] -m module args...`` -> (module, args); ("", []) without -m."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        token = args[i]
        position = token.find("m") if not token.startswith("--") else -1
        if position > 0 and not set(token[1:position]) & set("WX"):
            module = token[position + 1 :] or (args[i + 1] if i + 1 < len(args) else "")
            return module, args[i + (1 if token[position + 1 :] else 2) :]
        i += 2 if token in ("-W", "-X") else 1
    return "", []


COMMAND_RULES: Mapping[str, Rule] = MappingProxyType(
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
        "make": _check_make,
        "pytest": _check_pytest,
        "py.test": _check_pytest,
        "git": _check_git,
        "npm": _check_package_manager,
        "yarn": _check_package_manager,
        "pnpm": _check_package_manager,
        "pip": _check_package_manager,
        "pip3": _check_package_manager,
        "docker": _check_package_manager,
        "python": _check_python,
        "node": _check_interpreter,
        "nodejs": _check_interpreter,
        "perl": _check_interpreter,
        "ruby": _check_interpreter,
        "php": _check_interpreter,
    }
)
