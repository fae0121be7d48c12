"""The data the command policy reads: command classes and the options that matter.

Pure data, no logic: ``execution.policy_rules`` applies these tables. Adding a
tool is adding a row here. Executables are looked up by name after the engine
has resolved what the name runs (see ``policy_rules.check_argv``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# ---------------------------------------------------------------- command classes

# Allow class (low risk): read, inspect, build and test tools whose every use is
# confined to printing or to the workspace (their options that write or run
# elsewhere are in ARGUMENT_RULES below).
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
        "rustc", "gcc", "g++", "cc", "clang", "clang++", "javac", "java",
        # interpreters running a script of the workspace (inline code: INLINE_CODE_OPTIONS)
        "node", "nodejs", "ruby", "perl", "php",
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

# Interpreters that run a program text; ``env`` followed by one of these (or a
# shell) is treated as inline code whatever env's own options are.
INTERPRETERS: frozenset[str] = frozenset(
    {"python", "node", "nodejs", "perl", "ruby", "php", "deno", "bun", "lua", "tclsh",
     "wish", "Rscript", "awk", "gawk", "mawk", "nawk", "osascript", "pwsh", "jshell"}
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
WRAPPERS: Mapping[str, tuple[frozenset[str], frozenset[str], int]] = MappingProxyType(
    {
        "env": (frozenset({"-i", "--ignore-environment", "-0", "--null"}),
                frozenset({"-u", "--unset", "-C", "--chdir"}), 0),
        "nice": (frozenset(), frozenset({"-n", "--adjustment"}), 0),
        "nohup": (frozenset(), frozenset(), 0),
        "timeout": (frozenset({"--preserve-status", "--foreground", "-v", "--verbose"}),
                    frozenset({"-s", "--signal", "-k", "--kill-after"}), 1),
        "time": (frozenset({"-p"}), frozenset(), 0),
    }
)  # fmt: skip

# Variables that make any program load or run other code (the dynamic loader,
# shells' startup files, interpreters' option variables, git's helpers) or find
# another executable (PATH): set through ``env`` they run something unseen.
CODE_LOADING_ENV: frozenset[str] = frozenset(
    {"PATH", "BASH_ENV", "ENV", "SHELL", "SHELLOPTS", "PROMPT_COMMAND", "PERL5OPT",
     "PERL5LIB", "PERL5DB", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH",
     "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONINSPECT", "PYTHONBREAKPOINT",
     "MAKEFLAGS", "MAKEFILES", "PAGER", "EDITOR", "VISUAL", "BROWSER"}
)  # fmt: skip
CODE_LOADING_ENV_PREFIXES: tuple[str, ...] = ("LD_", "GIT_", "DYLD_")

# Multi-call binaries pick their applet from the name they were invoked by.
MULTI_CALL_BINARIES: frozenset[str] = frozenset({"busybox", "toybox", "coreutils"})

# An executable outside the workspace is judged by name only when it resolves
# into these root-owned trees (what the sandbox mounts read-only); elsewhere
# (/tmp, a home directory) anyone may have dropped a renamed copy there.
SYSTEM_EXECUTABLE_DIRS: tuple[str, ...] = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt")


# ----------------------------------------------------------------- inline code


@dataclass(frozen=True)
class InlineSpec:
    """How one interpreter takes program text on its command line.

    ``code_letters``: short options whose value is code (also inside a bundle,
    ``perl -lne``); ``code_long``: long options whose value is code.
    ``valued_letters`` / ``valued_long``: other options with a value, skipped.
    ``module_letters``: options naming a module to load, which count as code when
    the value is not a plain module name (``perl -M'strict;system q(id)'``).
    ``stop_letters``: options after which the rest belongs to a module (``python -m``).
    ``plus_options``: the shell also takes ``+o name`` style options.
    Scanning stops at the first operand: the script, whose own arguments follow.
    """

    code_letters: str = ""
    code_long: frozenset[str] = frozenset()
    valued_letters: str = ""
    valued_long: frozenset[str] = frozenset()
    module_letters: str = ""
    stop_letters: str = ""
    plus_options: bool = False


_SHELL_SPEC = InlineSpec(
    code_letters="c", valued_letters="oO", valued_long=frozenset({"--rcfile", "--init-file"}),
    plus_options=True,
)  # fmt: skip

_NODE_SPEC = InlineSpec(
    code_letters="ep", code_long=frozenset({"--eval", "--print"}), valued_letters="r",
    valued_long=frozenset({"--require", "--import", "--loader", "--input-type",
                           "--experimental-loader", "--title", "--conditions"}),
)  # fmt: skip

INLINE_CODE_OPTIONS: Mapping[str, InlineSpec] = MappingProxyType(
    {
        "python": InlineSpec(code_letters="c", valued_letters="WX", stop_letters="m"),
        "node": _NODE_SPEC,
        "nodejs": _NODE_SPEC,
        "perl": InlineSpec(code_letters="eE", valued_letters="IixdD", module_letters="Mm"),
        "ruby": InlineSpec(code_letters="e", valued_letters="rIECxF"),
        "php": InlineSpec(
            code_letters="rRBE", valued_letters="cdfFzt",
            code_long=frozenset({"--run", "--process-begin", "--process-code",
                                 "--process-end"}),
        ),
        **{shell: _SHELL_SPEC for shell in ("sh", "bash", "dash", "zsh", "ksh", "mksh",
                                            "csh", "tcsh")},
        "fish": InlineSpec(code_letters="cC", code_long=frozenset({"--command",
                                                                   "--init-command"})),
    }
)  # fmt: skip

# ``python -m <module>``: modules judged as the tool of the same name, and
# modules whose operands are program text.
PYTHON_TOOL_MODULES: Mapping[str, str] = MappingProxyType(
    {"pip": "pip", "pip3": "pip", "pytest": "pytest", "mypy": "mypy", "black": "black",
     "isort": "isort", "flake8": "flake8", "pylint": "pylint", "coverage": "coverage",
     "ruff": "ruff", "venv": "python -m venv"}
)  # fmt: skip
PYTHON_INLINE_MODULES: frozenset[str] = frozenset({"timeit"})


# ------------------------------------------------------------ argument rules


@dataclass(frozen=True)
class OptionSpec:
    """The options of one tool that write, move or run somewhere else.

    ``writes``: the value is a path the tool writes (outside the workspace: deny).
    ``chdir``: the tool works in that directory (outside: deny); later relative
    paths resolve from there. ``executes``: the option runs another command or
    code (approval, whatever its value). ``runs_file``: the value is a file of
    code or configuration the tool runs (outside the workspace: approval).
    ``valued``: other options with a value, so the scanner skips the value.
    ``written_operands``: operand positions the tool writes (``None``: none,
    ``()``: all). ``clusters``: the tool bundles short options (``-ro``).
    ``fold_case``: long option names are case-insensitive (tsc).
    ``response_files``: ``@file`` reads more arguments from a file.
    """

    writes: frozenset[str] = frozenset()
    chdir: frozenset[str] = frozenset()
    executes: frozenset[str] = frozenset()
    runs_file: frozenset[str] = frozenset()
    valued: frozenset[str] = frozenset()
    written_operands: tuple[int, ...] | None = None
    clusters: bool = True
    fold_case: bool = False
    response_files: bool = False


def _spec(
    *,
    writes: str = "",
    chdir: str = "",
    executes: str = "",
    runs_file: str = "",
    valued: str = "",
    written_operands: tuple[int, ...] | None = None,
    clusters: bool = True,
    fold_case: bool = False,
    response_files: bool = False,
) -> OptionSpec:
    """OptionSpec from space-separated option lists (keeps the tables readable)."""
    return OptionSpec(
        writes=frozenset(writes.split()),
        chdir=frozenset(chdir.split()),
        executes=frozenset(executes.split()),
        runs_file=frozenset(runs_file.split()),
        valued=frozenset(valued.split()),
        written_operands=written_operands,
        clusters=clusters,
        fold_case=fold_case,
        response_files=response_files,
    )


_C_COMPILER = _spec(
    writes="-o -MF -dumpdir", executes="-wrapper -fplugin -B -specs", clusters=False,
    response_files=True,
)  # fmt: skip
# ``pytest -o key=value`` overrides an ini option; these keys name directories.
PYTEST_INI_PATH_KEYS: frozenset[str] = frozenset({"cache_dir"})
_PYTEST = _spec(
    writes="--basetemp --junitxml --junit-xml --rootdir --result-log --resultlog",
    runs_file="-c --config-file --confcutdir", valued="-k -m -p -o --override-ini",
    response_files=True,
)  # fmt: skip

ARGUMENT_RULES: Mapping[str, OptionSpec] = MappingProxyType(
    {
        "sort": _spec(writes="-o --output -T --temporary-directory",
                      executes="--compress-program",
                      valued="-k --key -t --field-separator -S --buffer-size --parallel "
                             "--files0-from --batch-size --random-source"),
        "uniq": _spec(valued="-f --skip-fields -s --skip-chars -w --check-chars",
                      written_operands=(1,)),
        "xxd": _spec(valued="-c -g -l -o -s -n -cols -len -seek", written_operands=(1,)),
        "tree": _spec(writes="-o", valued="-L -P -I --filelimit --timefmt -H -T --charset"),
        "rg": _spec(executes="--pre", valued="-e --regexp -f --file -g --glob -t --type "
                                             "-T --type-not -m --max-count -A -B -C"),
        **{cc: _C_COMPILER for cc in ("gcc", "g++", "cc", "clang", "clang++")},
        "rustc": _spec(writes="-o --out-dir", clusters=False, response_files=True),
        "javac": _spec(writes="-d -s -h", clusters=False, response_files=True),
        "java": _spec(clusters=False, response_files=True),
        "pytest": _PYTEST,
        "py.test": _PYTEST,
        # Formatters and fixers rewrite their operands in place.
        "ruff": _spec(writes="-o --output-file --cache-dir", runs_file="--config",
                      valued="--select --ignore --extend-select --target-version "
                             "--line-length --exclude --extend-exclude --stdin-filename",
                      written_operands=()),
        "mypy": _spec(writes="--cache-dir --junit-xml --html-report --xml-report --txt-report "
                             "--linecount-report --linecoverage-report --lineprecision-report "
                             "--cobertura-xml-report --any-exprs-report --xslt-html-report "
                             "--xslt-txt-report"),
        "coverage": _spec(writes="-o --data-file -d --directory"),
        "flake8": _spec(writes="--output-file"),
        "pylint": _spec(writes="--output"),
        "black": _spec(valued="-l --line-length -t --target-version --include --exclude "
                              "--extend-exclude --force-exclude -S --stdin-filename",
                       written_operands=()),
        "isort": _spec(valued="-l --line-length --settings-path --sp -p --project",
                       written_operands=()),
        "eslint": _spec(writes="-o --output-file --cache-location",
                        runs_file="-c --config --rulesdir",
                        valued="-f --format --ext --ignore-path --parser --plugin "
                               "--rule --max-warnings --resolve-plugins-relative-to",
                        written_operands=()),
        "prettier": _spec(writes="--cache-location", runs_file="--config --plugin",
                          valued="--ignore-path --parser --log-level --stdin-filepath "
                                 "--config-precedence --print-width --tab-width",
                          written_operands=()),
        "jest": _spec(writes="--outputFile --coverageDirectory --cacheDirectory"),
        "vitest": _spec(writes="--outputFile"),
        "tsc": _spec(writes="--outDir --outFile --out --declarationDir --tsBuildInfoFile "
                            "--generateTrace", fold_case=True),
        "cmake": _spec(writes="-B --prefix", executes="-E", runs_file="-P -C",
                       clusters=False),
        "make": _spec(chdir="-C --directory", executes="--eval -E",
                      runs_file="-f --file --makefile",
                      valued="-I --include-dir -o --old-file --assume-old -W --what-if "
                             "--new-file --assume-new"),
        "tar": _spec(chdir="-C --directory",
                     executes="--to-command --use-compress-program -I --checkpoint-action "
                              "--info-script --new-volume-script -F --rmt-command "
                              "--rsh-command",
                     valued="-f --file -b --blocking-factor -T --files-from -X "
                            "--exclude-from -g --listed-incremental"),
        "python -m venv": _spec(valued="--prompt", written_operands=()),
    }
)  # fmt: skip

# Variables a make command line may set that replace the shell recipes run in.
MAKE_SHELL_VARIABLES: frozenset[str] = frozenset({"SHELL", ".SHELLFLAGS", "MAKEFLAGS"})


# ------------------------------------------------------------------------ git

# Subcommands that stay local and keep history recoverable (reflog).
GIT_ALLOWED = frozenset(
    {"status", "diff", "log", "show", "rev-parse", "ls-files", "blame", "describe",
     "shortlog", "grep", "reflog", "cat-file", "ls-tree", "show-ref", "version", "help",
     "add", "commit", "init", "branch", "tag", "switch", "stash", "merge", "rebase",
     "cherry-pick", "mv"}
)  # fmt: skip
GIT_NETWORK = frozenset({"clone", "fetch", "pull", "push", "ls-remote", "submodule"})
# Global options that change nothing but output; -c/--git-dir/--work-tree can
# redirect git elsewhere or make it run configured programs (core.pager,
# core.sshCommand). -C is judged like a cwd.
GIT_HARMLESS_GLOBALS = frozenset({"--no-pager", "-P", "--no-optional-locks", "--version"})
GIT_FORCE_PUSH = frozenset(
    {"-f", "--force", "--force-with-lease", "--force-if-includes", "--mirror", "--delete", "-d"}
)
_GIT_DIFF_OUTPUT = _spec(writes="--output")
# Subcommand options (grep's -O takes an optional attached value: its presence is
# what matters).
GIT_SUBCOMMAND_RULES: Mapping[str, OptionSpec] = MappingProxyType(
    {
        **{sub: _GIT_DIFF_OUTPUT for sub in ("diff", "log", "show", "shortlog", "format-patch",
                                             "range-diff", "diff-tree", "diff-files",
                                             "diff-index", "whatchanged")},
        "rebase": _spec(executes="--exec -x", valued="--onto -s --strategy -X "
                                                     "--strategy-option"),
        "grep": _spec(executes="-O --open-files-in-pager"),
        "init": _spec(writes="--separate-git-dir",
                      valued="--template -b --initial-branch --object-format",
                      written_operands=()),
    }
)  # fmt: skip


# ------------------------------------------------------------ package managers

# (allowed local subcommands, network subcommands); a bare invocation is "".
PACKAGE_MANAGERS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = MappingProxyType(
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
