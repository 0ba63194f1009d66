"""The API key never reaches a log line or a response, even when the upstream quotes it back
in its errors (the stub's echo_api_key) and the SDK puts that into its exception messages."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from pharmacy_service.gemini_stub import StubConfig, run_in_thread
from tests.support.gunicorn import run_gunicorn

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
    # The echoed key did reach the log lines, redacted: the check above can fail.
    assert "[REDACTED]" in text
