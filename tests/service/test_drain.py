"""SIGTERM drains: the request in flight finishes, new connections are refused, the server exits."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pharmacy_service.gemini_stub import StubConfig, run_in_thread
from tests.support.gunicorn import run_gunicorn


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
            time.sleep(0.3)
            with pytest.raises(httpx.TransportError):  # no new work is accepted
                httpx.get(f"{server.base_url}/health/ready", timeout=2)
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
