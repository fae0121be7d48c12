"""``make run``: everything on the embedded default in one terminal.

Migrates, creates the demo data, then starts and supervises: the provider
simulators, a django-q2 worker cluster, a fast reconciler loop and the web
server. Ctrl-C (or SIGTERM) stops them all; if one dies, the rest are stopped
too, so the demo never half-runs silently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from connectors.simulators import simulator_classes
from execution.demo import ensure_demo
from execution.sandbox_config import SandboxChoice, current_sandbox


def allow_simulator_hosts(host: str = "127.0.0.1") -> None:
    """Credentials only go to allowlisted hosts besides the providers' public
    APIs: allow the simulators, here and in every process started below."""
    hosts = [
        *settings.CONNECTORS_ALLOWED_HOSTS,
        *(f"{host}:{sim.default_port}" for sim in simulator_classes().values()),
    ]
    settings.CONNECTORS_ALLOWED_HOSTS = hosts
    os.environ["CONNECTORS_ALLOWED_HOSTS"] = ",".join(hosts)


def choose_demo_sandbox() -> SandboxChoice:
    """Local runs in bubblewrap when it is installed. Without it, and only when
    ``EXECUTION_SANDBOX`` is unset, the demo runs them unsandboxed (the banner
    says so) rather than failing every local run of a first try; here and in
    every process started below."""
    choice = current_sandbox()
    if choice.mode == "unavailable" and not os.environ.get("EXECUTION_SANDBOX"):
        settings.EXECUTION_SANDBOX = "none"
        os.environ["EXECUTION_SANDBOX"] = "none"
        choice = current_sandbox()
    return choice


def sandbox_line(choice: SandboxChoice, *, demo_chose: bool) -> str:
    if choice.mode == "bwrap":
        return "local runs in a bubblewrap sandbox (network only when approved)"
    if choice.mode == "none" and demo_chose:
        return (
            "NONE: bubblewrap was not found, so local runs are UNSANDBOXED "
            "(apt-get install bubblewrap, then restart)"
        )
    if choice.mode == "none":
        return "NONE (EXECUTION_SANDBOX=none): local runs are UNSANDBOXED"
    return f"unavailable, local runs will fail: {choice.message}"


class Command(BaseCommand):
    help = "Run web, worker, reconciler and provider simulators for a local demo."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args, host: str, port: int, **options):
        call_command("migrate", interactive=False, verbosity=0)
        allow_simulator_hosts()
        explicit = bool(os.environ.get("EXECUTION_SANDBOX"))
        sandbox = choose_demo_sandbox()
        info = ensure_demo()
        python, manage = sys.executable, os.path.abspath(sys.argv[0])
        children = {
            "simulators": [python, "-m", "connectors.simulators"],
            "worker": [python, manage, "qcluster"],
            "reconciler": [python, manage, "reconcile", "--loop", "--interval", "2"],
            "web": [python, manage, "runserver", f"{host}:{port}", "--noreload", "--insecure"],
        }
        processes: dict[str, subprocess.Popen] = {}
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            for name, argv in children.items():
                processes[name] = subprocess.Popen(argv)
            base = f"http://{host}:{port}"
            self.stdout.write(
                self.style.SUCCESS("\nCCDash Connectors is running (Ctrl-C stops everything):")
                + f"\n  workbench  {base}/   login: {info.username} / {info.password}"
                f"\n  admin      {base}/admin/"
                f"\n  API docs   {base}/api/docs/"
                f"\n  metrics    {base}/metrics"
                f"\n  providers  local, {', '.join(info.providers)} (simulated on 127.0.0.1)"
            )
            line = sandbox_line(sandbox, demo_chose=not explicit)
            style = self.style.SUCCESS if sandbox.mode == "bwrap" else self.style.WARNING
            self.stdout.write(f"  sandbox    {style(line)}\n")
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with {process.returncode}; stopping")
                        stopping = True
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
            deadline = time.monotonic() + 10
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    # qcluster can hang on SIGTERM (django-q2 #346): don't wait forever.
                    process.kill()
