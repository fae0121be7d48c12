"""Regression corpus for the command policy: one row per command line, with the
verdict and reason codes it must get.

It lists every command a security review found classed ``allow`` when it should
not have been (inline interpreters, a renamed copy of a shell, options that write
or run elsewhere), the variants of each that the rules must also catch, and the
everyday commands that must stay allowed. A change to the tables that moves any
row shows up here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from execution.policy import DEFAULT_ENV_PROFILES, REASON_CODES, evaluate

ALLOWED = ("allow", ("command_allowed",))


def approval(*codes: str) -> tuple[str, tuple[str, ...]]:
    return "requires_approval", codes


def denied(*codes: str) -> tuple[str, tuple[str, ...]]:
    return "deny", codes


CORPUS: list[tuple[str, tuple[str, tuple[str, ...]]]] = [
    # Inline interpreters and shells: the program text is on the command line.
    ("python3 -c 'import os; print(os.environ)'", approval("inline_code")),
    ("python3 -c 'print(open(\"/proc/1/environ\").read())'", approval("inline_code")),
    ("python -c 'print(1)'", approval("inline_code")),
    ("python3.11 -c 'print(1)'", approval("inline_code")),
    ("/usr/bin/python3 -c 'print(1)'", approval("inline_code")),
    ("python3 -Ic 'print(1)'", approval("inline_code")),
    ("python3 -c'print(1)'", approval("inline_code")),
    ("python3 -W ignore -c 'print(1)'", approval("inline_code")),
    ("python3 -m timeit 'import os'", approval("inline_code")),
    ('node -e \'require("child_process").execSync("id")\'', approval("inline_code")),
    ("node --eval 'process.exit(0)'", approval("inline_code")),
    ("node --eval='process.exit(0)'", approval("inline_code")),
    ("node -p 'process.env'", approval("inline_code")),
    ("node -pe 1", approval("inline_code")),
    ("perl -e 'system(\"id\")'", approval("inline_code")),
    ("perl -E 'say 1'", approval("inline_code")),
    ("perl -lne 'print' file.txt", approval("inline_code")),
    ("perl '-Mstrict;system(\"id\")' script.pl", approval("inline_code")),
    ("ruby -e 'system(\"id\")'", approval("inline_code")),
    ("php -r 'system(\"id\");'", approval("inline_code")),
    ("bash -c id", approval("inline_code")),
    ("bash -lc id", approval("inline_code")),
    ("bash +O extglob -c id", approval("inline_code")),
    ("sh -c id", approval("inline_code")),
    ("sh -ec id", approval("inline_code")),
    ("zsh -c id", approval("inline_code")),
    ("dash -c id", approval("inline_code")),
    ("/bin/sh -c id", approval("inline_code")),
    # env followed by a shell or interpreter anywhere, whatever env's own options.
    ("env bash", approval("inline_code", "shell_interpreter")),
    ("env sh -c id", approval("inline_code")),
    ("env FOO=1 bash -c id", approval("inline_code")),
    ("env -i PATH_INFO=x python3 script.py", approval("inline_code")),
    ("env -u HOME -- python3 -c 'print(1)'", approval("inline_code")),
    ("env -S 'bash -c id'", approval("inline_code", "command_unknown")),
    ("env --split-string='sh -c id'", approval("inline_code", "command_unknown")),
    ("/usr/bin/env perl -e 1", approval("inline_code")),
    ("env LD_PRELOAD=./hook.so echo hi", approval("executes_other_command")),
    ("env PATH=. echo hi", approval("executes_other_command")),
    # An executable is what it resolves to, not its name.
    ("cp /bin/bash ./echo", ALLOWED),
    ("./echo -c id", approval("workspace_executable")),
    ("bin/tool --help", approval("workspace_executable", "command_unknown")),
    ("/usr/bin/echo hi", ALLOWED),
    ("/bin/rm -rf /", denied("destructive_command")),
    # Writes outside the workspace through an output option.
    ("sort -o /x in.txt", denied("path_outside_workspace")),
    ("sort -o/x in.txt", denied("path_outside_workspace")),
    ("sort -ro /x in.txt", denied("path_outside_workspace")),
    ("sort --output=/x in.txt", denied("path_outside_workspace")),
    ("sort --outp=/x in.txt", denied("path_outside_workspace")),
    ("sort -o ../x in.txt", denied("path_outside_workspace")),
    ("sort -o escape/x in.txt", denied("path_outside_workspace")),
    ("git diff --output=/tmp/stolen.diff", denied("path_outside_workspace")),
    ("git log --output /x", denied("path_outside_workspace")),
    ("gcc -o /x main.c", denied("path_outside_workspace")),
    ("gcc -o/x main.c", denied("path_outside_workspace")),
    ("cc main.c -o /usr/local/bin/x", denied("path_outside_workspace")),
    ("pytest --basetemp=/dir", denied("path_outside_workspace")),
    ("pytest --basetemp /dir", denied("path_outside_workspace")),
    ("pytest --basete=/dir", denied("path_outside_workspace")),
    ("python -m pytest --basetemp=/dir", denied("path_outside_workspace")),
    ("pytest --junitxml=/x.xml", denied("path_outside_workspace")),
    ("pytest -o cache_dir=/tmp/c", denied("path_outside_workspace")),
    ("pytest --override-ini=cache_dir=/tmp/c", denied("path_outside_workspace")),
    ("mypy --cache-dir=/tmp/c src", denied("path_outside_workspace")),
    ("prettier --write /srv/www/app.js", denied("path_outside_workspace")),
    ("eslint --fix ../other/src", denied("path_outside_workspace")),
    ("ruff check --fix /etc/x.py", denied("path_outside_workspace")),
    ("ruff check --output-file /x .", denied("path_outside_workspace")),
    ("tsc --outdir /srv/www", denied("path_outside_workspace")),
    ("uniq in.txt /etc/x", denied("path_outside_workspace")),
    ("black /etc/x.py", denied("path_outside_workspace")),
    ("find . -fprint /x", denied("path_outside_workspace")),
    ("python3 -m venv /opt/venv", denied("path_outside_workspace")),
    # Changing directory outside the workspace.
    ("make -C /", denied("cwd_outside_workspace")),
    ("make --directory=/etc", denied("cwd_outside_workspace")),
    ("make -sC /", denied("cwd_outside_workspace")),
    ("git -C / status", denied("cwd_outside_workspace")),
    ("tar -C / -xf a.tar", denied("command_unknown", "cwd_outside_workspace")),
    ("env -C / ls", denied("cwd_outside_workspace")),
    # Options that run another command or code.
    ("git rebase --exec id main", approval("executes_other_command")),
    ("git rebase --exec=id main", approval("executes_other_command")),
    ("git rebase -x id main", approval("executes_other_command")),
    ("git grep -Oid pattern", approval("executes_other_command")),
    ("make --eval='x: ; id'", approval("executes_other_command")),
    ("make --eval 'x: ; id'", approval("executes_other_command")),
    ("make -E 'x: ; id'", approval("executes_other_command")),
    ("make SHELL=/bin/bash", approval("executes_other_command")),
    ("make -f /usr/share/other/Makefile", approval("executes_other_command")),
    (r"find . -exec id {} \;", approval("executes_other_command")),
    (r"find . -execdir id {} \;", approval("executes_other_command")),
    (r"find . -ok id {} \;", approval("executes_other_command")),
    ("find . -delete", approval("destructive_command")),
    ("find / -delete", denied("destructive_command")),
    ("find /etc -name x -delete", denied("destructive_command")),
    ("sort --compress-program=sh in.txt", approval("executes_other_command")),
    ("rg --pre ./hook pattern", approval("executes_other_command")),
    ("cmake -E rm -rf /", approval("executes_other_command")),
    ("gcc -wrapper sh,-c,id main.c", approval("executes_other_command")),
    ("gcc @args.txt", approval("command_unknown")),
    ("pytest @args.txt", approval("command_unknown")),
    # Everyday commands that stay allowed.
    ("echo hi", ALLOWED),
    ("ls", ALLOWED),
    ("ls -la src", ALLOWED),
    ("git status", ALLOWED),
    ("git diff --output=diff.txt", ALLOWED),
    ("git -C src log --oneline", ALLOWED),
    ("git rebase main", ALLOWED),
    ("pytest -q", ALLOWED),
    ("pytest --basetemp=tmp/pytest", ALLOWED),
    ("pytest -o cache_dir=.cache/pytest -p no:randomly -k 'not slow'", ALLOWED),
    ("prettier --write src", ALLOWED),
    ("eslint --fix -c .eslintrc.json src", ALLOWED),
    ("ruff check --fix --select E,F .", ALLOWED),
    ("ruff format .", ALLOWED),
    ("python -m pytest -q", ALLOWED),
    ("python3 manage.py test", ALLOWED),
    ("python3 -m pip list", ALLOWED),
    ("make test", ALLOWED),
    ("make -C src", ALLOWED),
    ("make CFLAGS=-O2", ALLOWED),
    ("sort -o out.txt in.txt", ALLOWED),
    ("gcc -o build/app main.c", ALLOWED),
    ("node script.js", ALLOWED),
    ("perl script.pl", ALLOWED),
    ("npm test", ALLOWED),
    ("grep -o pattern file.txt", ALLOWED),
    ("find . -name '*.py'", ALLOWED),
    ("env FOO=1 make", ALLOWED),
    ("timeout 30 pytest -x", ALLOWED),
    ("which ls", ALLOWED),
]


@pytest.fixture
def root(tmp_path: Path) -> str:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (workspace / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    return os.path.realpath(workspace)


def check(command: str, root: str, **kwargs):
    return evaluate(command, workspace_root=root, env_profiles=DEFAULT_ENV_PROFILES, **kwargs)


@pytest.mark.parametrize(("command", "expected"), CORPUS, ids=[row[0] for row in CORPUS])
def test_corpus(root, command, expected):
    decision = check(command, root)

    assert (decision.verdict, decision.reason_codes) == expected
    assert set(decision.reason_codes) <= set(REASON_CODES)


def test_a_copied_shell_in_the_workspace_is_not_judged_by_its_name(root):
    shutil.copy(shutil.which("bash") or "/bin/bash", os.path.join(root, "echo"))

    decision = check("./echo -c id", root)

    assert decision.verdict == "requires_approval"
    assert decision.reason_codes == ("workspace_executable",)


def test_a_symlinked_shell_is_judged_as_the_shell_it_points_to(root):
    os.symlink(os.path.realpath(shutil.which("bash") or "/bin/bash"), os.path.join(root, "echo"))

    decision = check("./echo -c id", root)

    assert decision.verdict == "requires_approval"
    assert decision.reason_codes == ("workspace_executable", "inline_code")


def test_an_executable_outside_system_directories_is_not_judged_by_its_name(root, tmp_path):
    copy = tmp_path / "outside" / "echo"
    shutil.copy(shutil.which("bash") or "/bin/bash", copy)

    decision = check(f"{copy} -c id", root)

    assert decision.verdict == "requires_approval"
    assert decision.reason_codes == ("command_unknown",)


def test_a_profile_path_that_searches_the_workspace_makes_bare_names_workspace_files(root):
    from execution.policy import EnvProfile

    profiles = {"default": EnvProfile(values={"PATH": f"bin:{os.defpath}"})}

    decision = evaluate("echo hi", workspace_root=root, env_profiles=profiles)

    assert decision.verdict == "requires_approval"
    assert decision.reason_codes == ("workspace_executable",)


def test_relative_paths_after_dash_c_resolve_from_the_new_directory(root):
    assert check("make -C src -f ../Makefile", root).verdict == "allow"
    assert check("make -C src -f ../../Makefile", root).reason_codes == ("executes_other_command",)
