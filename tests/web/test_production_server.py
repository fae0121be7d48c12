"""The documented production server (README "Operating it"): gunicorn with
``gunicorn.conf.py`` (gthread workers) serves a page, a static file through
WhiteNoise, and a run's Server-Sent Events stream."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import requests

from execution.events import NewEvent, append_events
from execution.models import Stream
from tests.factories import MembershipFactory, RunFactory, UserFactory
from tests.integration.processes import ROOT, service_env, stop, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "ccdash.wsgi",
            "--bind",
            f"fd://{listener.fileno()}",
            "--workers",
            "1",
            "--threads",
            "4",
            "--no-control-socket",
        ],
        cwd=ROOT,
        env=service_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=(listener.fileno(),),
        start_new_session=True,
    )
    listener.close()
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"{base}/login/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=20, interval=0.2)
        yield base
    finally:
        stop(process)
        print((tmp_path / "gunicorn.log").read_text()[-2000:])


def test_gunicorn_serves_pages_static_files_and_event_streams(gunicorn, tmp_path):
    project_root = tmp_path / "ws"
    project_root.mkdir()
    user = UserFactory(username="prod-user")
    run = RunFactory(status="succeeded", command="echo prod")
    MembershipFactory(project=run.project, user=user, role="viewer")
    append_events(run.pk, [NewEvent(Stream.STDOUT, "output", text=f"line {n}\n") for n in (1, 2)])

    session = requests.Session()
    login = session.get(f"{gunicorn}/login/", timeout=5)
    assert login.status_code == 200 and "Log in to CCDash" in login.text
    token = session.cookies["csrftoken"]
    answer = session.post(
        f"{gunicorn}/login/",
        data={"username": "prod-user", "password": "pw-for-tests", "csrfmiddlewaretoken": token},
        headers={"Referer": f"{gunicorn}/login/"},
        timeout=5,
    )
    assert answer.status_code == 200 and "Log out" in answer.text

    css = session.get(f"{gunicorn}/static/execution/workbench.css", timeout=5)
    assert css.status_code == 200
    assert css.headers["Content-Type"].startswith("text/css")

    page = session.get(f"{gunicorn}/runs/{run.pk}", timeout=5)
    assert page.status_code == 200 and "echo prod" in page.text

    with session.get(
        f"{gunicorn}/api/execution/runs/{run.pk}/stream",
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=10,
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        body = ""
        for chunk in stream.iter_content(chunk_size=None, decode_unicode=True):
            body += chunk
            if "event: end" in body:
                break
    assert body.count("event: log") == 2
    assert "id: 1\n" in body and "id: 2\n" in body
