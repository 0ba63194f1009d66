"""The API key never reaches a log line or a response, even when the upstream quotes it back
in its errors (the stub's echo_api_key) and the SDK puts that into its exception messages; an
empty bearer token is refused at start, never taken as "no token needed"."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from pythonjsonlogger.json import JsonFormatter

from pharmacy_service.server.logs import RedactSecretsFilter, RequestIdFilter, logging_config
from pharmacy_service.server.settings import Settings
from pharmacy_service.stub import StubConfig, run_in_thread
from tests.support.gunicorn import BIN, free_port, run_gunicorn

ROW = {"patient_id": "s1", "medications": ["Coumadin", "Advil"]}


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True], ids=["fallback", "strict"])
def test_api_key_is_redacted_from_logs_and_answers(
    built_model: Path, tmp_path: Path, strict: bool
) -> None:
    api_key = "AIzaTest" + secrets.token_hex(12)
    token = "tok-" + secrets.token_hex(12)
    config = StubConfig(fault_rate=1.0, faults=("500", "429"), echo_api_key=True)
    with run_in_thread(config) as stub:
        env = {
            "PHARMACY_LLM_BACKEND": "gemini",
            "PHARMACY_LLM_STRICT": str(strict).lower(),
            "PHARMACY_LOG_LEVEL": "DEBUG",
            "PHARMACY_API_TOKEN": token,
            "GEMINI_API_KEY": api_key,
            "GEMINI_BASE_URL": f"http://127.0.0.1:{stub.port}",
        }
        log = tmp_path / "server.log"
        with run_gunicorn(built_model, log, workers=1, env=env) as server:
            answers = [
                httpx.post(
                    f"{server.base_url}/v1/screen",
                    json={"patients": [ROW]},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                for _ in range(3)
            ]
            refused = httpx.post(
                f"{server.base_url}/v1/screen",
                json={"patients": [ROW]},
                headers={"Authorization": f"Bearer {token}x"},
                timeout=30,
            )
        assert stub.stats.faults["500"] + stub.stats.faults["429"] == 3  # the key was echoed
    expected = {502} if strict else {200}
    assert {a.status_code for a in answers} == expected, [a.text for a in answers]
    assert refused.status_code == 401
    text = log.read_text()
    for secret in (api_key, token):
        assert secret not in text
        assert all(secret not in a.text for a in [*answers, refused])
    # The upstream's errors (which quoted the key) were logged by their class and status only,
    # never their text: the key has no way into the log lines left.
    failures = [json.loads(line) for line in text.splitlines() if '"llm_call_failed' in line]
    assert failures, "each failure is logged"
    assert {line["status_code"] for line in failures} <= {500, 429}
    assert "injected fault" not in text


def json_logger(stream: io.StringIO) -> logging.Logger:
    """A logger with the server's handler set-up (filters and JSON formatter), on its own."""
    options = {k: v for k, v in logging_config()["formatters"]["default"].items() if k != "()"}
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(JsonFormatter(**options))
    logger = logging.getLogger("tests.service.secrets.probe")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    return logger


def test_secrets_are_redacted_in_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    api_key = "AIzaTest" + secrets.token_hex(12)
    monkeypatch.setenv("GEMINI_API_KEY", api_key)
    stream = io.StringIO()
    logger = json_logger(stream)
    try:
        raise RuntimeError(f"upstream said: bad key {api_key}")
    except RuntimeError as exc:
        logger.warning(
            "async_retry %s",
            api_key,
            exc_info=True,
            stack_info=True,
            extra={
                "event": "async_retry",
                "error": f"RuntimeError: {exc}",  # the SDK puts raw error text here
                "details": {"url": f"https://x/?key={api_key}", "tries": [api_key, 1]},
            },
        )
    text = stream.getvalue()
    assert api_key not in text
    (line,) = text.splitlines()
    record = json.loads(line)
    assert record["error"] == "RuntimeError: upstream said: bad key [REDACTED]"
    assert record["details"] == {"url": "https://x/?key=[REDACTED]", "tries": ["[REDACTED]", 1]}
    assert record["message"] == "async_retry [REDACTED]"


def test_a_malformed_log_call_does_not_raise_into_its_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A library's ``log("%s %s", one_argument)`` is a bug in the library, not in the request
    that triggered it: the line still comes out, as JSON, and says what was wrong."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaTest" + secrets.token_hex(12))
    stream = io.StringIO()
    json_logger(stream).warning("two %s and %s", "one")
    (line,) = stream.getvalue().splitlines()
    record: dict[str, Any] = json.loads(line)
    assert "two %s and %s" in record["message"]
    assert "malformed" in record["message"]


@pytest.mark.slow
def test_every_line_a_preloaded_worker_writes_is_json(built_model: Path, tmp_path: Path) -> None:
    """gunicorn preloads the app (PRELOAD_APP defaults to true), then each worker's uvicorn
    takes over its loggers: its warnings must still come out as JSON, redacted."""
    api_key = "AIzaTest" + secrets.token_hex(12)
    log = tmp_path / "server.log"
    env = {"GEMINI_API_KEY": api_key}
    with run_gunicorn(built_model, log, workers=1, env=env) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"NOT HTTP " + api_key.encode() + b"\r\n\r\n")
            assert raw.recv(200).startswith(b"HTTP/1.1 400")
    lines = server.log_lines()
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, not_json[:5]
    records = [json.loads(line) for line in lines]
    uvicorn = [r for r in records if r["logger"] == "uvicorn.error"]
    assert any(r["message"] == "Invalid HTTP request received." for r in uvicorn), uvicorn
    assert any("Application startup complete" in r["message"] for r in uvicorn), uvicorn
    assert api_key not in log.read_text()


EMPTY_TOKENS = [pytest.param("", id="empty"), pytest.param("  \t ", id="whitespace")]


@pytest.mark.parametrize("token", EMPTY_TOKENS)
def test_an_empty_api_token_is_refused_by_the_settings(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("PHARMACY_API_TOKEN", token)
    with pytest.raises(ValidationError, match="PHARMACY_API_TOKEN") as refused:
        Settings()
    assert "unset it" in str(refused.value)  # says what to do
    monkeypatch.delenv("PHARMACY_API_TOKEN")
    assert Settings().api_token is None  # unset: no token needed, as before


@pytest.mark.slow
@pytest.mark.parametrize("token", EMPTY_TOKENS)
def test_the_server_refuses_to_start_with_an_empty_api_token(
    built_model: Path, tmp_path: Path, token: str
) -> None:
    """Set but empty, the token would admit ``Authorization: Bearer`` with nothing after it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHARMACY_")}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        PHARMACY_MODEL_URI=str(built_model),
        PHARMACY_API_TOKEN=token,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    command = [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.server.gunicorn_conf"]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while server.poll() is None and time.monotonic() < deadline:
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/v1/screen",
                    json={"patients": [ROW]},
                    headers={"Authorization": "Bearer"},  # and no token
                    timeout=5,
                )
                pytest.fail(f"the server started and answered {answer.status_code}")
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 9)
            server.wait(10)
    assert server.returncode != 0
    assert "PHARMACY_API_TOKEN" in log.read_text(errors="replace")
