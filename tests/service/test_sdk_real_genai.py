"""The SDK's shared mode with the real google-genai client against the project's Gemini stub.

It lives beside the service's tests because the stub is the service's; tests/sdk needs only the
SDK (it runs without the service package, in make sdk-matrix).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google import genai
from google.genai import types

from modelhub.serving import AsyncExecutor
from pharmacy_service.stub import answer_for, run_in_thread
from tests.support.loop_affine import CALLS_PER_THREAD, THREADS, hammer


@pytest.mark.slow
def test_shared_mode_real_google_genai_client_has_no_failures(
    make_executor: Callable[..., AsyncExecutor], caplog: pytest.LogCaptureFixture
) -> None:
    executor = make_executor("shared")
    with run_in_thread() as stub:  # the project's Gemini-compatible stub
        client = genai.Client(
            api_key="test-key-not-secret",
            http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{stub.port}"),
        )

        async def ask(prompt: str) -> str:
            response = await client.aio.models.generate_content(
                model="gemini-2.0-flash", contents=prompt
            )
            return response.text or ""

        try:
            results, errors = hammer(lambda value: executor.run(ask, value, timeout=30))
        finally:
            executor.run(client.aio.aclose)
            client.close()
        assert errors == []
        assert sorted(results) == sorted(
            answer_for(f"{i}-{n}", "gemini-2.0-flash")
            for i in range(THREADS)
            for n in range(CALLS_PER_THREAD)
        )
        assert stub.stats.requests == THREADS * CALLS_PER_THREAD
        assert stub.stats.connections <= THREADS
    assert not [r for r in caplog.records if getattr(r, "event", None) == "async_retry"]
