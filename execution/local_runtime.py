"""The local executor's worker side: one django-q2 task per run.

Claims the run (queued → running, compare-and-swap), runs argv without a
shell through ``execution.runner`` with the profile's env only and the cwd the
policy resolved inside the workspace, stores output as events while the
command runs, beats a heartbeat (the reconciler fails runs whose worker died),
and ends the run from the process result.

The command runs in the bubblewrap sandbox (``execution.sandbox``) unless
``EXECUTION_SANDBOX=none``; when the sandbox is unavailable the run fails with
``sandbox_unavailable`` before anything starts. The sandbox has no network
unless the run was approved with the policy's ``network_command`` reason: an
approver saw that the command talks to the network and said yes.
"""

from __future__ import annotations

import os
import socket

from django.conf import settings
from django.utils import timezone

from connectors.configs import project_redactor
from execution.events import NewEvent, append_events, audit
from execution.models import Run, RunKind, Stream
from execution.policy import NETWORK_COMMAND, build_env
from execution.policy_gate import env_profiles, evaluate_run
from execution.runner import OutputChunk, ProcessResult, run_process
from execution.sandbox_config import usable_sandbox
from execution.states import RunStatus
from execution.transitions import transition


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execute_run(run_id: int) -> str:
    """Task body. Returns the final status (or ``skipped``)."""
    run = Run.objects.select_related("project").get(pk=run_id)
    if run.status != RunStatus.QUEUED:
        return "skipped"
    if run.kind != RunKind.COMMAND:
        # Prose never reaches a process, whatever put this task on the queue.
        transition(
            run,
            RunStatus.FAILED,
            reason="kind_mismatch",
            message=f"The local executor runs command lines; this run is a {run.kind}.",
        )
        return RunStatus.FAILED
    decision = evaluate_run(run)
    if decision.verdict == "deny":
        transition(
            run, RunStatus.BLOCKED, reason="policy_denied", message=", ".join(decision.reason_codes)
        )
        return RunStatus.BLOCKED
    choice = usable_sandbox()
    if choice.mode == "unavailable":
        transition(
            run,
            RunStatus.FAILED,
            reason="sandbox_unavailable",
            message=choice.message,
            provider_status_raw=RunStatus.FAILED,
        )
        return RunStatus.FAILED
    worker_id = worker_identity()
    if not transition(
        run,
        RunStatus.RUNNING,
        reason="started",
        provider_status_raw=RunStatus.RUNNING,
        worker_id=worker_id,
        heartbeat_at=timezone.now(),
    ):
        return "skipped"  # canceled, or another worker took it
    conf = settings.EXECUTION
    profile = env_profiles()[decision.env_profile]
    env = build_env(profile, workspace_root=run.project.workspace_root, host_env=os.environ)
    redactor = project_redactor(run.project_id)
    share_network = network_allowed(run)
    sandbox = choice.for_workspace(run.project.workspace_root, share_network=share_network)
    append_events(run.pk, [_sandbox_event(choice.mode, share_network)])

    def on_output(chunks: list[OutputChunk]) -> None:
        append_events(
            run.pk,
            [NewEvent(chunk.stream, "output", text=redactor.scrub(chunk.text)) for chunk in chunks],
        )

    def should_cancel() -> bool:
        return Run.objects.filter(pk=run.pk, status=RunStatus.CANCELING).exists()

    def on_tick() -> None:
        Run.objects.filter(pk=run.pk, worker_id=worker_id).update(heartbeat_at=timezone.now())

    result = run_process(
        list(decision.argv),
        cwd=decision.resolved_cwd,
        env=env,
        timeout_s=min(conf["DEFAULT_TIMEOUT_S"], conf["MAX_TIMEOUT_S"]),
        on_output=on_output,
        should_cancel=should_cancel,
        on_tick=on_tick,
        max_output_bytes=conf["MAX_OUTPUT_BYTES"],
        cancel_grace_s=conf["CANCEL_GRACE_S"],
        tick_interval_s=conf["HEARTBEAT_INTERVAL_S"],
        sandbox=sandbox,
    )
    return _finish(run, result)


def network_allowed(run: Run) -> bool:
    """The policy named the network and a person approved the run knowing it."""
    return NETWORK_COMMAND in (run.reason_codes or []) and run.approved_by_id is not None


def _sandbox_event(mode: str, share_network: bool) -> NewEvent:
    if mode == "none":
        text = "Running without a sandbox (EXECUTION_SANDBOX=none)."
    elif share_network:
        text = "Running in a bubblewrap sandbox; network allowed (approved network command)."
    else:
        text = "Running in a bubblewrap sandbox; no network."
    return NewEvent(
        Stream.SYSTEM, "sandbox", text=text, payload={"sandbox": mode, "network": share_network}
    )


def _finish(run: Run, result: ProcessResult) -> str:
    if result.truncated:
        audit(
            run.pk,
            "output_truncated",
            f"Output exceeded {settings.EXECUTION['MAX_OUTPUT_BYTES']} bytes; "
            f"{result.dropped_bytes} more bytes were not stored.",
            droppedBytes=result.dropped_bytes,
        )
    run.refresh_from_db(fields=["status"])
    fields = {"exit_code": result.exit_code}
    if result.canceled:
        target, reason, message = RunStatus.CANCELED, "canceled_by_user", "process group stopped"
    elif result.timed_out:
        target, reason = RunStatus.FAILED, "timeout"
        message = f"timed out after {result.duration_s:.0f}s"
    elif result.error:
        target, reason, message = RunStatus.FAILED, "spawn_error", result.error
    elif result.exit_code == 0:
        target, reason, message = RunStatus.SUCCEEDED, "exit_0", ""
    else:
        target, reason, message = RunStatus.FAILED, "nonzero_exit", f"exit code {result.exit_code}"
    if result.error:
        append_events(run.pk, [NewEvent(Stream.STDERR, "spawn_error", text=result.error)])
    transition(run, target, reason=reason, message=message, provider_status_raw=target, **fields)
    return target
