"""Uploads whose body never arrives, against the real server (gunicorn, one uvicorn worker):
they must not take the admission slots that well-formed requests need, and they are answered
408 once ``PHARMACY_BODY_READ_TIMEOUT`` passes (the connection then closes)."""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gunicorn import RunningGunicorn, run_gunicorn

pytestmark = pytest.mark.slow

ROW = {"patient_id": "s1", "medications": ["Coumadin", "Advil"]}
BODY_READ_TIMEOUT = 4  # seconds: long enough to send the well-formed request meanwhile


def sample(base_url: str, name: str, **labels: str) -> float:
    """One sample's value from /metrics (0 when absent)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def in_flight(base_url: str) -> float:
    """Requests the worker is answering, this scrape excluded."""
    return sample(base_url, "pharmacy_http_requests_in_flight") - 1


def stalled_upload(port: int, path: str) -> socket.socket:
    """A connection that sends a POST's headers, announcing a body it never sends."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n".encode()
    )
    return raw


@pytest.fixture(scope="module")
def server(
    built_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGunicorn]:
    env = {
        "PHARMACY_PREDICT_THREADS": "1",
        "PHARMACY_MAX_QUEUE": "1",  # capacity 2
        "PHARMACY_BODY_READ_TIMEOUT": str(BODY_READ_TIMEOUT),
    }
    log = tmp_path_factory.mktemp("stalled") / "server.log"
    with run_gunicorn(built_model, log, workers=1, env=env) as running:
        yield running


@pytest.mark.parametrize("path", ["/invocations", "/v1/screen"])
def test_stalled_uploads_do_not_take_the_slots_and_get_408(
    server: RunningGunicorn, path: str
) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    with ExitStack() as stack:
        stalled = [stack.enter_context(stalled_upload(port, path)) for _ in range(2)]
        deadline = time.monotonic() + 10
        while in_flight(server.base_url) < 2:  # both are inside the app, awaiting their body
            assert time.monotonic() < deadline, "the stalled uploads never reached the app"
            time.sleep(0.02)
        started = time.monotonic()
        body = {"dataframe_records": [ROW]} if path == "/invocations" else {"patients": [ROW]}
        served = httpx.post(f"{server.base_url}{path}", json=body, timeout=30)
        assert served.status_code == 200, served.text
        # Served while both uploads were still open and unanswered: they held no slot.
        assert select.select(stalled, [], [], 0)[0] == []
        assert httpx.get(f"{server.base_url}/health/ready", timeout=10).status_code == 200
        for raw in stalled:
            answer = http.client.HTTPResponse(raw)
            answer.begin()
            error = json.loads(answer.read())
            assert answer.status == 408, error
            assert error["error_code"] == "REQUEST_TIMEOUT"
            assert f"{BODY_READ_TIMEOUT}" in error["message"]
            assert error["request_id"] == answer.getheader("x-request-id")
            assert answer.getheader("connection") == "close"
            assert raw.recv(1) == b""  # the server closed the connection
        assert time.monotonic() - started < BODY_READ_TIMEOUT + 5
    labels = {"route": path, "method": "POST", "status": "408"}
    assert sample(server.base_url, "pharmacy_http_requests_total", **labels) == 2
