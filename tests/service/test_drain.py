"""SIGTERM drains: the request in flight finishes, new connections are refused, the server exits."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pharmacy_service.stub import StubConfig, run_in_thread
from tests.support.gunicorn import run_gunicorn


def refused_soon(url: str, within: float) -> bool:
    """Whether new connections to ``url`` are refused within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
        except httpx.TransportError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish(built_model: Path, tmp_path: Path) -> None:
    with run_in_thread(StubConfig(latency_ms=2000)) as stub:
        env = {
            "PHARMACY_LLM_BACKEND": "gemini",
            "GEMINI_BASE_URL": f"http://127.0.0.1:{stub.port}",
            "GRACEFUL_TIMEOUT": "20",
        }
        with run_gunicorn(built_model, tmp_path / "server.log", workers=1, env=env) as server:
            answers: list[Any] = []

            def in_flight() -> None:
                body = {
                    "dataframe_records": [
                        {"patient_id": "d1", "medications": ["Coumadin", "Advil"]}
                    ]
                }
                answers.append(httpx.post(f"{server.base_url}/invocations", json=body, timeout=30))

            client = threading.Thread(target=in_flight)
            client.start()
            deadline = time.monotonic() + 10
            while stub.stats.in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.02)  # wait until the request is inside the model, at the LLM
            assert stub.stats.in_flight == 1
            sent = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert refused_soon(f"{server.base_url}/health/ready", within=5.0)
            client.join(30)
            server.process.wait(25)
            exited = time.monotonic() - sent
    (answer,) = answers
    assert answer.status_code == 200
    assert answer.json()["predictions"][0]["note_source"] == "llm"
    assert server.process.returncode == 0
    assert exited < 20  # within the graceful timeout
    lines = server.log_lines()
    assert any('"event": "draining"' in line for line in lines)


@pytest.mark.slow
def test_a_recycled_worker_drains_like_sigterm(built_model: Path, tmp_path: Path) -> None:
    """max_requests replaces a worker through the same drain as SIGTERM: its last answers
    carry ``Connection: close`` (the client reconnects, to the new worker) instead of the
    connection closing under a client that is sending on it."""
    env = {"MAX_REQUESTS": "20"}  # 20 to 22 requests (10% jitter)
    with (
        run_gunicorn(built_model, tmp_path / "server.log", workers=1, env=env) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        (first,) = server.worker_pids()
        answers = []
        deadline = time.monotonic() + 30
        while server.worker_pids() in ([], [first]):  # one keep-alive client until replaced
            assert time.monotonic() < deadline, "the worker was not replaced"
            answers.append(client.get("/health/live"))
            time.sleep(0.01)
        records = [json.loads(line) for line in server.log_lines()]
    assert {a.status_code for a in answers} == {200}
    assert any(a.headers.get("connection") == "close" for a in answers)
    events = [r.get("event") for r in records if r.get("process") == first]
    assert "recycling" in events
    assert "draining" in events[events.index("recycling") :]


def requests_counted(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "pharmacy_http_requests_total"
    )


@pytest.mark.slow
def test_recycled_workers_leave_their_counts_not_their_files(
    built_model: Path, tmp_path: Path
) -> None:
    """Each recycled worker's counters fold into one archive in the metrics directory: the
    directory holds the live workers' files and the archive, however many workers came and
    went, and no counter goes back."""
    log = tmp_path / "server.log"
    env = {"MAX_REQUESTS": "10", "PHARMACY_DRAIN_DELAY": "0.2"}  # 10 or 11 requests a worker
    with (
        run_gunicorn(built_model, log, workers=1, env=env) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
    ):
        directory = tmp_path / f"metrics-{server.base_url.rsplit(':', 1)[1]}"
        pids: set[int] = set()
        counted: list[float] = []
        deadline = time.monotonic() + 90
        while len(pids) < 6:  # five recycles
            assert time.monotonic() < deadline, f"only {len(pids)} workers in 90 s"
            pids.add(client.get("/version").json()["pid"])
            counted.append(requests_counted(client.get("/metrics").text))
        (live,) = server.worker_pids()
        files = sorted(f.name for f in directory.glob("*.db"))
    assert counted == sorted(counted), counted  # never backwards
    assert counted[-1] >= len(counted)  # every /version request of every worker is counted
    assert {f for f in files if not f.startswith("gauge_")} <= {
        "counter_archive.db",
        "histogram_archive.db",
        f"counter_{live}.db",
        f"histogram_{live}.db",
    }, files
    assert {f.rsplit("_", 1)[1] for f in files if f.startswith("gauge_")} <= {f"{live}.db"}
