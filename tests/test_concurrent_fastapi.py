"""The seed's test suite, against the real server: gunicorn, 2 uvicorn workers, once per LLM
backend (the real google-genai, openai and anthropic SDKs) pointed at the stub, which speaks
the three wire formats."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.harness import process_stats

from pharmacy_service.stub import StubConfig, StubServer, run_in_thread
from tests.support.gunicorn import RunningGunicorn, run_gunicorn

pytestmark = pytest.mark.slow

WARFARIN_NSAID = ["Coumadin", "Advil"]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with run_in_thread(StubConfig(latency_ms=50, seed=1)) as server:
        yield server


@pytest.fixture(scope="module", params=["gemini", "openai", "anthropic"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def llm_env(stub: StubServer, backend: str, **extra: str) -> dict[str, str]:
    url = f"http://127.0.0.1:{stub.port}" + ("/v1" if backend == "openai" else "")
    return {
        "PHARMACY_LLM_BACKEND": backend,
        f"{backend.upper()}_BASE_URL": url,
        "PHARMACY_LLM_TIMEOUT": "5",
        **extra,
    }


@pytest.fixture(scope="module")
def server(
    built_model: Path, stub: StubServer, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGunicorn]:
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    with run_gunicorn(built_model, log, workers=2, env=llm_env(stub, backend)) as running:
        yield running


def screen(client: httpx.Client, patients: list[dict[str, Any]]) -> httpx.Response:
    return client.post("/invocations", json={"dataframe_records": patients}, timeout=30)


def json_lines(server: RunningGunicorn) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log_lines() if line.startswith("{")]


def test_single_request(server: RunningGunicorn, stub: StubServer, backend: str) -> None:
    before = stub.stats.apis[backend]
    with httpx.Client(base_url=server.base_url) as client:
        answer = client.post(
            "/invocations",
            json={"dataframe_records": [{"patient_id": "s1", "medications": WARFARIN_NSAID}]},
            headers={"X-Request-ID": "seed-single-1"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "seed-single-1"
    (row,) = answer.json()["predictions"]
    assert row["highest_severity"] == "major"
    assert (row["note_source"], row["backend"]) == ("llm", backend)
    assert stub.stats.apis[backend] == before + 1  # through this backend's wire format


def test_20_concurrent_requests(server: RunningGunicorn) -> None:
    barrier = threading.Barrier(20)

    def one(n: int) -> httpx.Response:
        with httpx.Client(base_url=server.base_url) as client:
            barrier.wait(10)
            return screen(client, [{"patient_id": f"c{n}", "medications": WARFARIN_NSAID}])

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    rows = [a.json()["predictions"][0] for a in answers]
    assert sorted(r["patient_id"] for r in rows) == sorted(f"c{n}" for n in range(20))
    assert {r["note_source"] for r in rows} == {"llm"}


def test_100_item_stress_in_batches(server: RunningGunicorn) -> None:
    patients = [
        {"patient_id": f"b{n}", "medications": ["Zocor", "Biaxin"] if n % 2 else WARFARIN_NSAID}
        for n in range(100)
    ]
    batches = [patients[i : i + 10] for i in range(0, 100, 10)]

    def send(batch: list[dict[str, Any]]) -> httpx.Response:
        with httpx.Client(base_url=server.base_url) as client:
            return screen(client, batch)

    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(send, batches))
    assert [a.status_code for a in answers] == [200] * 10
    rows = [row for a in answers for row in a.json()["predictions"]]
    assert [r["patient_id"] for r in rows] == [p["patient_id"] for p in patients]
    assert all(r["interactions"] for r in rows)
    assert {r["highest_severity"] for r in rows} == {"major", "contraindicated"}
    assert {r["note_source"] for r in rows} == {"llm"}


def test_recovery_from_event_loop_errors(
    built_model: Path, stub: StubServer, backend: str, tmp_path: Path
) -> None:
    """Each worker fails its first 2 prediction attempts with "Event loop is closed". One
    keep-alive client talks to one worker: its first request fails twice, is retried twice
    and succeeds; every request succeeds; each injected error gives one async_retry line."""
    env = llm_env(stub, backend, PHARMACY_FAULT_LOOP_ERRORS="2")
    with run_gunicorn(built_model, tmp_path / "server.log", workers=2, env=env) as running:
        with httpx.Client(base_url=running.base_url) as client:
            answers = [
                screen(client, [{"patient_id": f"r{n}", "medications": WARFARIN_NSAID}])
                for n in range(12)
            ]
        lines = json_lines(running)
    assert [a.status_code for a in answers] == [200] * 12
    injected = [line for line in lines if line.get("event") == "loop_error_injected"]
    retries = [line for line in lines if line.get("event") == "async_retry"]
    assert len(injected) == 2
    assert len({line["process"] for line in injected}) == 1  # one worker, its first two
    assert len(retries) == 2
    assert [r["request_id"] for r in retries] == [answers[0].headers["x-request-id"]] * 2
    assert all(
        r["level"] == "WARNING" and r["error"] == "RuntimeError: Event loop is closed"
        for r in retries
    )
    assert all(r["request_id"] for r in retries)  # the request id reaches the SDK's lines
    answered = {a.headers["x-request-id"] for a in answers}
    assert {r["request_id"] for r in retries} <= answered
    assert not [line for line in lines if line.get("event") == "async_failed"]


def test_resource_cleanup_over_1000_requests(server: RunningGunicorn) -> None:
    def burst(count: int) -> list[int]:
        def send(n: int) -> int:
            return screen(
                client, [{"patient_id": f"l{n}", "medications": WARFARIN_NSAID}]
            ).status_code

        with (
            httpx.Client(
                base_url=server.base_url, limits=httpx.Limits(max_connections=20)
            ) as client,
            ThreadPoolExecutor(20) as pool,
        ):
            return list(pool.map(send, range(count)))

    # Warm up first: connection pools, caches and asyncio's default executor (which grows
    # lazily to at most cpu_count + 4 threads) reach their working size.
    assert set(burst(300)) == {200}
    workers = server.worker_pids()
    before = {pid: process_stats(pid) for pid in workers}
    assert set(burst(1000)) == {200}
    after = {pid: process_stats(pid) for pid in workers}
    assert server.worker_pids() == workers  # no worker died or was replaced
    for pid in workers:
        assert after[pid]["threads"] <= before[pid]["threads"] + 3, (before[pid], after[pid])
        assert after[pid]["fds"] <= before[pid]["fds"] + 20, (before[pid], after[pid])
        assert after[pid]["rss_mib"] - before[pid]["rss_mib"] < 32, (before[pid], after[pid])
