"""Integration fixtures: a real qcluster consuming the queue of this test."""

from __future__ import annotations

import pytest
from django_q.conf import Conf

from tests.integration.processes import service_env, start, stop


@pytest.fixture
def broker_enqueue(monkeypatch):
    """Make this process enqueue tasks instead of running them inline."""
    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def qcluster(transactional_db, broker_enqueue, tmp_path, monkeypatch):
    env = service_env()
    # This process must enqueue to the same (named) queue the cluster reads.
    monkeypatch.setattr(Conf, "PREFIX", env["CCDASH_Q_NAME"])
    monkeypatch.setattr(Conf, "CLUSTER_NAME", env["CCDASH_Q_NAME"])
    log = tmp_path / "qcluster.log"
    process = start(["manage.py", "qcluster"], env, log)
    yield process
    stop(process)
    if process.returncode not in (0, -15, None):
        print(log.read_text()[-3000:])
