"""The compose profile `registry`: an MLflow tracking server from the project's image, a
one-shot service that registers the model with the alias champion, and a server that loads
``models:/pharmacy-interaction-screener@champion`` from it (`make compose-smoke`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.compose import ROOT, WARFARIN_ADVIL, compose_command
from tests.support.gunicorn import free_port

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

PROJECT = "pharmacy-registry-smoke"
MODEL = "pharmacy-interaction-screener"


def compose(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "-p", PROJECT, "--profile", "registry", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=900,
    )


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, int]]:
    chosen = {
        "PHARMACY_PORT": free_port(),
        "STUB_PORT": free_port(),
        "MLFLOW_PORT": free_port(),
        "REGISTRY_MODEL_PORT": free_port(),
    }
    env = {**os.environ, "STUB_LATENCY_MS": "20", **{k: str(v) for k, v in chosen.items()}}
    started = time.monotonic()
    compose(env, "build")
    sys.stderr.write(f"[compose-registry] build: {time.monotonic() - started:.1f} s\n")
    started = time.monotonic()
    try:
        up = compose(env, "up", "-d", "--wait", "--wait-timeout", "300", check=False)
        sys.stderr.write(f"[compose-registry] up --wait: {time.monotonic() - started:.1f} s\n")
        logs = compose(env, "logs", "--no-color", check=False).stdout
        assert up.returncode == 0, f"compose up failed:\n{up.stderr}\n{logs[-6000:]}"
        yield chosen
    finally:
        logs = compose(env, "logs", "--no-color", "register-model", check=False).stdout
        sys.stderr.write(f"[compose-registry] register-model said:\n{logs[-1500:]}\n")
        compose(env, "down", "-v", "-t", "5", check=False)


def test_the_model_was_registered_with_the_alias(ports: dict[str, int]) -> None:
    response = httpx.get(
        f"http://127.0.0.1:{ports['MLFLOW_PORT']}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL, "alias": "champion"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    version = response.json()["model_version"]
    assert version["name"] == MODEL
    assert version["version"] == "1"


def test_the_server_serves_the_registered_model(ports: dict[str, int]) -> None:
    base = f"http://127.0.0.1:{ports['REGISTRY_MODEL_PORT']}"
    info = httpx.get(f"{base}/version", timeout=10).json()
    assert info["model"]["uri"] == f"models:/{MODEL}@champion"
    assert info["model"]["run_id"]  # logged to the tracking server, not a local directory
    response = httpx.post(f"{base}/v1/screen", json={"patients": [WARFARIN_ADVIL]}, timeout=60)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["highest_severity"] == "major"
    assert result["note_source"] == "llm"
