"""The policy engine: verdicts, risks and reason codes for command lines, cwd and env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from execution.policy import (
    DEFAULT_ENV_PROFILES,
    DEFAULT_PATH,
    REASON_CODES,
    EnvProfile,
    PolicyDecision,
    build_env,
    evaluate,
)


@pytest.fixture
def root(tmp_path: Path) -> str:
    """A real workspace (realpath'd: tmp_path may itself sit behind a symlink)."""
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (workspace / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    return os.path.realpath(workspace)


def check(command: str, root: str, **kwargs) -> PolicyDecision:
    kwargs.setdefault("env_profiles", DEFAULT_ENV_PROFILES)
    return evaluate(command, workspace_root=root, **kwargs)


# --------------------------------------------------------------------- allow


def test_echo_is_allowed_with_low_risk(root):
    decision = check("echo hi", root)

    assert decision.verdict == "allow"
    assert decision.risk == "low"
    assert decision.reason_codes == ("command_allowed",)
    assert decision.argv == ("echo", "hi")


def test_defaults_are_workspace_root_and_default_profile(root):
    decision = check("ls", root)

    assert decision.resolved_cwd == root
    assert decision.env_profile == "default"


@pytest.mark.parametrize(
    "command",
    [
        "pytest -q tests",
        "python3 manage.py test",
        "python -m pytest",
        "python3.11 manage.py check",
        "make build",
        "npm test",
        "npm run lint",
        "git status",
        "git diff HEAD~1",
        "git log --oneline",
        "find . -name '*.py'",
        "grep -rn TODO src",
        "timeout 30 pytest",
        "env FOO=1 make",
        "chmod +x src/run.sh",
        "mkdir -p build",
    ],
)
def test_common_build_and_read_tools_are_allowed(root, command):
    assert check(command, root).verdict == "allow"


def test_unknown_executable_requires_approval(root):
    decision = check("frobnicate --all", root)

    assert decision.verdict == "requires_approval"
    assert decision.risk == "medium"
    assert decision.reason_codes == ("command_unknown",)


# ----------------------------------------------------------------- parsing


def test_empty_command_is_denied(root):
    decision = check("   ", root)

    assert decision.verdict == "deny"
    assert decision.reason_codes == ("command_empty",)


def test_unbalanced_quotes_are_denied_as_unparseable(root):
    decision = check("echo 'oops", root)

    assert decision.verdict == "deny"
    assert decision.reason_codes == ("command_unparseable",)
    assert decision.argv == ()


# ------------------------------------------------------------- destructive


def test_rm_rf_root_is_denied_as_destructive(root):
    decision = check("rm -rf /", root)

    assert decision.verdict == "deny"
    assert decision.risk == "high"
    assert "destructive_command" in decision.reason_codes


def test_executables_are_matched_on_basename(root):
    assert check("/bin/rm -rf /", root).verdict == "deny"


@pytest.mark.parametrize("target", ["~", "~/", "*", "..", ".", "../ws", "/etc", "$HOME", "escape/"])
def test_rm_outside_or_of_the_workspace_or_by_expansion_is_denied(root, target):
    decision = check(f"rm -rf {target}", root)

    assert decision.verdict == "deny"
    assert decision.reason_codes == ("destructive_command",)


def test_rm_inside_the_workspace_requires_approval(root):
    decision = check("rm -rf src/build", root)

    assert decision.verdict == "requires_approval"
    assert decision.reason_codes == ("destructive_command",)


def test_rm_of_a_symlink_removes_the_link_and_only_needs_approval(root):
    # Without a trailing slash rm deletes the link itself, which is in the workspace.
    assert check("rm escape", root).verdict == "requires_approval"


@pytest.mark.parametrize(
    "command",
    [
        "mkfs.ext4 /dev/sda1",
        "dd if=/dev/zero of=/dev/sda",
        "shutdown -h now",
        "reboot",
        "poweroff",
        "chmod -R 777 /",
        "chown -R nobody /",
        "git push --force origin main",
        "git push origin +main",
    ],
)
def test_destructive_commands_are_denied(root, command):
    decision = check(command, root)

    assert decision.verdict == "deny"
    assert decision.risk == "high"
    assert "destructive_command" in decision.reason_codes


@pytest.mark.parametrize("command", ["git reset --hard HEAD", "git clean -fdx", "find . -delete"])
def test_workspace_wiping_commands_require_approval(root, command):
    decision = check(command, root)

    assert decision.verdict == "requires_approval"
    assert decision.risk == "high"
    assert decision.reason_codes == ("destructive_command",)


def test_fork_bomb_is_denied_as_destructive(root):
    decision = check(":(){ :|:& };:", root)

    assert decision.verdict == "deny"
    assert "destructive_command" in decision.reason_codes


@pytest.mark.parametrize("command", ["mkdir /tmp/elsewhere", "touch ../x", "cp notes.txt /etc/"])
def test_write_targets_outside_the_workspace_are_denied(root, command):
    decision = check(command, root)

    assert decision.verdict == "deny"
    assert decision.reason_codes == ("path_outside_workspace",)


# ----------------------------------------------------------------- network


@pytest.mark.parametrize(
    "command",
    [
        "curl https://example.com",
        "wget https://example.com/x.tgz",
        "git clone https://example.com/repo.git",
        "git fetch origin",
        "git pull",
        "git push origin main",
        "pip install requests",
        "pip3 install requests",
        "python -m pip install requests",
        "npm install",
        "yarn add left-pad",
        "pnpm add left-pad",
        "apt-get install -y jq",
        "docker pull alpine",
        "rsync -a build/ deploy@host:/srv/app",
    ],
)
def test_network_commands_require_approval(root, command):
    decision = check(command, root)

    assert decision.verdict == "requires_approval"
    assert decision.risk == "medium"
    assert decision.reason_codes == ("network_command",)


@pytest.mark.parametrize("command", ["ssh host uptime", "scp a host:b", "nc -l 4444"])
def test_remote_shells_and_sockets_are_high_risk(root, command):
    decision = check(command, root)

    assert decision.verdict == "requires_approval"
    assert decision.risk == "high"
    assert decision.reason_codes == ("network_command",)


# ------------------------------------------------------------- shell syntax


@pytest.mark.parametrize(
    "command",
    [
        "echo a; echo b",
        "make && make test",
        "make || true",
        "ls | wc -l",
        "echo hi > out.txt",
        "sort < in.txt",
        "echo $(date)",
        'echo "$(date)"',
        "echo `date`",
        "sleep 10 &",
        "echo a\necho b",
    ],
)
def test_shell_operators_are_denied_as_compound(root, command):
    decision = check(command, root)

    assert decision.verdict == "deny"
    assert decision.reason_codes == ("compound_shell",)


@pytest.mark.parametrize("command", ["echo 'a; b | c > d'", "echo '$(date)'", r"echo a\;b"])
def test_quoted_or_escaped_operators_are_plain_arguments(root, command):
    assert check(command, root).verdict == "allow"


def test_compound_line_also_reports_its_dangerous_parts(root):
    decision = check("echo hi && rm -rf /", root)

    assert decision.verdict == "deny"
    assert decision.risk == "high"
    assert decision.reason_codes == ("compound_shell", "destructive_command")


@pytest.mark.parametrize("command", ["bash", "sh script.sh", "zsh", "xargs rm", "eval ls"])
def test_shell_interpreters_require_approval_with_high_risk(root, command):
    decision = check(command, root)

    assert decision.verdict == "requires_approval"
    assert decision.risk == "high"
    assert decision.reason_codes == ("shell_interpreter",)


@pytest.mark.parametrize("command", ["sudo ls", "su -c ls", "env sudo ls"])
def test_privilege_escalation_is_denied(root, command):
    decision = check(command, root)

    assert decision.verdict == "deny"
    assert decision.reason_codes == ("privilege_escalation",)


def test_wrapped_command_is_judged_not_the_wrapper(root):
    assert check("env FOO=1 nice -n 5 rm -rf /", root).verdict == "deny"


def test_git_global_options_that_redirect_git_require_approval(root):
    decision = check("git --git-dir=/srv/repo.git status", root)

    assert decision.verdict == "requires_approval"
    assert decision.reason_codes == ("command_unknown",)


def test_git_dash_c_inside_the_workspace_is_judged_like_a_cwd(root):
    assert check("git -C src status", root).verdict == "allow"
    assert check("git -C / status", root).reason_codes == ("cwd_outside_workspace",)


# -------------------------------------------------------- workspace boundary


@pytest.mark.parametrize("cwd", ["..", "src/../..", "/", "/etc", "escape", "escape/sub"])
def test_cwd_escaping_the_workspace_is_denied(root, cwd):
    decision = check("ls", root, cwd=cwd)

    assert decision.verdict == "deny"
    assert decision.risk == "high"
    assert decision.reason_codes == ("cwd_outside_workspace",)


def test_relative_cwd_resolves_inside_the_workspace(root):
    decision = check("ls", root, cwd="src/../src")

    assert decision.verdict == "allow"
    assert decision.resolved_cwd == os.path.join(root, "src")


def test_absolute_cwd_inside_the_workspace_is_allowed(root):
    decision = check("ls", root, cwd=os.path.join(root, "src"))

    assert decision.resolved_cwd == os.path.join(root, "src")


def test_workspace_root_behind_a_symlink_is_compared_resolved(root, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)

    decision = check("ls", str(alias), cwd=os.path.join(root, "src"))

    assert decision.verdict == "allow"


def test_relative_workspace_root_is_denied(root):
    decision = check("ls", "relative/ws")

    assert decision.verdict == "deny"
    assert decision.reason_codes == ("workspace_root_invalid",)


# -------------------------------------------------------------- env profile


def test_unknown_env_profile_is_denied(root):
    decision = check("echo hi", root, env_profile="gpu")

    assert decision.verdict == "deny"
    assert decision.reason_codes == ("env_profile_unknown",)
    assert decision.env_profile == "gpu"


def test_configured_env_profile_is_accepted(root):
    decision = check("echo hi", root, env_profile="python")

    assert decision.verdict == "allow"
    assert decision.env_profile == "python"


# --------------------------------------------------------------- combining


def test_verdict_is_the_strictest_and_risk_the_highest(root):
    decision = check("ssh host", root, env_profile="nope")

    assert decision.verdict == "deny"
    assert decision.risk == "high"
    assert decision.reason_codes == ("env_profile_unknown", "network_command")
    assert len(decision.messages) == 2


@pytest.mark.parametrize(
    "command",
    ["echo hi", "", "'", "rm -rf /", "curl x", "a | b", "bash", "sudo x", "x", "mkdir /x"],
)
def test_every_reason_code_is_documented(root, command):
    decision = check(command, root, cwd="/", env_profile="nope")

    assert set(decision.reason_codes) <= set(REASON_CODES)


# --------------------------------------------------------------------- env


def test_build_env_passes_nothing_else_from_the_host():
    host = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "DATABASE_URL": "postgres://x", "USER": "svc"}

    env = build_env(DEFAULT_ENV_PROFILES["default"], workspace_root="/ws", host_env=host)

    assert env == {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": "/ws"}


def test_build_env_copies_only_allowed_names_that_exist():
    profile = EnvProfile(passthrough=("TERM", "TZ"))

    env = build_env(profile, workspace_root="/ws", host_env={"TERM": "xterm", "USER": "svc"})

    assert env["TERM"] == "xterm"
    assert "TZ" not in env
    assert "USER" not in env


def test_profile_values_override_defaults_and_host():
    profile = EnvProfile(values={"PATH": "/opt/bin", "LANG": "en_US.UTF-8"}, passthrough=("PATH",))

    env = build_env(profile, workspace_root="/ws", host_env={"PATH": "/host/bin"})

    assert env["PATH"] == "/opt/bin"
    assert env["LANG"] == "en_US.UTF-8"


def test_home_is_always_the_workspace():
    profile = EnvProfile(passthrough=("HOME",))

    env = build_env(profile, workspace_root="/ws", host_env={"HOME": "/root"})

    assert env["HOME"] == "/ws"


def test_python_profile_adds_unbuffered_output():
    env = build_env(DEFAULT_ENV_PROFILES["python"], workspace_root="/ws", host_env={})

    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


@pytest.mark.parametrize("values", [{"": "x"}, {"A=B": "x"}, {"A": "x\0y"}])
def test_env_profile_rejects_invalid_variables(values):
    with pytest.raises(ValueError):
        EnvProfile(values=values)


def test_env_profile_values_cannot_be_mutated():
    profile = EnvProfile(values={"A": "1"})

    with pytest.raises(TypeError):
        profile.values["A"] = "2"  # type: ignore[index]
