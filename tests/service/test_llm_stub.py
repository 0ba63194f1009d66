"""The Gemini-compatible stub, driven by the real google-genai SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from google import genai
from google.genai import errors, types

from pharmacy_service.stub import StubConfig, StubServer, answer_for, run_in_thread


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with run_in_thread(StubConfig(seed=7)) as server:
        yield server


def client_for(stub: StubServer, timeout_ms: int = 5000) -> genai.Client:
    return genai.Client(
        api_key="stub-key",
        http_options=types.HttpOptions(
            base_url=f"http://127.0.0.1:{stub.port}",
            timeout=timeout_ms,
            retry_options=types.HttpRetryOptions(attempts=1),  # see each fault once
        ),
    )


async def ask(client: genai.Client, prompt: str, n: int = 1) -> list[str]:
    try:
        answers = []
        for _ in range(n):
            response = await client.aio.models.generate_content(
                model="gemini-test", contents=prompt
            )
            answers.append(response.text or "")
        return answers
    finally:
        await client.aio.aclose()


def test_answers_in_the_shape_the_sdk_parses_and_reuses_the_connection(stub: StubServer) -> None:
    prompt = "Patient reference: p1\nSummary: warfarin + ibuprofen: major\nFindings: ..."
    answers = asyncio.run(ask(client_for(stub), prompt, n=5))
    assert answers == [answer_for(prompt, "gemini-test")] * 5
    assert "warfarin + ibuprofen: major" in answers[0]
    assert stub.stats.requests == 5
    assert stub.stats.connections == 1  # HTTP/1.1 keep-alive with Content-Length


def test_the_answer_is_deterministic_without_a_summary() -> None:
    assert answer_for("hello", "m") == answer_for("hello", "m")
    assert answer_for("hello", "m") != answer_for("hello!", "m")


@pytest.mark.parametrize("status", [429, 500, 503])
def test_injected_http_errors_reach_the_sdk(stub: StubServer, status: int) -> None:
    stub.config = StubConfig(fault_rate=1.0, faults=(str(status),))
    with pytest.raises(errors.APIError) as caught:
        asyncio.run(ask(client_for(stub), "q"))
    assert caught.value.code == status
    assert stub.stats.faults[str(status)] == 1


def test_a_slow_answer_runs_past_the_client_timeout(stub: StubServer) -> None:
    stub.config = StubConfig(fault_rate=1.0, faults=("slow",), slow_seconds=5)

    async def bounded() -> list[str]:
        async with asyncio.timeout(0.3):
            return await ask(client_for(stub), "q")

    with pytest.raises(TimeoutError):
        asyncio.run(bounded())
    assert stub.stats.faults["slow"] == 1


def test_a_reset_closes_the_connection_without_an_answer(stub: StubServer) -> None:
    stub.config = StubConfig(fault_rate=1.0, faults=("reset",))
    with pytest.raises(Exception) as caught:  # noqa: PT011 - transports raise different types
        asyncio.run(ask(client_for(stub), "q"))
    assert "disconnect" in repr(caught.value).lower() or "reset" in repr(caught.value).lower()
    assert stub.stats.faults["reset"] == 1


def test_fault_rate_is_honoured_over_many_requests(stub: StubServer) -> None:
    stub.config = StubConfig(fault_rate=0.3, faults=("503",), seed=11)
    base = f"http://127.0.0.1:{stub.port}"
    body = {"contents": [{"role": "user", "parts": [{"text": "q"}]}]}
    with httpx.Client(base_url=base) as http:
        codes = [
            http.post("/v1/models/m:generateContent", json=body).status_code for _ in range(400)
        ]
        stats = http.get("/stats").json()
    assert 0.22 <= codes.count(503) / 400 <= 0.38
    assert stats["faults"]["503"] == codes.count(503)
    assert stats["responses"]["200"] == codes.count(200)


def test_config_and_stats_endpoints(stub: StubServer) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{stub.port}") as http:
        assert (
            http.post("/config", json={"fault_rate": 0.5, "faults": "429,reset"}).status_code == 200
        )
        assert stub.config.fault_rate == 0.5
        assert stub.config.faults == ("429", "reset")
        refused = http.post("/config", json={"fault_rate": 2})
        assert refused.status_code == 400
        assert "fault_rate" in refused.json()["error"]
        assert http.post("/stats/reset").json()["requests"] == 0
        assert http.get("/health").json() == {"status": "ok"}


def test_a_bad_request_gets_a_gemini_error_body(stub: StubServer) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{stub.port}") as http:
        answer = http.post("/v1/models/m:generateContent", json={"nope": 1})
        other = http.post("/v1/models/m:countTokens", json={})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 400
    assert other.status_code == 404
