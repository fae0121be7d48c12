"""The dev server's access log leaves out the workbench's own live requests."""

from __future__ import annotations

import logging

import pytest

from execution.web.quiet_log import QuietPollingFilter


def record(request_line: str, status: str) -> logging.LogRecord:
    # What django.core.servers.basehttp.WSGIRequestHandler.log_message logs.
    return logging.LogRecord(
        "django.server", logging.INFO, __file__, 1, '"%s" %s %s', (request_line, status, "12"), None
    )


@pytest.mark.parametrize(
    "line",
    [
        "GET /api/execution/runs/7/stream HTTP/1.1",
        "GET /api/execution/runs?projectId=1&limit=50 HTTP/1.1",
        "GET /?projectId=1&fragment=rows HTTP/1.1",
        "GET /static/execution/workbench.js HTTP/1.1",
    ],
)
def test_successful_live_requests_are_not_logged(line):
    assert QuietPollingFilter().filter(record(line, "200")) is False


def test_errors_of_live_requests_are_logged():
    assert QuietPollingFilter().filter(record("GET /api/execution/runs/7/stream HTTP/1.1", "500"))


def test_what_a_person_does_is_logged():
    assert QuietPollingFilter().filter(record("POST /api/execution/runs HTTP/1.1", "201"))
    assert QuietPollingFilter().filter(record("GET /runs/7 HTTP/1.1", "200"))


def test_the_filter_is_on_the_dev_server_logger():
    names = [type(f).__name__ for f in logging.getLogger("django.server").filters]
    assert "QuietPollingFilter" in names
