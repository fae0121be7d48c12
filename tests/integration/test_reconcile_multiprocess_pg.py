"""Two reconciler processes against PostgreSQL (issue 5, acceptance 4).

Two ``manage.py reconcile --loop`` processes share 2,000 runs held running on
the three provider simulators: every run is reconciled, no run is polled by
both in one round, and the one stopped with SIGTERM leaves no claim behind
while the other keeps going.

A *round* is one poll interval (``RECONCILE_INTERVAL_S``, 2 s here): a run
that was just reconciled is due again that much later, so two status
requests for one run less than half an interval apart (in the simulators'
request logs) would be two workers polling it in the same round. GitHub runs
are polled by listing (a page answers for 100 runs), so their requests are
counted instead: the simulator enforces the hourly quota on the one token
both processes use, and together they stay under it (no rate-limit answer),
sharing its budget through the shared store (the database, or Redis). Devin
runs are polled by listing too (their sessions carry CCDash's tag), on their
slot's listing schedule, so only Cursor's are checked run by run.
"""

from __future__ import annotations

import re
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise, zip_longest
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.utils import timezone

from connectors import budget, services
from connectors.providers.cursor.simulator import CursorSimulator
from connectors.simulators import simulator_classes
from execution.models import Run
from tests.integration.processes import service_env, start, stop, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="needs PostgreSQL (DATABASE_URL): several processes claiming with "
        "FOR UPDATE SKIP LOCKED; SQLite serialises writers and has its own claim tests",
    ),
]

RUNS = 2000
INTERVAL_S = 2.0
# Status requests, by simulator route kind (log requests have other kinds).
STATUS_KINDS = {"github_actions": "get_run", "cursor": "get_run", "devin": "get_session"}
RAW_RUNNING = {"github_actions": "in_progress", "cursor": "RUNNING", "devin": "working"}
# Providers polled run by run (GitHub Actions lists its runs).
PER_RUN = ("cursor",)
# Seeded as CCDash creates them: Devin lists the sessions tagged "ccdash".
SEED_ATTRS = {"devin": {"tags": ["ccdash"]}}
# The GitHub token's hourly quota, enforced by the simulator: both processes
# share it.
GITHUB_QUOTA = 1000


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict]:
    servers = {pid: cls(port=0).start() for pid, cls in simulator_classes().items()}
    yield servers
    for server in servers.values():
        server.stop()


def cursor_agents(sim: CursorSimulator) -> dict[str, str]:
    """Run id → agent id (the seed answers run ids; polling needs both)."""
    agents, params = {}, {"limit": 100}
    while True:
        page = requests.get(
            f"{sim.url}/v1/agents", params=params, auth=(sim.default_token, ""), timeout=10
        ).json()
        agents.update({a["latestRunId"]: a["id"] for a in page["items"]})
        if not page.get("nextCursor"):
            return agents
        params["cursor"] = page["nextCursor"]


@pytest.fixture
def held_runs(transactional_db, project, simulators) -> list[int]:
    """2,000 runs held running on the simulators, configured and due now. Their
    logs count as fetched just now and are not fetched again (the reconcilers
    get a long log interval), so every request they make for a run is a poll."""
    per_provider = {}
    for index, (provider_id, sim) in enumerate(simulators.items()):
        sim.reset()
        count = RUNS // 3 + (index < RUNS % 3)
        per_provider[provider_id] = sim.seed(count, "running", **SEED_ATTRS.get(provider_id, {}))
        if provider_id == "github_actions":
            sim.configure(enforce_rate_limit=True, ratelimit_limit=GITHUB_QUOTA)
        services.update_config(
            project,
            provider_id,
            actor="test",
            enabled=True,
            settings={**sim.demo_settings, "baseUrl": sim.url},
        )
        services.write_credentials(project, provider_id, sim.demo_credentials(), user=None)
    agents = cursor_agents(simulators["cursor"])
    now = timezone.now()

    def row(provider_id: str, run_id: str) -> Run:
        state = {}
        if provider_id == "cursor":
            state["agentId"] = agents[run_id]
        return Run(
            project=project,
            command="echo held",
            policy_verdict="allow",
            risk_level="low",
            status="running",
            provider_id=provider_id,
            provider_run_id=run_id,
            provider_status_raw=RAW_RUNNING[provider_id],
            provider_state=state,
            logs_fetched_at=now,
            dispatch_key=f"{provider_id}-{run_id}"[:64],
            next_reconcile_at=now,
        )

    interleaved = zip_longest(*([(p, r) for r in ids] for p, ids in per_provider.items()))
    Run.objects.bulk_create(
        [row(*pair) for group in interleaved for pair in group if pair], batch_size=500
    )
    return list(Run.objects.filter(project=project).values_list("pk", flat=True))


def start_reconciler(tmp_path: Path, name: str):
    env = service_env(
        RECONCILE_INTERVAL_S=str(INTERVAL_S),
        RECONCILE_LOG_INTERVAL_S="3600",
        LOG_LEVEL="WARNING",
    )
    log = tmp_path / f"{name}.log"
    argv = ["manage.py", "reconcile", "--loop", "--interval", "0.2"]
    return start(argv, env, log), log


def worker_id(log: Path) -> str:
    found = wait_for(lambda: re.search(r"reconciler (\S+) started", log.read_text()), timeout=20)
    return found[1]


def claimed_in_sweeps(log: Path) -> int:
    return sum(int(n) for n in re.findall(r"^sweep claimed=(\d+)", log.read_text(), re.M))


def reconciled_since(since, run_ids) -> int:
    return Run.objects.filter(pk__in=run_ids, last_reconciled_at__gt=since).count()


def polls_by_run(simulators) -> dict[tuple[str, str], list[float]]:
    polls: dict[tuple[str, str], list[float]] = defaultdict(list)
    for provider_id, sim in simulators.items():
        if provider_id not in PER_RUN:
            continue
        for entry in sim.request_log(limit=None):
            if entry["method"] == "GET" and entry["kind"] == STATUS_KINDS[provider_id]:
                polls[(provider_id, entry["path"].rsplit("/", 1)[1])].append(entry["time"])
    return polls


def test_two_reconcilers_share_2000_runs_without_polling_one_twice_in_a_round(
    held_runs, simulators, tmp_path
):
    first, first_log = start_reconciler(tmp_path, "first")
    second, second_log = start_reconciler(tmp_path, "second")
    try:
        first_id, second_id = worker_id(first_log), worker_id(second_log)
        started = timezone.now() - timedelta(seconds=1)

        # Every run reconciled, by the two together; then a few more rounds.
        wait_for(lambda: reconciled_since(started, held_runs) == RUNS, timeout=30, interval=0.5)
        time.sleep(2 * INTERVAL_S)
        # A sweep prints its line once it is over, which on a loaded machine
        # can be a while after it stored its last run.
        wait_for(lambda: claimed_in_sweeps(first_log) > 0, timeout=30, interval=0.5)
        wait_for(lambda: claimed_in_sweeps(second_log) > 0, timeout=30, interval=0.5)

        # SIGTERM: the first finishes what it polls, releases the rest, exits 0.
        assert stop(first, sig=signal.SIGTERM, deadline_s=15) == 0
        assert f"reconciler {first_id} stopped" in first_log.read_text()
        assert not Run.objects.filter(lease_owner=first_id).exists()

        # The second keeps going and reconciles every run on its own (GitHub's
        # at the cadence its token's budget allows: a round takes longer).
        stopped_at = timezone.now()
        per_run = list(
            Run.objects.filter(pk__in=held_runs, provider_id__in=PER_RUN).values_list(
                "pk", flat=True
            )
        )
        wait_for(
            lambda: reconciled_since(stopped_at, per_run) == len(per_run), timeout=30, interval=0.5
        )
        wait_for(lambda: reconciled_since(stopped_at, held_runs) == RUNS, timeout=150, interval=1)
        assert second.poll() is None
    finally:
        stop(first, deadline_s=15)
        stop(second, deadline_s=15)

    assert second.returncode == 0, second_log.read_text()[-2000:]
    assert f"reconciler {second_id} stopped" in second_log.read_text()
    assert not Run.objects.filter(pk__in=held_runs).exclude(lease_owner="").exists()
    assert not Run.objects.filter(pk__in=held_runs, lease_expires_at__isnull=False).exists()

    github = simulators["github_actions"]
    spent = github.budget_stats()
    assert spent["rateLimited"] == 0 and spent["counted"] < GITHUB_QUOTA
    listings = [e for e in github.request_log(limit=None) if e["kind"] == "list_runs"]
    github_runs = Run.objects.filter(pk__in=held_runs, provider_id="github_actions").count()
    assert 0 < len(listings) < github_runs / 10  # a page answers for 100 runs
    # Both processes saw the token's budget through the shared store (the
    # database, or Redis when it is configured).
    shared = [b for b in budget.shared_store().load() if b.provider_id == "github_actions"]
    assert len(shared) == 1

    polls = polls_by_run(simulators)
    per_run_runs = len(per_run)
    assert len(polls) == per_run_runs  # every run was polled...
    gaps = {
        run: min(later - earlier for earlier, later in pairwise(times))
        for run, times in polls.items()
        if len(times) > 1
    }
    assert len(gaps) == per_run_runs  # ...in several rounds...
    too_close = {run: gap for run, gap in gaps.items() if gap < INTERVAL_S / 2}
    assert not too_close, f"polled twice in one round: {sorted(too_close.items())[:5]}"
