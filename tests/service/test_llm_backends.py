"""The openai and anthropic backends (and gemini beside them): the real SDKs against the stub,
through the saved model as MLflow loads it, from many threads, with faults."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pytest

from modelhub.serving import AsyncExecutor
from pharmacy_service.model import LLMUnavailableError, llm
from pharmacy_service.model.llm import (
    AnthropicSettings,
    OpenAISettings,
    backend_from_env,
    classify_error,
)
from pharmacy_service.stub import StubConfig, StubServer
from tests.service.conftest import stub_base_url

BACKENDS = ["gemini", "openai", "anthropic"]
ROW = {"medications": ["warfarin 5 mg PO nightly", "Advil 400 mg q6h prn"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_writes_a_grounded_llm_note_through_its_sdk(
    load_model: Callable[..., Any], stub: StubServer, backend: str
) -> None:
    model = load_model(backend)
    (row,) = model.predict(pd.DataFrame([{"patient_id": "b1", **ROW}])).to_dict("records")
    assert (row["note_source"], row["backend"]) == ("llm", backend)
    assert row["interactions"][0]["advice"] in row["counseling_note"]
    assert row["counseling_note"].endswith(row["disclaimer"])
    assert stub.stats.apis == {backend: 1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_threads_share_one_client_and_its_connections(
    load_model: Callable[..., Any], stub: StubServer, backend: str
) -> None:
    """The seed's production shape: predict() from MLflow's worker threads, one module-level
    client. Every call succeeds, and connections are reused (at most one per caller)."""
    model = load_model(backend)
    errors: list[BaseException] = []
    notes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def worker(index: int) -> None:
        barrier.wait(30)
        for n in range(5):
            try:
                (row,) = model.predict(
                    pd.DataFrame([{"patient_id": f"t{index}-{n}", **ROW}])
                ).to_dict("records")
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                with lock:
                    errors.append(exc)
            else:
                with lock:
                    notes.append(row["note_source"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert notes == ["llm"] * 50
    assert stub.stats.apis[backend] == 50
    assert stub.stats.connections <= 10


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("429", "rate_limited"),
        ("500", "server_error"),
        ("503", "server_error"),
        ("reset", "connection"),
    ],
)
def test_upstream_faults_fall_back_to_the_template_with_the_findings_kept(
    load_model: Callable[..., Any], stub: StubServer, backend: str, fault: str, kind: str
) -> None:
    stub.config = StubConfig(fault_rate=1.0, faults=(fault,))
    model = load_model(backend)
    python_model = model.unwrap_python_model()
    seen: list[str] = []
    python_model.pipeline.observer.on_fallback = lambda _backend, reason: seen.append(reason)
    (row,) = model.predict(pd.DataFrame([{"patient_id": "f1", **ROW}])).to_dict("records")
    assert row["note_source"] == "fallback"
    assert row["interactions"][0]["severity"] == "major"
    assert seen == [kind]


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_strict_mode_and_the_per_call_timeout(
    load_model: Callable[..., Any], stub: StubServer, backend: str
) -> None:
    stub.config = StubConfig(fault_rate=1.0, faults=("slow",), slow_seconds=3)
    model = load_model(backend, PHARMACY_LLM_STRICT="true", PHARMACY_LLM_TIMEOUT="0.3")
    with pytest.raises(LLMUnavailableError) as caught:
        model.predict(pd.DataFrame([{"patient_id": "s1", **ROW}]))
    assert caught.value.kind == "timeout"


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_the_api_key_never_reaches_the_logs(
    load_model: Callable[..., Any],
    stub: StubServer,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stub quotes the key in its error (as a careless upstream might); the log must not."""
    secret = f"sk-test-{backend}-0123456789"
    stub.config = StubConfig(fault_rate=1.0, faults=("500",), echo_api_key=True)
    model = load_model(backend, **{f"{backend.upper()}_API_KEY": secret})
    with caplog.at_level(logging.WARNING):
        (row,) = model.predict(pd.DataFrame([{"patient_id": "k1", **ROW}])).to_dict("records")
    assert row["note_source"] == "fallback"
    failures = [r for r in caplog.records if getattr(r, "event", None) == "llm_call_failed"]
    assert failures, "the failure is logged"
    assert "status=500" in failures[0].getMessage()
    assert secret not in caplog.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_upstream_error_that_quotes_the_prompt_is_logged_without_it(
    load_model: Callable[..., Any],
    stub: StubServer,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stub's error quotes the prompt, patient data included (its echo_prompt), as an
    upstream's validation error can: the log says the error's class and status code, never
    its text."""
    stub.config = StubConfig(fault_rate=1.0, faults=("500",), echo_prompt=True)
    model = load_model(backend)
    patient = "P-LOG-4471"
    with caplog.at_level(logging.WARNING):
        (row,) = model.predict(pd.DataFrame([{"patient_id": patient, **ROW}])).to_dict("records")
    assert row["note_source"] == "fallback"
    for quoted in (patient, "Write the counselling note", "warfarin"):
        assert quoted not in caplog.text, quoted
    (failure,) = [r for r in caplog.records if getattr(r, "event", None) == "llm_call_failed"]
    assert (failure.kind, failure.status_code) == ("server_error", 500)  # type: ignore[attr-defined]
    assert failure.error_type.endswith("Error")  # type: ignore[attr-defined]
    assert f"error={failure.error_type} status=500" in failure.getMessage()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("backend", "module"), [("openai", "openai"), ("anthropic", "anthropic")])
def test_a_backend_whose_sdk_is_missing_is_a_clear_start_up_error(
    monkeypatch: pytest.MonkeyPatch, backend: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(ValueError, match=rf"pharmacy-service\[{backend}\]"):
        backend_from_env(backend, {f"{backend.upper()}_BASE_URL": "http://127.0.0.1:9"})


@pytest.mark.parametrize("settings", [OpenAISettings, AnthropicSettings])
def test_settings_name_the_variables_they_need(settings: Any) -> None:
    with pytest.raises(ValueError, match=f"{settings.PREFIX}_API_KEY"):
        settings.from_env({})
    loaded = settings.from_env({f"{settings.PREFIX}_BASE_URL": "http://127.0.0.1:9"})
    assert loaded.model == settings.DEFAULT_MODEL
    custom = settings.from_env(
        {f"{settings.PREFIX}_API_KEY": "k", f"{settings.PREFIX}_MODEL": "local-model"}
    )
    assert (custom.api_key, custom.model, custom.base_url) == ("k", "local-model", None)


def test_sdk_errors_are_classified_by_status() -> None:
    import anthropic
    import httpx
    import openai

    request = httpx.Request("POST", "http://127.0.0.1:9/v1/messages")
    for status, kind in ((429, "rate_limited"), (503, "server_error"), (400, "client_error")):
        response = httpx.Response(status, request=request)
        assert classify_error(openai.APIStatusError("x", response=response, body=None)) == kind
        assert classify_error(anthropic.APIStatusError("x", response=response, body=None)) == kind
    assert classify_error(openai.APITimeoutError(request=request)) == "timeout"
    assert classify_error(anthropic.APIConnectionError(request=request)) == "connection"


def test_the_gemini_session_of_each_loop_is_closed_when_that_loop_ends(stub: StubServer) -> None:
    """Isolated mode's shape: every call on a fresh loop, one after another and from several
    threads at once. The backend builds an aiohttp session (and a client) per loop; each must
    be closed, on its own loop, as that loop ends, and leave no connection open to the upstream
    (each was left open: one session and its keep-alive connection per loop)."""
    backend = backend_from_env(
        "gemini", {"GEMINI_BASE_URL": stub_base_url("gemini", stub.port or 0)}
    )

    def one_call(_: int) -> str:
        return asyncio.run(backend.note("Write the counselling note now."))

    notes = [one_call(n) for n in range(5)]
    with ThreadPoolExecutor(4) as pool:
        notes += pool.map(one_call, range(8))
    assert len(notes) == 13
    assert all(note.startswith("Stub answer") for note in notes)
    assert stub.stats.connections >= 5  # a connection per loop, at least
    wait_for(lambda: stub.open_connections == 0)  # the stub sees each close on its own loop


@pytest.mark.parametrize(("trust_env", "source"), [("false", "llm"), ("true", "fallback")])
def test_the_gemini_session_reads_the_proxy_environment_only_when_asked(
    load_model: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    trust_env: str,
    source: str,
) -> None:
    """A proxy that refuses connections is in the environment: the service's own session
    ignores it (no lookup per call), unless PHARMACY_LLM_TRUST_ENV asks for it."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    model = load_model("gemini", PHARMACY_LLM_TRUST_ENV=trust_env, PHARMACY_LLM_TIMEOUT="3")
    (row,) = model.predict(pd.DataFrame([{"patient_id": "p1", **ROW}])).to_dict("records")
    assert row["note_source"] == source


def test_gemini_keeps_one_client_and_session_across_model_loads(
    built_model: Path, stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spark's shape: ``spark_udf`` loads the model again for every task in a Python worker
    that lives across tasks, and drops the last load without closing it. Five loads, each
    predicting on the executor's loop and then dropped and collected: one client and one
    aiohttp session serve them all (the first load's connections reused), and nothing is left unclosed
    (a session per load was: 'Unclosed client session' when each was collected)."""
    monkeypatch.setenv("PHARMACY_LLM_BACKEND", "gemini")
    monkeypatch.setenv("GEMINI_BASE_URL", stub_base_url("gemini", stub.port or 0))
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    clients: list[Any] = []
    with warnings.catch_warnings(record=True) as caught, capture_asyncio_errors() as errors:
        warnings.simplefilter("always")
        for load in range(5):
            model = mlflow.pyfunc.load_model(str(built_model))
            frame = pd.DataFrame([{"patient_id": f"l{load}-{n}", **ROW} for n in range(3)])
            sources = model.predict(frame)["note_source"].tolist()
            assert sources == ["llm"] * 3
            backend = model.unwrap_python_model().pipeline.backend
            clients.append(AsyncExecutor.run_async(backend._client))
            del model, backend
            gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed" in str(w.message)]
    assert unclosed == []
    assert [e for e in errors if "Unclosed" in e or "destroyed" in e] == []
    assert len(clients) == 5
    assert all(client is clients[0] for client in clients)
    assert len(llm._gemini_sessions) == 1
    assert stub.stats.apis == {"gemini": 15}
    assert stub.stats.connections == 3  # the first load's three concurrent calls, reused
    AsyncExecutor.shutdown()  # the executor's loop ends: the session is closed on it
    assert len(llm._gemini_sessions) == 0
    wait_for(lambda: stub.open_connections == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_closing_one_model_leaves_another_in_the_process_working(
    load_model: Callable[..., Any], stub: StubServer, backend: str
) -> None:
    """The server's shutdown path (``PharmacyModel.aclose`` on the executor's loop) with two
    models sharing the process's client: closing the first while the second has calls in
    flight does not close the client under them; the second keeps writing notes on the same
    connections; closing the second closes the client and its connections, and a model
    loaded afterwards opens new ones."""
    first, second = load_model(backend), load_model(backend)
    frame = pd.DataFrame([{"patient_id": f"c{n}", **ROW} for n in range(4)])
    assert first.predict(frame)["note_source"].tolist() == ["llm"] * 4
    assert second.predict(frame)["note_source"].tolist() == ["llm"] * 4
    opened = stub.stats.connections
    stub.config = StubConfig(latency_ms=300)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(second.predict, frame)
        wait_for(lambda: stub.stats.in_flight == 4)
        AsyncExecutor.run_async(first.unwrap_python_model().aclose, timeout=5)
        assert in_flight.result(10)["note_source"].tolist() == ["llm"] * 4
    assert second.predict(frame)["note_source"].tolist() == ["llm"] * 4
    assert stub.stats.connections == opened  # the same client's connections
    assert stub.open_connections > 0
    AsyncExecutor.run_async(second.unwrap_python_model().aclose, timeout=5)
    assert _clients_held(backend) == 0
    wait_for(lambda: stub.open_connections == 0)
    third = load_model(backend)
    assert third.predict(frame)["note_source"].tolist() == ["llm"] * 4
    assert stub.stats.connections > opened


def _clients_held(backend: str) -> int:
    """The clients the backend's process-wide registry holds."""
    if backend == "gemini":
        return len(llm._gemini_sessions)
    slot = llm._openai if backend == "openai" else llm._anthropic
    return len(slot._clients)


def wait_for(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.02)


@contextlib.contextmanager
def capture_asyncio_errors() -> Iterator[list[str]]:
    """What asyncio logs (an unclosed session, a pending task destroyed), as text."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    try:
        yield messages
    finally:
        asyncio_logger.removeHandler(handler)
