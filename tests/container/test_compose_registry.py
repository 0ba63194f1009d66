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


def test_a_screening_request_is_traced_in_mlflow_with_patient_data_masked(
    ports: dict[str, int],
) -> None:
    """Tracing is on in the registry server (MLFLOW_TRACKING_URI): the request's trace is read
    back from the composed tracking server, with its tags and spans, and none of the request's
    patient id, question or medication names in it."""
    import mlflow
    from mlflow.entities import TraceState
    from mlflow.exceptions import MlflowException

    patient_id = "P-TRACE-7731"
    question = "Can she keep taking both before her dental surgery on Thursday?"
    body = {
        "patients": [
            {
                "patient_id": patient_id,
                "question": question,
                "medications": ["warfarin 5 mg", "aspirin 81 mg"],
            }
        ]
    }
    response = httpx.post(
        f"http://127.0.0.1:{ports['REGISTRY_MODEL_PORT']}/v1/screen", json=body, timeout=60
    )
    assert response.status_code == 200, response.text
    trace_id = response.headers.get("x-mlflow-trace-id")
    assert trace_id, dict(response.headers)  # tracing is on: MLFLOW_TRACKING_URI is set
    assert trace_id.startswith("tr-"), trace_id
    request_id = response.headers["x-request-id"]

    client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{ports['MLFLOW_PORT']}")
    deadline = time.monotonic() + 30  # the server exports traces asynchronously
    trace, last_error = None, "no answer yet"
    while time.monotonic() < deadline:
        try:
            trace = client.get_trace(trace_id, display=False)
        except MlflowException as exc:  # not exported yet
            trace, last_error = None, str(exc)
        if trace is not None and trace.data.spans and trace.info.state != TraceState.IN_PROGRESS:
            break
        time.sleep(0.5)
    assert trace is not None, f"trace {trace_id} not in MLflow after 30 s: {last_error}"
    assert trace.data.spans, f"trace {trace_id} has no spans after 30 s: {trace.info}"

    assert trace.info.state == TraceState.OK
    assert trace.info.client_request_id == request_id
    assert trace.info.tags["pharmacy.outcome"] == "ok"
    assert trace.info.tags["pharmacy.route"] == "/v1/screen"
    spans = {span.span_id: span for span in trace.data.spans}
    (root,) = [span for span in spans.values() if span.parent_id is None]
    assert root.name == "screen"
    llm_spans = [span for span in spans.values() if span.span_type == "LLM"]
    assert llm_spans, sorted((span.name, span.span_type) for span in spans.values())
    ancestor = llm_spans[0]
    while ancestor.parent_id is not None:
        ancestor = spans[ancestor.parent_id]
    assert ancestor is root

    exported = trace.to_json()
    for private in (patient_id, question, "warfarin", "aspirin"):
        assert private.lower() not in exported.lower(), f"{private!r} is in the trace"
