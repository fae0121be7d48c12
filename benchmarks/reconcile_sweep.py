"""Reconcile-sweep benchmark (issue 5, acceptance 3 and 6; issue 11, acceptance 4):
``make bench``.

    python -m benchmarks.reconcile_sweep [--runs 5000] [--status-runs 1000]
        [--latency-ms 20] [--repeat 3] [--only steady|status-first] [--no-record]

Every sweep runs with the shipped settings, log fetching included (see
``SHIPPED``); each figure says in the results table what it includes of log
fetching. Only the raw measurements (B) are status reads by definition.

What it sets up
---------------
* its own database: ``var/bench-reconcile.sqlite3`` (recreated each time) with
  ``ccdash.settings``, or ``DATABASE_URL`` when set (use a dedicated database:
  the benchmark's projects and runs are deleted at the end, but every due run
  in it is swept);
* the three provider simulators in a **separate process**
  (``python -m connectors.simulators --latency-ms 20`` on free ports), so the
  servers do not compete with the code under test for this process's GIL;
  the GitHub simulator's hourly quota is raised out of reach (this measures
  throughput; ``benchmarks.api_budget`` measures request budgets);
* for B, A, the Cursor pair and C (``--only steady``): ``--runs`` held-running
  runs seeded there (``POST /_sim/seed``), spread over the three providers, a
  project with enabled provider configs and credentials pointing at them, and
  one ``Run`` row per seeded run (``running``, due now, ``provider_state`` as
  the adapters need it: Cursor's ``agentId`` comes from the agent listing,
  since the seed answers run ids). These runs are in a steady state: their
  logs were read moments before each sweep (so with the shipped 10 s log
  interval none fall due unless a sweep outlasts it) and Devin's message
  cursor is caught up (the benchmark waits until seeded sessions stop adding
  messages), so a sweep makes one status request per run, the same HTTP
  work as B;
* for S (``--only status-first``): ``--status-runs`` GitHub Actions runs in a
  repository of their own (``STATUS_FIRST_REPO``, and a project of their
  own), in progress for ``STATUS_FIRST_RUNNING_S`` and then completed on the
  simulator, each ``running``/``in_progress`` in the database with none of its
  log read: a sweep must read each run's new status (the in-progress listing
  no longer holds them), then its final logs (job list, job log and its
  redirect to the storage host).

What it measures (each ``--repeat`` times, median reported)
------------------------------------------------------------
B  raw limit: GET every run's status URL with the adapters' headers and
   credentials, from ``RECONCILE_CONCURRENCY`` threads over one
   ``requests`` session per provider, JSON decoded; no database.
A  one reconcile sweep over all runs by a fresh ``Reconciler`` with the
   shipped settings (``RECONCILE_CONCURRENCY`` threads working at once,
   ``PROVIDER_CONCURRENCY`` per provider, batches of
   ``RECONCILE_BATCH_SIZE``), claiming up to ``BACKLOG_BATCHES`` batches back
   to back as ``manage.py reconcile --loop`` does — enough for every run.
   Timed from before ``sweep()`` until the ``Reconciler`` is closed: claims,
   polls, writes, metrics. Acceptance: A/B ≥ 0.70 (runs per second).
Cursor-B, Cursor-A  the same for the Cursor runs alone (only they are due),
   B from ``PROVIDER_CONCURRENCY`` threads: the concurrency a sweep has for
   one provider. Cursor has no batch status endpoint, so this is per-run
   polling through the reconciler. Acceptance: Cursor A/B ≥ 0.8.
S  status first, logs after: one ``manage.py reconcile`` (one-shot,
   ``reconcile_all_due``) over the S runs, nothing else due. Three times, all
   from the wall-clock start of the sweep and read from the database: the
   last run's new status stored (the latest ``ended_at``, stamped by the write
   that stores the terminal status), the last log line stored (the latest
   ``occurred_at`` of an output event) and the reconciler closed. S-B: the
   raw status GETs of the same runs from ``PROVIDER_CONCURRENCY`` threads
   (the reconciler's concurrency for one provider); S-Bw the same from
   ``RECONCILE_CONCURRENCY`` threads, for information. Before each repeat the
   runs go back to ``running`` with no line read, and the process's ETag
   cache and shared listings are cleared. Acceptance: S/S-B ≤ 1.25, the logs
   time is reported.
C  isolation: the time until the last run of the two healthy providers
   (GitHub Actions and Cursor) has been stored once, i.e. the latest first
   ``last_reconciled_at`` among their runs minus the wall-clock time the
   first sweep started (``last_reconciled_at`` is stamped by the write that
   stores the result). C1: only the healthy providers' runs are due (no
   outage). C2: every run is due and the Devin simulator hangs every request
   for longer than the adapters' read timeout (10 s). Both are driven like
   ``manage.py reconcile --loop``: sweeps with ``wait_for_stuck=False``, the
   next one at once after a full sweep, else after ``--interval`` (1 s),
   until every healthy run has been reconciled. C3: like C2 but one sweep in
   the configuration of ``scheduled_sweep`` (the django-q2 task,
   ``wait_for_stuck=True``). Acceptance: C2/C1 ≤ 1.1 (1.2 in issue 5); C3/C1
   is reported alongside.

The command exits 1 when a target is missed. Results, with the machine's load
average at the start and the end (it is shared), are printed and appended to
``benchmarks/README.md`` (``--no-record`` skips that). Everything is bounded in
time (a watchdog ends the benchmark after ``HARD_LIMIT_S``) and the simulator
process is stopped on any exit.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import platform
import queue
import re
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benchmarks" / "README.md"
DEFAULT_DB = ROOT / "var" / "bench-reconcile.sqlite3"
SIMULATOR_LOG = ROOT / "var" / "bench-simulators.log"

PROVIDERS = ("github_actions", "cursor", "devin")
HEALTHY = ("github_actions", "cursor")
HANGING = "devin"
# Longer than the adapters' read timeout (10 s): the client gives up first.
HANG_SECONDS = 12.0
# Acceptance: A/B (issue 5), Cursor's A/B and C2/C1 (issue 11, acceptance 4;
# C2/C1 was 1.2 in issue 5), S/S-B further down (issue 11, acceptance 4).
TARGET_RATIO = 0.70
TARGET_CURSOR_RATIO = 0.80
TARGET_OUTAGE_RATIO = 1.1
# Everything but a hung provider's last timeouts fits in this; the watchdog
# ends the benchmark (and its simulator process) after HARD_LIMIT_S.
BUDGET_S = 330.0
HARD_LIMIT_S = 480.0
WARMUP_RUNS = 600
# The adapters' timeouts (connect, read); B uses the same.
POLL_TIMEOUT = (3.05, 10.0)
RUNNING_RAW = {"github_actions": "in_progress", "cursor": "RUNNING", "devin": "working"}
# Seeded as CCDash creates them: Devin sessions carry CCDash's tag (its batch
# poll lists the sessions so tagged).
SEED_ATTRS = {"devin": {"tags": ["ccdash"]}}


# --- the simulator process ------------------------------------------------------------


class Simulators:
    """``python -m connectors.simulators`` in its own process group, with its
    ``/_sim/`` control endpoints. ``stop()`` is idempotent."""

    LINE = re.compile(r"^(\w+): (http://\S+) \(token (\S+)\)")

    def __init__(self, latency_ms: float, log_path: Path, *, startup_s: float = 20.0):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "connectors.simulators",
                "--github-actions-port=0",
                "--cursor-port=0",
                "--devin-port=0",
                f"--latency-ms={latency_ms:g}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self.urls: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.control = requests.Session()
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + startup_s
        while len(self.urls) < len(PROVIDERS):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"simulators did not start; see {log_path}") from None
            found = self.LINE.match(line)
            if found:
                self.urls[found[1]] = found[2]
                self.tokens[found[1]] = found[3]

    def _read(self, lines: queue.Queue[str]) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            lines.put(line.strip())

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.control.close()
        self._log.close()

    def post(self, provider_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.control.post(f"{self.urls[provider_id]}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def seed(self, provider_id: str, count: int) -> list[str]:
        body = {"count": count, "state": "running", **SEED_ATTRS.get(provider_id, {})}
        return self.post(provider_id, "/_sim/seed", body)["ids"]

    def configure(self, provider_id: str, **options: Any) -> None:
        self.post(provider_id, "/_sim/options", options)

    def hang(self, provider_id: str, seconds: float) -> None:
        self.post(provider_id, "/_sim/faults", {"hang_next": 10**9, "hang_seconds": seconds})

    def clear_faults(self, provider_id: str) -> None:
        url = f"{self.urls[provider_id]}/_sim/faults"
        self.control.delete(url, timeout=30).raise_for_status()

    def cursor_agents(self) -> dict[str, tuple[str, str]]:
        """Run id → (agent id, agent URL), read from ``GET /v1/agents`` pages:
        the seed answers run ids, the adapter's poll needs the agent id too."""
        agents: dict[str, tuple[str, str]] = {}
        url, auth = f"{self.urls['cursor']}/v1/agents", (self.tokens["cursor"], "")
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self.control.get(url, params=params, auth=auth, timeout=30)
            page.raise_for_status()
            body = page.json()
            for agent in body["items"]:
                agents[agent["latestRunId"]] = (agent["id"], agent["url"])
            if not body.get("nextCursor"):
                return agents
            params["cursor"] = body["nextCursor"]


# --- seeded runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    provider_id: str
    run_id: str
    provider_url: str
    provider_state: dict[str, Any]
    log_cursor: dict[str, Any] = field(default_factory=dict)


def seed_runs(sims: Simulators, total: int) -> tuple[list[Seeded], float]:
    """Seed ``total`` held-running runs, as evenly as possible over the
    providers, interleaved (a claimed batch mixes providers, as in life).
    Returns them and the time after which Devin adds no more messages."""
    from connectors.providers.devin.simulator import MESSAGE_LIMIT, MESSAGE_SECONDS

    share, extra = divmod(total, len(PROVIDERS))
    counts = {p: share + (i < extra) for i, p in enumerate(PROVIDERS)}
    ids = {p: sims.seed(p, counts[p]) if counts[p] else [] for p in PROVIDERS}
    settled_at = time.monotonic() + MESSAGE_LIMIT * MESSAGE_SECONDS + 1.0
    agents = sims.cursor_agents() if ids["cursor"] else {}
    per_provider: dict[str, list[Seeded]] = {p: [] for p in PROVIDERS}
    for run_id in ids["github_actions"]:
        url = f"{sims.urls['github_actions']}/ccdash/demo/actions/runs/{run_id}"
        per_provider["github_actions"].append(Seeded("github_actions", run_id, url, {}))
    for run_id in ids["cursor"]:
        agent_id, agent_url = agents[run_id]
        per_provider["cursor"].append(Seeded("cursor", run_id, agent_url, {"agentId": agent_id}))
    for run_id in ids["devin"]:
        url = f"{sims.urls['devin']}/sessions/{run_id.removeprefix('devin-')}"
        # Caught up with the whole transcript the session will have (initial
        # message + MESSAGE_LIMIT updates), so polls bring no new output.
        cursor = {"seen": MESSAGE_LIMIT + 1, "lastEventId": f"{run_id}-m{MESSAGE_LIMIT}"}
        per_provider["devin"].append(Seeded("devin", run_id, url, {}, cursor))
    interleaved = [
        run
        for group in zip_longest(*(per_provider[p] for p in PROVIDERS))
        for run in group
        if run is not None
    ]
    return interleaved, settled_at


# --- database ------------------------------------------------------------------------


def setup_django(db_path: Path) -> bool:
    """Configure and migrate the benchmark database; True when it is our own
    SQLite file (recreated), False for a ``DATABASE_URL`` given by the caller."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "ccdash.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # A throwaway database: throwaway keys (the public defaults refuse to start).
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("FERNET_KEYS", secrets.token_urlsafe(32))
    # The simulators listen on loopback: the platform operator's allowlist.
    os.environ.setdefault("CONNECTORS_ALLOWED_HOSTS", "127.0.0.1")
    own = not os.environ.get("DATABASE_URL")
    if own:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{db_path}"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return own


def create_project(
    sims: Simulators, providers: Iterable[str] = PROVIDERS, *, github_repo: str | None = None
):
    """A project with ``providers`` enabled against the simulators (GitHub
    Actions on ``github_repo`` when given, else the demo repository)."""
    from ccdash.models import Project
    from connectors import services

    workspace = ROOT / "var" / "bench-workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    project = Project.objects.create(
        name=f"benchmark {uuid.uuid4().hex[:8]}", workspace_root=str(workspace)
    )
    from connectors.simulators import simulator_classes

    for provider_id in providers:
        simulator = simulator_classes()[provider_id]
        settings = {**simulator.demo_settings, "baseUrl": sims.urls[provider_id]}
        if provider_id == "github_actions" and github_repo:
            settings["repo"] = github_repo
        services.update_config(
            project, provider_id, actor="benchmark", enabled=True, settings=settings
        )
        services.write_credentials(
            project,
            provider_id,
            {simulator.token_field: sims.tokens[provider_id]},
            user=None,
        )
    return project


def create_runs(project, seeded: list[Seeded], *, due_in_s: float = 0.0) -> None:
    from django.utils import timezone

    from execution.models import Run

    now = timezone.now()
    Run.objects.bulk_create(
        [
            Run(
                project=project,
                command="benchmark: a held run",
                policy_verdict="allow",
                risk_level="low",
                status="running",
                provider_id=s.provider_id,
                provider_run_id=s.run_id,
                provider_url=s.provider_url,
                provider_status_raw=RUNNING_RAW[s.provider_id],
                provider_state=s.provider_state,
                log_cursor=s.log_cursor,
                dispatch_key=uuid.uuid4().hex,
                sync_status="in_sync",
                started_at=now,
                next_reconcile_at=now + timedelta(seconds=due_in_s),
            )
            for s in seeded
        ],
        batch_size=500,
    )


def reset_runs(project, *, due: Iterable[str] = PROVIDERS) -> None:
    """Back to the steady state before a sweep: running, in sync, logs just
    fetched, due now (``due`` providers) or in an hour (the others), no
    lease; circuits closed; and no listing scheduled in this process (every
    run is due now, its slot's listing too: a batch-polled run due before its
    slot's scheduled listing would wait for it instead of being polled)."""
    from django.utils import timezone

    from connectors.models import ProviderCircuit
    from execution.models import Run
    from execution.reconcile.schedule import listings

    listings.clear()

    now = timezone.now()
    mine = Run.objects.filter(project=project)
    mine.update(
        logs_fetched_at=now,
        status="running",
        sync_status="in_sync",
        last_sync_error="",
        sync_failing_since=None,
        reconcile_attempts=0,
        last_reconciled_at=None,
        next_reconcile_at=now,
        lease_owner="",
        lease_expires_at=None,
    )
    mine.exclude(provider_id__in=list(due)).update(next_reconcile_at=now + timedelta(hours=1))
    urls = [c.settings.get("baseUrl", "") for c in project.provider_configs.all()]
    ProviderCircuit.objects.filter(base_url__in=urls).delete()


# --- B: plain HTTP polling ------------------------------------------------------------


@dataclass(frozen=True)
class PollTarget:
    session: requests.Session
    url: str
    headers: dict[str, str]
    auth: tuple[str, str] | None = None


def raw_targets(sims: Simulators, seeded: list[Seeded]) -> list[PollTarget]:
    """The status request each adapter's ``poll_status`` sends, per run."""
    from connectors.http import POOL_SIZE, USER_AGENT

    sessions = {}
    for provider_id in PROVIDERS:
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE))
        session.headers["User-Agent"] = USER_AGENT
        sessions[provider_id] = session
    github_headers = {
        "Authorization": f"Bearer {sims.tokens['github_actions']}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    devin_headers = {
        "Authorization": f"Bearer {sims.tokens['devin']}",
        "Accept": "application/json",
    }
    targets = []
    for s in seeded:
        base, session = sims.urls[s.provider_id], sessions[s.provider_id]
        if s.provider_id == "github_actions":
            url = f"{base}/repos/ccdash/demo/actions/runs/{s.run_id}"
            targets.append(PollTarget(session, url, github_headers))
        elif s.provider_id == "cursor":
            url = f"{base}/v1/agents/{s.provider_state['agentId']}/runs/{s.run_id}"
            targets.append(PollTarget(session, url, {}, (sims.tokens["cursor"], "")))
        else:
            targets.append(PollTarget(session, f"{base}/v1/sessions/{s.run_id}", devin_headers))
    return targets


def raw_poll(targets: list[PollTarget], concurrency: int) -> float:
    """Seconds to GET every target from ``concurrency`` threads; raises if any
    answer is not a 200 with a JSON status."""
    pending = deque(targets)
    failures: list[str] = []

    def worker() -> None:
        while True:
            try:
                target = pending.popleft()
            except IndexError:
                return
            response = target.session.get(
                target.url, headers=target.headers, auth=target.auth, timeout=POLL_TIMEOUT
            )
            body = response.json()
            if response.status_code != 200 or not body.get("status"):
                failures.append(f"{target.url}: HTTP {response.status_code}")

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="raw-poll") as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    elapsed = time.monotonic() - started
    if failures:
        raise RuntimeError(f"{len(failures)} raw polls failed, e.g. {failures[0]}")
    return elapsed


# --- A and C: sweeps --------------------------------------------------------------------


# Every sweep runs with the shipped settings, log fetching included (A, the
# Cursor pair and C: the runs' logs were read moments before the sweep, so
# with the shipped 10 s log interval none fall due unless a sweep outlasts
# it; S: every run's final logs are due). One override, for C only, decides
# when work falls due, not how a sweep does it: NO_REPOLLS, no run falls due
# a second time (poll interval 1 h instead of 5 s), so the time of its first
# write is still in ``last_reconciled_at`` when the measurement ends. The poll
# interval is also the base of the failure backoff, so the hanging provider's
# runs are not claimed twice either (they would be skipped at once anyway).
SHIPPED: dict[str, float] = {}
NO_REPOLLS = {"RECONCILE_INTERVAL_S": 3600.0}


@contextlib.contextmanager
def execution_settings(overrides: dict[str, float]):
    from django.conf import settings
    from django.test import override_settings

    with override_settings(EXECUTION={**settings.EXECUTION, **overrides}):
        yield


@dataclass
class SweepTiming:
    total_s: float  # from before the first sweep() until the Reconciler is closed
    returned_s: float  # until the last sweep() returned
    healthy_s: float  # until the last healthy-provider run was first stored (nan: none)
    healthy_reconciled: int
    reports: list[Any]

    def summary(self) -> str:
        return f"{len(self.reports)} sweep(s); " + " | ".join(
            r.summary_line() for r in self.reports
        )


def timed_sweeps(
    project,
    *,
    wait_for_stuck: bool,
    run_ids: list[int] | None = None,
    until_healthy: int = 0,
    overrides: dict[str, float] = SHIPPED,
    limit_s: float = 60.0,
) -> SweepTiming:
    """One sweep of every due run, as ``manage.py reconcile --loop`` makes it
    (or ``scheduled_sweep`` with ``wait_for_stuck=True``). With
    ``until_healthy``, keep going at the loop's cadence (the next sweep at
    once after a full one, else after ``--interval``) until that many
    healthy-provider runs have been reconciled, for at most ``limit_s``.

    A run's first ``last_reconciled_at`` is read after the sweep that stored
    it, before a later sweep can poll it again."""
    from django.utils import timezone

    from execution.management.commands.reconcile import DEFAULT_LOOP_INTERVAL_S
    from execution.models import Run
    from execution.reconciler import BACKLOG_BATCHES, Reconciler

    healthy_runs = Run.objects.filter(project=project, provider_id__in=HEALTHY)
    first_stored: dict[int, datetime] = {}
    reports = []
    started_at = timezone.now()
    started = time.monotonic()
    with execution_settings(overrides), Reconciler() as reconciler:
        while True:
            report = reconciler.sweep(
                run_ids=run_ids, max_batches=BACKLOG_BATCHES, wait_for_stuck=wait_for_stuck
            )
            reports.append(report)
            returned = time.monotonic() - started
            for pk, at in healthy_runs.filter(last_reconciled_at__gte=started_at).values_list(
                "pk", "last_reconciled_at"
            ):
                first_stored.setdefault(pk, at)
            if len(first_stored) >= until_healthy or returned > limit_s:
                break
            if report.claimed < reconciler.batch_size * BACKLOG_BATCHES:
                time.sleep(DEFAULT_LOOP_INTERVAL_S)
    total = time.monotonic() - started
    last = max(first_stored.values(), default=None)
    healthy_s = (last - started_at).total_seconds() if last else float("nan")
    return SweepTiming(total, returned, healthy_s, len(first_stored), reports)


# --- S: status first, logs after ---------------------------------------------------------

# The runs of S live in a repository of their own on the GitHub simulator (and
# a project of their own here), so that the steady-state runs of A-C are
# neither in S's listings nor due during S, and S's runs not in theirs.
STATUS_FIRST_REPO = "status-first"
TARGET_STATUS_RATIO = 1.25
# Seconds the seeded runs stay in progress before they complete (a few
# timestamped log lines per second of running: see the GitHub simulator).
STATUS_FIRST_RUNNING_S = 2.0


def seed_status_first(sims: Simulators, count: int) -> list[Seeded]:
    """``count`` GitHub Actions runs, in progress for ``STATUS_FIRST_RUNNING_S``,
    then completed (success) on the simulator: each has one job whose whole
    log is still to be read."""
    gh = "github_actions"
    body = {"count": count, "state": "running", "repo": STATUS_FIRST_REPO}
    ids = sims.post(gh, "/_sim/seed", body)["ids"]
    time.sleep(STATUS_FIRST_RUNNING_S)
    for run_id in ids:
        sims.post(gh, f"/_sim/runs/{run_id}/state", {"state": "success"})
    base = f"{sims.urls[gh]}/ccdash/{STATUS_FIRST_REPO}/actions/runs"
    return [Seeded(gh, run_id, f"{base}/{run_id}", {}) for run_id in ids]


def reset_status_first(project) -> None:
    """Back to the moment before the change is seen: every run ``running``
    (``in_progress`` when last read), in sync, no log line read yet (the
    output events of an earlier repeat deleted), due now. The process's
    conditional-request cache and shared listings are cleared (the runs
    changed, so their stored ETags would not match anyway), and so is the
    listing schedule."""
    from django.utils import timezone

    from connectors.http import etags
    from connectors.providers.github_actions.adapter import forget_listings
    from execution.models import Run, RunEvent
    from execution.reconcile.schedule import listings

    now = timezone.now()
    mine = Run.objects.filter(project=project)
    RunEvent.objects.filter(run__project=project).delete()
    mine.update(
        status="running",
        status_reason="",
        ended_at=None,
        exit_code=None,
        provider_status_raw=RUNNING_RAW["github_actions"],
        log_cursor={},
        logs_fetched_at=now,
        sync_status="in_sync",
        last_sync_error="",
        sync_failing_since=None,
        reconcile_attempts=0,
        last_reconciled_at=None,
        next_reconcile_at=now,
        lease_owner="",
        lease_expires_at=None,
    )
    etags.clear()
    forget_listings()
    listings.clear()


def park(project) -> None:
    """The project's runs not due for an hour (while another project's are measured)."""
    from django.utils import timezone

    from execution.models import Run

    later = timezone.now() + timedelta(hours=1)
    Run.objects.filter(project=project).update(
        next_reconcile_at=later, lease_owner="", lease_expires_at=None
    )


@dataclass
class StatusFirstTiming:
    status_s: float  # sweep start → the last run's new status stored (its ended_at)
    logs_s: float  # sweep start → the last output line stored
    total_s: float  # sweep start → the reconciler closed
    report: Any


def status_first_sweep(project, expected: int) -> StatusFirstTiming:
    """One ``manage.py reconcile`` (one-shot: every run due when it starts) with
    the shipped settings, log fetching on, over the runs ``reset_status_first``
    made due. Times come from the database: ``ended_at`` is stamped by the
    write that stores a run's terminal status, ``occurred_at`` of an output
    event by the write that stores the line."""
    from django.db.models import Max
    from django.utils import timezone

    from execution.models import Run, RunEvent
    from execution.reconciler import Reconciler, reconcile_all_due

    reset_status_first(project)
    started_at = timezone.now()
    started = time.monotonic()
    with Reconciler() as reconciler:
        report = reconcile_all_due(reconciler)
    total = time.monotonic() - started
    runs = Run.objects.filter(project=project)
    ended = runs.filter(status="succeeded", ended_at__isnull=False).count()
    output = RunEvent.objects.filter(run__project=project, event_type="output")
    with_logs = output.values("run").distinct().count()
    if ended != expected or with_logs != expected or report.error_count:
        raise RuntimeError(
            f"status first: {ended} of {expected} runs stored ended, {with_logs} with "
            f"their logs: {report.summary_line()}"
        )
    last_status = runs.aggregate(at=Max("ended_at"))["at"]
    last_line = output.aggregate(at=Max("occurred_at"))["at"]

    def since_start(at: datetime | None) -> float:
        return (at - started_at).total_seconds() if at else float("nan")

    return StatusFirstTiming(since_start(last_status), since_start(last_line), total, report)


# --- the run --------------------------------------------------------------------------


@dataclass
class Measurement:
    label: str
    runs: int
    logs: str  # what the figure includes of log fetching (the table's column)
    key: str = ""  # what ``verdicts`` finds it by
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def rate(self) -> float:
        return self.runs / self.median if self.samples else float("nan")


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def allows(self, seconds: float) -> bool:
        return time.monotonic() + seconds < self.deadline


def repeat(
    measurement: Measurement,
    times: int,
    budget: Budget,
    estimate_s: float,
    one: Callable[[], float],
) -> None:
    for index in range(times):
        if index and not budget.allows(estimate_s):
            measurement.note = f"time budget: {index} of {times} repeats"
            print(f"  (time budget reached: {index} of {times} repeats)", flush=True)
            return
        value = one()
        measurement.samples.append(value)
        print(f"  {measurement.label} #{index + 1}: {value:.3f}s", flush=True)


def machine() -> dict[str, str]:
    import django
    from django.db import connection

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    if connection.vendor == "sqlite":
        import sqlite3

        db = f"SQLite {sqlite3.sqlite_version} (file, WAL)"
    else:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            db = f"PostgreSQL {cursor.fetchone()[0]}"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": LOAD_AT_START or os_load(),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "django": django.get_version(),
        "db": db,
        "code": code_version(),
        "env": database_url_shown(),
    }


LOAD_AT_START = ""


def os_load() -> str:
    """The 1-, 5- and 15-minute load averages (the machine is shared)."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def database_url_shown() -> str:
    """``DATABASE_URL=…`` as the caller gave it, without credentials; "" for ours."""
    url = os.environ.get("DATABASE_URL", "")
    if not url or (url.startswith("sqlite:") and url.endswith(DEFAULT_DB.name)):
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"DATABASE_URL={parts.scheme}://{host}{port}{parts.path} "


def code_version() -> str:
    """The commit, and whether the reconciler's files differ from it."""
    paths = [
        "execution/reconcile/",
        "execution/reconciler.py",
        "execution/transitions.py",
        "execution/events.py",
        "connectors/",
    ]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True, text=True
        ).stdout.split("\n")
    except OSError:
        return "unknown"
    changed = sorted({line[3:] for line in dirty if line.strip()})
    return commit + (f" + uncommitted {', '.join(changed)}" if changed else "")


# What each figure includes of log fetching (the results table says it too).
RAW_LOGS = "none: status GETs only"
NONE_DUE = "on; none due"
LOGS_DUE = "on; every run's final logs"


def run_benchmark(args: argparse.Namespace) -> int:
    budget = Budget(BUDGET_S)
    own_db = setup_django(DEFAULT_DB)
    from django.conf import settings

    conf = settings.EXECUTION
    concurrency = int(conf["RECONCILE_CONCURRENCY"])
    per_provider = int(conf["PROVIDER_CONCURRENCY"])
    parts = set(args.only or ("steady", "status-first"))
    print(
        f"concurrency {concurrency} ({per_provider} per provider), batch "
        f"{conf['RECONCILE_BATCH_SIZE']}, latency {args.latency_ms:g} ms; "
        + ", ".join(
            [f"A-C over {args.runs} runs"] * ("steady" in parts)
            + [f"S over {args.status_runs} runs"] * ("status-first" in parts)
        ),
        flush=True,
    )

    sims = Simulators(args.latency_ms, SIMULATOR_LOG)
    atexit.register(sims.stop)
    _watchdog(HARD_LIMIT_S, sims.stop)
    # Throughput, not request budgets (benchmarks.api_budget measures those):
    # the GitHub simulator's hourly quota must not run out over the repeats.
    sims.configure("github_actions", ratelimit_limit=10**9)
    projects = []
    try:
        steady = status_first = None
        if "status-first" in parts:
            status_first = StatusFirstSetup.create(sims, args.status_runs)
            projects.append(status_first.project)
        if "steady" in parts:
            steady = SteadySetup.create(sims, args.runs)
            projects.append(steady.project)
        measurements: list[Measurement] = []
        if steady is not None:
            steady.warm_up(concurrency)
            measurements.append(steady.measure_raw(args, budget, concurrency))
        if status_first is not None:
            if steady is not None:
                park(steady.project)
            measurements += status_first.measure(args, budget, per_provider, concurrency)
        if steady is not None:
            measurements += steady.measure_sweeps(args, budget, per_provider)
        by_key = {m.key: m for m in measurements}
        info = machine()
        text = render(args, info, measurements, concurrency, per_provider, conf)
        print()
        print(text)
        if not args.no_record:
            record(text)
            print(f"(appended to {README.relative_to(ROOT)})")
        return 0 if all(ok for _, _, ok in verdicts(by_key)) else 1
    finally:
        if not own_db:
            for project in projects:
                project.delete()
        sims.stop()


@dataclass
class StatusFirstSetup:
    """S: GitHub runs that have just ended, each with its final logs to read."""

    project: Any
    seeded: list[Seeded]
    targets: list[PollTarget]

    @classmethod
    def create(cls, sims: Simulators, count: int) -> StatusFirstSetup:
        seeded = seed_status_first(sims, count)
        project = create_project(sims, ["github_actions"], github_repo=STATUS_FIRST_REPO)
        create_runs(project, seeded, due_in_s=3600)
        targets = raw_targets(sims, seeded)
        print(f"set up S: {count} ended GitHub Actions runs", flush=True)
        return cls(project, seeded, targets)

    def measure(
        self, args: argparse.Namespace, budget: Budget, per_provider: int, concurrency: int
    ) -> list[Measurement]:
        count = len(self.seeded)
        raw_poll(self.targets[:WARMUP_RUNS], per_provider)  # untimed: connections
        raw = Measurement(
            f"S-B raw status GETs, {per_provider} threads", count, RAW_LOGS, key="S-B"
        )
        raw_wide = Measurement(
            f"S-Bw raw status GETs, {concurrency} threads", count, RAW_LOGS, key="S-Bw"
        )
        status = Measurement("S status: sweep start → last status stored", count, LOGS_DUE, key="S")
        logs = Measurement(
            "S logs: sweep start → last log line stored", count, LOGS_DUE, key="S-logs"
        )
        closed = Measurement("S sweep: start → reconciler closed", count, LOGS_DUE, key="S-total")

        def one() -> float:
            raw_wide.samples.append(raw_poll(self.targets, concurrency))
            elapsed = raw_poll(self.targets, per_provider)
            timing = status_first_sweep(self.project, count)
            status.samples.append(timing.status_s)
            logs.samples.append(timing.logs_s)
            closed.samples.append(timing.total_s)
            print(
                f"    raw {elapsed:.2f}s ({raw_wide.samples[-1]:.2f}s at {concurrency}); "
                f"status {timing.status_s:.2f}s, logs {timing.logs_s:.2f}s, closed "
                f"{timing.total_s:.2f}s; {timing.report.summary_line()}",
                flush=True,
            )
            return elapsed

        repeat(raw, args.repeat, budget, 20, one)
        return [raw, raw_wide, status, logs, closed]


@dataclass
class SteadySetup:
    """A-C: runs held running on all three providers, their logs caught up."""

    project: Any
    ids: list[int]
    targets: list[PollTarget]
    cursor_targets: list[PollTarget]
    healthy_count: int
    settled_at: float
    sims: Simulators

    @classmethod
    def create(cls, sims: Simulators, count: int) -> SteadySetup:
        from execution.models import Run

        seeded, settled_at = seed_runs(sims, count)
        project = create_project(sims)
        create_runs(project, seeded)
        ids = list(Run.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
        targets = raw_targets(sims, seeded)
        pairs = zip(seeded, targets, strict=True)
        cursor_targets = [target for run, target in pairs if run.provider_id == "cursor"]
        healthy = sum(1 for s in seeded if s.provider_id in HEALTHY)
        print(f"set up A-C: {len(ids)} runs ({healthy} on {', '.join(HEALTHY)})", flush=True)
        return cls(project, ids, targets, cursor_targets, healthy, settled_at, sims)

    def warm_up(self, concurrency: int) -> None:
        """Untimed: connections, imports, query compilation."""
        raw_poll(self.targets[:WARMUP_RUNS], concurrency)
        reset_runs(self.project)
        timed_sweeps(self.project, wait_for_stuck=False, run_ids=self.ids[:WARMUP_RUNS])

    def measure_raw(self, args: argparse.Namespace, budget: Budget, concurrency: int):
        raw = Measurement("B raw status GETs", len(self.targets), RAW_LOGS, key="B")
        repeat(raw, args.repeat, budget, 15, lambda: raw_poll(self.targets, concurrency))
        return raw

    def measure_sweeps(
        self, args: argparse.Namespace, budget: Budget, per_provider: int
    ) -> list[Measurement]:
        project, count = self.project, len(self.ids)
        # Devin sessions add messages for their first MESSAGE_LIMIT seconds.
        time.sleep(max(0.0, self.settled_at - time.monotonic()))

        sweep = Measurement("A reconcile sweep", count, NONE_DUE, key="A")

        def one_sweep() -> float:
            reset_runs(project)
            timing = timed_sweeps(project, wait_for_stuck=False)
            _check_full_sweep(project, timing.reports[0], count)
            return timing.total_s

        repeat(sweep, args.repeat, budget, 20, one_sweep)

        cursors = len(self.cursor_targets)
        cursor_raw = Measurement(
            f"Cursor-B raw status GETs, {per_provider} threads", cursors, RAW_LOGS, key="Cur-B"
        )
        cursor_sweep = Measurement(
            "Cursor-A sweep of the Cursor runs", cursors, NONE_DUE, key="Cur-A"
        )

        def one_cursor() -> float:
            cursor_raw.samples.append(raw_poll(self.cursor_targets, per_provider))
            reset_runs(project, due=("cursor",))
            timing = timed_sweeps(project, wait_for_stuck=False)
            _check_full_sweep(project, timing.reports[0], cursors)
            return timing.total_s

        repeat(cursor_sweep, args.repeat, budget, 15, one_cursor)

        healthy_count = self.healthy_count
        calm = Measurement("C1 healthy runs, no outage", healthy_count, NONE_DUE, key="C1")
        hang_loop = Measurement(
            f"C2 healthy runs, {HANGING} hanging (reconcile --loop)",
            healthy_count,
            NONE_DUE,
            key="C2",
        )
        hang_sched = Measurement(
            f"C3 healthy runs, {HANGING} hanging (scheduled_sweep)",
            healthy_count,
            NONE_DUE,
            key="C3",
        )

        def one_calm() -> float:
            reset_runs(project, due=HEALTHY)
            timing = timed_sweeps(
                project, wait_for_stuck=False, until_healthy=healthy_count, overrides=NO_REPOLLS
            )
            _check_healthy(timing, healthy_count, calm)
            return timing.healthy_s

        def one_hang(measurement: Measurement, *, loop: bool) -> Callable[[], float]:
            def measure() -> float:
                reset_runs(project)
                self.sims.hang(HANGING, HANG_SECONDS)
                try:
                    timing = timed_sweeps(
                        project,
                        wait_for_stuck=not loop,
                        until_healthy=healthy_count if loop else 0,
                        overrides=NO_REPOLLS,
                    )
                finally:
                    self.sims.clear_faults(HANGING)
                print(
                    f"    last sweep returned after {timing.returned_s:.2f}s, reconciler "
                    f"closed after {timing.total_s:.2f}s; {timing.summary()}",
                    flush=True,
                )
                _check_healthy(timing, healthy_count, measurement)
                return timing.healthy_s

            return measure

        repeat(calm, args.repeat, budget, 15, one_calm)
        repeat(hang_loop, args.repeat, budget, 30, one_hang(hang_loop, loop=True))
        if not args.skip_scheduled:
            repeat(hang_sched, args.repeat, budget, 35, one_hang(hang_sched, loop=False))
        out = [sweep, cursor_raw, cursor_sweep, calm, hang_loop]
        return out + ([hang_sched] if hang_sched.samples else [])


def _check_full_sweep(project, report, expected: int) -> None:
    """Every run claimed by the sweep and stored by the time the reconciler
    closed, without an error. Counted in the database, not in the sweep's
    report: in loop mode a call past the stuck threshold (a batch listing of
    hundreds of runs takes longer than one status read) is stored when the
    reconciler closes, after the report was made."""
    from execution.models import Run

    stored = Run.objects.filter(project=project, last_reconciled_at__isnull=False).count()
    if report.claimed != expected or stored != expected or report.error_count:
        raise RuntimeError(
            f"the sweep did not reconcile every run ({stored} of {expected} stored): "
            f"{report.summary_line()}"
        )


def _check_healthy(timing: SweepTiming, expected: int, measurement: Measurement) -> None:
    """Not every healthy run reconciled: noted in the results (the time is
    then that of the last one stored)."""
    if timing.healthy_reconciled < expected:
        note = f"{timing.healthy_reconciled} of {expected} healthy runs reconciled"
        measurement.note = "; ".join(filter(None, [measurement.note, note]))
        print(f"    ({note})", flush=True)


def verdicts(by_key: dict[str, Measurement]) -> list[tuple[str, float, bool]]:
    """Each acceptance figure measured: (line, value, met)."""
    out = []

    def ratio(top: str, bottom: str) -> float | None:
        if top in by_key and bottom in by_key:
            return by_key[top].median / by_key[bottom].median
        return None

    def add(text: str, value: float | None, met: Callable[[float], bool]) -> None:
        if value is not None:
            out.append((text.format(value=value), value, met(value)))

    add(
        "S/S-B = **{value:.2f}** (target ≤ " + f"{TARGET_STATUS_RATIO:.2f}): every run's new "
        "status stored, against raw status GETs at the reconciler's concurrency for one "
        "provider",
        ratio("S", "S-B"),
        lambda v: v <= TARGET_STATUS_RATIO,
    )
    # A/B as issue 5 defines it: runs per second of A over runs per second of B.
    add(
        "A/B = **{value:.2f}** (target ≥ " + f"{TARGET_RATIO:.2f}): sweep throughput "
        "against raw polling, all three providers",
        ratio("B", "A"),
        lambda v: v >= TARGET_RATIO,
    )
    add(
        "Cursor A/B = **{value:.2f}** (target ≥ " + f"{TARGET_CURSOR_RATIO:.2f}): Cursor, "
        "polled per run",
        ratio("Cur-B", "Cur-A"),
        lambda v: v >= TARGET_CURSOR_RATIO,
    )
    add(
        "C2/C1 = **{value:.2f}** (target ≤ " + f"{TARGET_OUTAGE_RATIO:.2f}): isolation, "
        f"{HANGING} hanging",
        ratio("C2", "C1"),
        lambda v: v <= TARGET_OUTAGE_RATIO,
    )
    return out


def render(args, info, measurements, concurrency, per_provider, conf) -> str:
    by_key = {m.key: m for m in measurements}
    command = " ".join(["python -m benchmarks.reconcile_sweep", *sys.argv[1:]])
    lines = [
        f"### {info['date']}",
        "",
        f"Command: `{info['env']}{command}`"
        + ("" if sys.argv[1:] or info["env"] else " (`make bench`)"),
        "",
        f"Code: {info['code']}.",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), load average {info['load']} at the "
        f"start and {os_load()} at the end, Python {info['python']}, Django "
        f"{info['django']}, {info['db']}; simulators in a separate process, "
        f"{args.latency_ms:g} ms latency per request. Reconciler: {concurrency} calls at "
        f"once, {per_provider} per provider, batches of {conf['RECONCILE_BATCH_SIZE']}, "
        f"log interval {conf['RECONCILE_LOG_INTERVAL_S']:g} s (shipped settings). "
        f"Median of {args.repeat}.",
        "",
        "| measurement | runs | log fetching | median s | runs/s | samples (s) |",
        "|---|---:|---|---:|---:|---|",
    ]
    for m in measurements:
        samples = ", ".join(f"{s:.2f}" for s in m.samples) + (f" ({m.note})" if m.note else "")
        lines.append(
            f"| {m.label} | {m.runs} | {m.logs} | {m.median:.2f} | {m.rate:.0f} | {samples} |"
        )
    lines.append("")
    for text, _, ok in verdicts(by_key):
        lines.append(f"- {text}: " + ("met" if ok else "**missed**"))
    if "C3" in by_key and "C1" in by_key:
        lines.append(
            f"- C3/C1 = {by_key['C3'].median / by_key['C1'].median:.2f} (the django-q2 "
            "schedule's configuration, for information)"
        )
    if "S-Bw" in by_key and "S" in by_key:
        lines.append(
            f"- S/S-Bw = {by_key['S'].median / by_key['S-Bw'].median:.2f} (raw GETs at "
            f"{concurrency} threads, more than the reconciler gives one provider; for "
            "information)"
        )
    return "\n".join(lines) + "\n"


def record(text: str) -> None:
    """Append ``text`` to the reconcile sweep's ``## Results`` section (the
    other benchmarks' sections follow it in the file)."""
    existing = README.read_text() if README.exists() else "# Benchmarks\n"
    heading = "\n## Results\n"
    if heading not in existing:
        existing = existing.rstrip("\n") + "\n" + heading
    following = existing.find("\n## ", existing.index(heading) + len(heading))
    if following == -1:
        README.write_text(existing.rstrip("\n") + "\n\n" + text)
        return
    head, tail = existing[:following], existing[following:]
    README.write_text(head.rstrip("\n") + "\n\n" + text + tail)


def _watchdog(limit_s: float, cleanup: Callable[[], None]) -> None:
    def fire() -> None:
        print(f"benchmark exceeded {limit_s:.0f}s: stopping", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            cleanup()
        os._exit(3)

    timer = threading.Timer(limit_s, fire)
    timer.daemon = True
    timer.start()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reconcile_sweep")
    parser.add_argument("--runs", type=int, default=5000, help="runs of A-C (default 5000)")
    parser.add_argument(
        "--status-runs", type=int, default=1000, help="ended GitHub runs of S (default 1000)"
    )
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only",
        action="append",
        choices=("steady", "status-first"),
        help="measure only B, A, the Cursor pair and C (steady) or only S (status-first); "
        "default: both",
    )
    parser.add_argument("--skip-scheduled", action="store_true", help="skip measurement C3")
    parser.add_argument("--no-record", action="store_true", help="do not append to README.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global LOAD_AT_START
    LOAD_AT_START = os_load()
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the simulators.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(ROOT))
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
