"""Workbench serving benchmark: page render, live-log latency and throughput
of the documented production server.

    python -m benchmarks.web_serving [--seconds 10] [--no-record]

Set-up: its own SQLite file ``var/bench-web.sqlite3`` (or ``DATABASE_URL``),
seeded like ``benchmarks.api_list``: project **L** with 100,000 runs and
project **P** with 10,000 runs, and a member of both.

What it measures
----------------
1. **Runs page first render** (project P, 10,000 runs): ``GET /?projectId=P``
   through Django's full stack in this process (session, template, the
   list's count and first page), 100 times after 5 warm-up requests; p50/p95.
   Target ≤ 300 ms.
2. **Production server**: gunicorn started as the README says
   (``gunicorn ccdash.wsgi`` with ``gunicorn.conf.py``: gthread workers,
   WhiteNoise) on a free port, in its own process group.

   a. **Throughput**: 8 clients (``wrk -c8`` when Debian's ``wrk`` is
      installed, else 8 Python threads), each with its own keep-alive
      connection and the same session cookie, repeat
      ``GET /api/execution/runs?projectId=L&limit=50`` (100,000 runs) for
      ``--seconds``; requests/s and p50/p95 latency. Target ≥ 200 requests/s.
   b. **Live log latency**: a run page's event stream is open
      (``GET runs/{id}/stream``); this process stores 30 events, one every
      0.2 s, and records when each arrives on the stream. Latency: from the
      event's commit to its arrival. Target ≤ 1 s.

Results are printed and appended to ``benchmarks/README.md``. Exits 1 when a
target is missed. The server is stopped on every exit.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RENDER_MS = 300.0
TARGET_RPS = 200.0
TARGET_LOG_S = 1.0


def setup_django() -> None:
    if not os.environ.get("DATABASE_URL"):
        path = ROOT / "var" / "bench-web.sqlite3"
        path.parent.mkdir(exist_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccdash.settings")
    os.environ.setdefault("SECRET_KEY", "bench-web-secret-key-" + "x" * 40)
    os.environ.setdefault("FERNET_KEYS", "bench-web-fernet-key-" + "y" * 20)
    os.environ.pop("DEBUG", None)  # production-like
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed_project(name: str, runs: int, user) -> int:
    from django.db import transaction

    from ccdash.models import Membership, Project
    from execution.models import Run

    project = Project.objects.filter(name=name).first()
    if project and project.runs.count() == runs:
        return project.pk
    if project:
        project.delete()
    project = Project.objects.create(name=name, workspace_root="/tmp")
    Membership.objects.create(project=project, user=user, role="admin")
    providers = ["local", "github_actions", "cursor", "devin"]
    statuses = ["succeeded", "failed", "canceled", "running", "queued", "awaiting_approval"]
    batch = []
    with transaction.atomic():
        for i in range(runs):
            batch.append(
                Run(
                    project=project,
                    created_by=user,
                    feature_id=f"feature-{i % 200}",
                    command=f"pytest tests/unit -k case_{i}",
                    provider_id=providers[i % 4],
                    status=statuses[i % len(statuses)],
                    sync_status="in_sync",
                    policy_verdict="allow",
                    risk_level="low",
                    reason_codes=["known_safe"],
                    dispatch_key=f"{name}-{i}",
                )
            )
            if len(batch) == 5000:
                Run.objects.bulk_create(batch)
                batch = []
        Run.objects.bulk_create(batch)
    return project.pk


def session_cookie(user) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def measure_render(user, project_id: int) -> dict:
    from django.test import Client

    client = Client()
    client.force_login(user)
    url = f"/?projectId={project_id}"
    for _ in range(5):
        assert client.get(url).status_code == 200
    timings = []
    for _ in range(100):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
    assert b"10000" in response.content or b"10,000" in response.content
    timings.sort()
    return {"p50": statistics.median(timings), "p95": timings[94]}


def start_gunicorn() -> tuple[subprocess.Popen, int]:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env = {**os.environ, "PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "ccdash.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    atexit.register(stop)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/login/")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not start")


# wrk's summary as one JSON line (latencies in microseconds → ms).
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "errors": %d, "p50": %f, "p95": %f, "seconds": %f}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, summary.duration / 1e6))
end
"""


def measure_throughput(port: int, cookie: str, project_id: int, seconds: float) -> dict:
    """8 keep-alive clients for ``seconds``. With ``wrk`` on PATH (Debian's
    ``wrk``) the load comes from it: on a 2-core machine, eight Python client
    threads take a large share of the CPU the server is measured on."""
    path = f"/api/execution/runs?projectId={project_id}&limit=50"
    headers = {"Cookie": f"sessionid={cookie}", "Accept": "application/json"}
    if shutil.which("wrk"):
        return _wrk_throughput(port, path, headers, seconds)
    stop_at = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(8)]
    errors = [0] * 8

    def client(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    errors[n] += 1
            except (OSError, http.client.HTTPException):
                errors[n] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            latencies[n].append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    flat = sorted(x for per in latencies for x in per)
    return {
        "requests": len(flat),
        "rps": len(flat) / elapsed,
        "p50": statistics.median(flat),
        "p95": flat[int(len(flat) * 0.95) - 1],
        "errors": sum(errors),
        "client": "8 Python threads",
    }


def _wrk_throughput(port: int, path: str, headers: dict[str, str], seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_REPORT)
        script.flush()
        argv = ["wrk", "-t2", "-c8", f"-d{max(1, round(seconds))}s", "-s", script.name]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        output = subprocess.run(
            [*argv, f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    report = json.loads(output.strip().splitlines()[-1])
    return {
        "requests": report["requests"],
        "rps": report["requests"] / report["seconds"],
        "p50": report["p50"],
        "p95": report["p95"],
        "errors": report["errors"],
        "client": "wrk",
    }


def measure_log_latency(port: int, cookie: str, project_id: int) -> dict:
    from execution.events import NewEvent, append_events
    from execution.models import Run

    run = Run.objects.create(
        project_id=project_id,
        command="bench live log",
        status="running",
        policy_verdict="allow",
        risk_level="low",
        dispatch_key=f"bench-live-{time.time()}",
    )
    stored: dict[int, float] = {}
    arrived: dict[int, float] = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "GET",
        f"/api/execution/runs/{run.pk}/stream",
        headers={"Cookie": f"sessionid={cookie}", "Accept": "text/event-stream"},
    )
    response = connection.getresponse()
    assert response.status == 200, response.status

    def reader() -> None:
        buffer = b""
        while len(arrived) < 30:
            chunk = response.read1(65536)
            if not chunk:
                return
            now = time.monotonic()
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                if b"event: log" in block:
                    data = block.split(b"data: ", 1)[1]
                    arrived[json.loads(data)["sequenceNo"]] = now

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(1.0)  # the stream is open and idle
    for n in range(30):
        rows = append_events(run.pk, [NewEvent("stdout", "output", text=f"bench line {n}\n")])
        stored[rows[0].sequence_no] = time.monotonic()
        time.sleep(0.2)
    thread.join(timeout=5)
    connection.close()
    Run.objects.filter(pk=run.pk).delete()
    delays = sorted(arrived[seq] - stored[seq] for seq in stored if seq in arrived)
    return {
        "received": len(delays),
        "p50": statistics.median(delays),
        "p95": delays[int(len(delays) * 0.95) - 1],
        "max": delays[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    setup_django()
    from django.contrib.auth import get_user_model
    from django.db import connection

    user, _ = get_user_model().objects.get_or_create(username="bench-web")
    large = seed_project("bench-web-100k", 100_000, user)
    page = seed_project("bench-web-10k", 10_000, user)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    render = measure_render(user, page)
    print(f"runs page, 10,000 runs: p50 {render['p50']:.1f} ms, p95 {render['p95']:.1f} ms")
    cookie = session_cookie(user)
    connection.close()
    _, port = start_gunicorn()
    load = measure_throughput(port, cookie, large, args.seconds)
    print(
        f"8 clients, GET runs?limit=50 at 100,000 runs: {load['rps']:.0f} requests/s "
        f"(p50 {load['p50']:.1f} ms, p95 {load['p95']:.1f} ms, {load['errors']} errors; "
        f"load from {load['client']})"
    )
    live = measure_log_latency(port, cookie, page)
    print(
        f"live log: {live['received']}/30 events, p50 {live['p50'] * 1000:.0f} ms, "
        f"p95 {live['p95'] * 1000:.0f} ms, max {live['max'] * 1000:.0f} ms"
    )
    ok = (
        render["p95"] <= TARGET_RENDER_MS
        and load["rps"] >= TARGET_RPS
        and load["errors"] == 0
        and live["received"] == 30
        and live["max"] <= TARGET_LOG_S
    )
    verdict = "all targets met" if ok else "a target was MISSED"
    print(verdict)
    if not args.no_record:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        )
        with open(ROOT / "benchmarks" / "README.md", "a", encoding="utf-8") as out:
            out.write(
                f"\n### web_serving on {connection.vendor} — {stamp}\n\n"
                f"Machine: {machine} (shared with other work). {verdict}.\n\n"
                "| measure | result | target |\n|---|---|---|\n"
                f"| runs page first render, 10,000 runs (server) | p50 {render['p50']:.1f} ms, "
                f"p95 {render['p95']:.1f} ms | ≤ 300 ms |\n"
                f"| 8 clients, `GET runs?limit=50`, 100,000 runs, gunicorn | "
                f"{load['rps']:.0f} requests/s (p50 {load['p50']:.1f} ms, p95 "
                f"{load['p95']:.1f} ms, {load['errors']} errors; {load['client']}) "
                "| ≥ 200 requests/s |\n"
                f"| stored log line → open run page's stream | p50 {live['p50'] * 1000:.0f} ms, "
                f"p95 {live['p95'] * 1000:.0f} ms, max {live['max'] * 1000:.0f} ms | ≤ 1 s |\n"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
