"""The HTTP seam's sessions: pooled connections and the environment.

The reconciler reads logs 16 at a time per provider; a storage session with
requests' default pool (10 connections) dropped the rest after each download
("Connection pool is full, discarding connection") and opened new ones.
requests reads the proxy environment on every request; the seam reads it once
per origin, and must still honour it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

import connectors.http
from connectors.http import HttpClient, read_capped

BODY = b"2026-12-03T07:00:00Z line\n" * 100
WORKERS = 16


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a storage host does

    def answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Storage(_Handler):
    def do_GET(self):
        time.sleep(0.05)  # long enough for every worker to hold a connection at once
        self.answer(BODY, "text/plain")


class _Proxy(_Handler):
    """An HTTP proxy that answers every request itself, saying what it was asked."""

    def do_GET(self):
        self.answer(json.dumps({"proxied": self.path}).encode(), "application/json")


@contextmanager
def _serving(handler: type[_Handler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def storage():
    with _serving(_Storage) as url:
        yield url


@pytest.fixture
def proxy():
    with _serving(_Proxy) as url:
        yield url


def test_concurrent_log_downloads_keep_every_connection(storage, caplog):
    client = HttpClient("https://api.github.com", provider_id="github_actions")

    def download(n: int) -> bytes:
        response = client.storage_request(f"{storage}/logs/{n}?sig=x")
        content, _ = read_capped(response, 1 << 20)
        return content

    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    with ThreadPoolExecutor(WORKERS) as pool:
        for _ in range(3):
            assert list(pool.map(download, range(WORKERS))) == [BODY] * WORKERS

    discarded = [r for r in caplog.records if "pool is full" in r.getMessage()]
    assert discarded == []


# --- the proxy and CA-bundle environment, read once per origin ----------------


def _clean_proxy_environment(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_requests_go_through_the_proxy_the_environment_names(proxy, monkeypatch):
    _clean_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    client = HttpClient("http://localhost:9")  # nothing listens there: only the proxy answers

    for _ in range(3):
        answer = client.request("GET", "/repos/a/b")
        assert answer.json() == {"proxied": "http://localhost:9/repos/a/b"}


def test_a_host_in_no_proxy_is_reached_directly(proxy, storage, monkeypatch):
    _clean_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = HttpClient(storage)

    assert client.request("GET", "/logs/1").content == BODY  # the storage host, not the proxy
    assert client.request("GET", "http://localhost:9/x").json() == {
        "proxied": "http://localhost:9/x"
    }


def test_the_environment_is_read_once_per_origin_not_per_request(storage, monkeypatch):
    _clean_proxy_environment(monkeypatch)
    lookups: list[str] = []
    real = requests.utils.get_environ_proxies

    def counted(url, no_proxy=None):
        lookups.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    monkeypatch.setattr(connectors.http, "get_environ_proxies", counted, raising=False)
    client = HttpClient(storage)

    for n in range(20):
        assert client.request("GET", f"/logs/{n}").content == BODY
    assert len(lookups) == 1


def test_a_ca_bundle_named_by_the_environment_is_used(storage, monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    client = HttpClient(storage)
    seen: list[object] = []
    send = requests.adapters.HTTPAdapter.send

    def spy(self, request, **kwargs):
        seen.append(kwargs.get("verify"))
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", spy)
    client.request("GET", "/logs/1")
    client.request("GET", "/logs/2", verify=False)
    assert seen == [str(bundle), False]
