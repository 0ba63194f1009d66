"""The app in process (TestClient runs its lifespan): routes, error mapping, limits, auth."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pytest
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException
from prometheus_client.parser import text_string_to_metric_families

from pharmacy_service.server.app import create_app
from pharmacy_service.server.settings import Settings
from pharmacy_service.stub import StubConfig, StubServer, run_in_thread
from tests.support import stuck_model
from tests.support.broken_model import BrokenModel

ROOT = Path(__file__).resolve().parents[2]
RECORDS = {"dataframe_records": [{"patient_id": "a1", "medications": ["Coumadin", "Advil"]}]}


@pytest.fixture
def client_for(built_model: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        settings.setdefault("model_uri", str(built_model))
        client = TestClient(create_app(Settings(**settings)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with run_in_thread(StubConfig(seed=2)) as server:
        yield server


@pytest.fixture
def gemini(stub: StubServer, monkeypatch: pytest.MonkeyPatch) -> StubServer:
    monkeypatch.setenv("GEMINI_BASE_URL", f"http://127.0.0.1:{stub.port}")
    monkeypatch.setenv("PHARMACY_LLM_TIMEOUT", "10")
    return stub


def sample(client: TestClient, name: str, **labels: str) -> float:
    """One sample's value from /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error_code"] == code
    assert body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_instances_may_mix_a_list_and_a_string_of_medications(client_for: Any) -> None:
    """Each row is read by the model, so a list in one row and a string in the next are both
    rows (MLflow's parser refuses the mix, which the OpenAPI schema cannot say)."""
    rows = [
        {"patient_id": "m1", "medications": ["Coumadin", "Advil"]},
        {"patient_id": "m2", "medications": "Zoloft, tramadol"},
    ]
    response = client_for().post("/invocations", json={"instances": rows})
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert (first["highest_severity"], second["highest_severity"]) == ("major", "major")


@pytest.mark.parametrize(
    "async_predict", [True, False], ids=["apredict on the loop", "predict in threads"]
)
def test_invocations_and_screen_agree_on_both_paths(client_for: Any, async_predict: bool) -> None:
    client = client_for(async_predict=async_predict)
    invocations = client.post("/invocations", json=RECORDS)
    screen = client.post(
        "/v1/screen",
        json={"patients": [{"patient_id": "a1", "medications": ["Coumadin", "Advil"]}]},
    )
    assert invocations.status_code == 200, invocations.text
    assert screen.status_code == 200, screen.text
    assert invocations.json()["predictions"] == screen.json()["results"]
    assert screen.json()["results"][0]["interactions"][0]["rule_id"] == "warfarin-nsaid"
    expected = "apredict on the executor loop" if async_predict else "predict in a thread pool"
    assert client.get("/version").json()["model"]["predict"] == expected


def test_csv_input(client_for: Any) -> None:
    csv = 'patient_id,medications\nc1,"Zocor, Biaxin"\n'
    answer = client_for().post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["highest_severity"] == "contraindicated"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "words"),
    [
        pytest.param(
            b"{not json",
            {"Content-Type": "application/json"},
            400,
            "BAD_REQUEST",
            "not valid JSON",
            id="malformed JSON",
        ),
        pytest.param(
            b'{"dataframe_records": [{"patient_id": "x"',
            {"Content-Type": "application/json"},
            400,
            "BAD_REQUEST",
            "JSON",
            id="truncated JSON",
        ),
        pytest.param(
            b"\xff\xfe",
            {"Content-Type": "application/json"},
            400,
            "BAD_REQUEST",
            "UTF-8",
            id="not UTF-8",
        ),
        pytest.param(
            b"x",
            {"Content-Type": "text/plain"},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "text/plain",
            id="wrong content type",
        ),
        pytest.param(b"{}", {}, 415, "UNSUPPORTED_MEDIA_TYPE", "missing", id="no content type"),
        pytest.param(
            b"{}",
            {"Content-Type": "application/json; charset=latin-1"},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "UTF-8",
            id="not UTF-8 charset",
        ),
        pytest.param(
            b"[1, 2]",
            {"Content-Type": "application/json"},
            422,
            "INVALID_INPUT",
            "list",
            id="a JSON list",
        ),
        pytest.param(
            b'{"dataframe_records": [], "instances": []}',
            {"Content-Type": "application/json"},
            422,
            "INVALID_INPUT",
            "instances",
            id="two format keys",
        ),
        pytest.param(
            b'{"records": []}',
            {"Content-Type": "application/json"},
            422,
            "INVALID_INPUT",
            "records",
            id="no format key",
        ),
        pytest.param(
            b'{"dataframe_records": [{"patient_id": "x"}]}',
            {"Content-Type": "application/json"},
            422,
            "INVALID_INPUT",
            "medications",
            id="missing column",
        ),
        pytest.param(
            b'{"dataframe_records": [{"patient_id": "x", "medications": 5}]}',
            {"Content-Type": "application/json"},
            422,
            "INVALID_INPUT",
            "medications",
            id="medications a number",
        ),
    ],
)
def test_bad_invocations_get_a_json_4xx_naming_the_problem(
    client_for: Any, body: bytes, headers: dict[str, str], status: int, code: str, words: str
) -> None:
    answer = client_for().post("/invocations", content=body, headers=headers)
    assert words in error(answer, status, code)["message"]


def test_a_bad_row_names_its_field(client_for: Any) -> None:
    body = {"dataframe_records": [{"patient_id": "x", "medications": ["a", 7]}]}
    assert (
        error(client_for().post("/invocations", json=body), 422, "INVALID_INPUT")["field"]
        == "rows[0].medications[1]"
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(
            {"patients": [{"medications": ["a"]}]}, "patients.0.patient_id", id="missing patient_id"
        ),
        pytest.param(
            {"patients": [{"patient_id": "p", "medications": 3}]},
            "patients.0.medications",
            id="medications a number",
        ),
        pytest.param(
            {"patients": [{"patient_id": "p", "medications": ["a"], "questoin": "why?"}]},
            "patients.0.questoin",
            id="a misspelt field (was dropped: the question lost)",
        ),
        pytest.param(
            {"patients": [{"patient_id": "\x1e", "medications": ["a"]}]},
            "patients.0.patient_id",
            id="an id of white space as Python reads it (U+001E)",
        ),
        pytest.param({"patients": []}, "patients", id="no patients"),
        pytest.param({"people": []}, "patients", id="wrong key"),
    ],
)
def test_screen_validates_with_the_field_named(
    client_for: Any, payload: dict[str, Any], field: str
) -> None:
    body = error(client_for().post("/v1/screen", json=payload), 422, "INVALID_INPUT")
    assert body["field"].startswith(field)


def test_body_too_large(client_for: Any) -> None:
    client = client_for(max_body_bytes=2048)
    answer = client.post(
        "/invocations",
        content=b"{" + b" " * 4096 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert "2048" in error(answer, 413, "PAYLOAD_TOO_LARGE")["message"]


def test_bearer_token_on_prediction_routes_only(client_for: Any) -> None:
    client = client_for(api_token="s3cret-token")
    missing = client.post("/invocations", json=RECORDS)
    error(missing, 401, "UNAUTHORIZED")
    assert missing.headers["www-authenticate"] == "Bearer"
    error(
        client.post("/v1/screen", json={"patients": []}, headers={"Authorization": "Bearer nope"}),
        401,
        "UNAUTHORIZED",
    )
    assert (
        client.post(
            "/invocations", json=RECORDS, headers={"Authorization": "Bearer s3cret-token"}
        ).status_code
        == 200
    )
    assert client.get("/health/ready").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_a_model_bug_is_a_500_not_a_400(client_for: Any, tmp_path: Path) -> None:
    mlflow.pyfunc.save_model(str(tmp_path / "broken"), python_model=BrokenModel())
    client = client_for(model_uri=str(tmp_path / "broken"))
    body = error(client.post("/invocations", json=RECORDS), 500, "MODEL_ERROR")
    assert "ZeroDivisionError" not in body["message"]  # details stay in the log


def test_the_deadline_cancels_and_answers_504(client_for: Any, gemini: StubServer) -> None:
    gemini.config = StubConfig(latency_ms=3000)
    client = client_for(llm_backend="gemini", request_timeout=0.5)
    cancelled = sample(client, "modelhub_executor_timeouts_total", mode="shared")
    error(client.post("/invocations", json=RECORDS), 504, "TIMEOUT")
    # cancelled at its deadline in the executor's loop, not abandoned there
    assert sample(client, "modelhub_executor_timeouts_total", mode="shared") == cancelled + 1
    # and nothing is left in flight (the stub finishes its handler after its own latency
    # even when the client has gone, so this waits for that)
    deadline = time.monotonic() + 10
    while gemini.stats.in_flight:
        assert time.monotonic() < deadline, "an LLM call is still in flight"
        time.sleep(0.05)


@pytest.fixture
def stuck(tmp_path: Path) -> Iterator[Path]:
    """A saved model whose predict blocks until released (released after the test)."""
    stuck_model.STARTED.clear()
    stuck_model.RELEASE.clear()
    mlflow.pyfunc.save_model(str(tmp_path / "stuck"), python_model=stuck_model.StuckModel())
    yield tmp_path / "stuck"
    stuck_model.RELEASE.set()


def test_a_predict_past_its_deadline_answers_504_and_keeps_its_slot(
    client_for: Any, stuck: Path
) -> None:
    """The thread cannot be stopped: until it returns it still takes a predict slot, so the
    server must not admit work as if it had finished."""
    client = client_for(
        model_uri=str(stuck),
        async_predict=False,
        request_timeout=0.2,
        predict_threads=1,
        max_queue=0,
    )
    error(client.post("/invocations", json=RECORDS), 504, "TIMEOUT")
    assert stuck_model.STARTED.is_set()
    error(client.post("/invocations", json=RECORDS), 503, "OVERLOADED")  # still running
    stuck_model.RELEASE.set()
    deadline = time.monotonic() + 10
    while (answer := client.post("/invocations", json=RECORDS)).status_code == 503:
        assert time.monotonic() < deadline, "the slot was never given back"
        time.sleep(0.02)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [{"patient_id": "a1"}]


@pytest.mark.parametrize(
    "async_predict", [True, False], ids=["apredict on the loop", "predict in threads"]
)
def test_a_deadline_already_past_answers_504(client_for: Any, async_predict: bool) -> None:
    body = {**RECORDS, "params": {"timeout": 1e-9}}
    client = client_for(async_predict=async_predict)
    assert "deadline" in error(client.post("/invocations", json=body), 504, "TIMEOUT")["message"]


def test_strict_mode_answers_502_for_an_upstream_failure(
    client_for: Any, gemini: StubServer
) -> None:
    gemini.config = StubConfig(fault_rate=1.0, faults=("503",))
    client = client_for(llm_backend="gemini", llm_strict=True)
    error(client.post("/invocations", json=RECORDS), 502, "UPSTREAM_ERROR")


def test_without_strict_mode_the_row_keeps_its_findings(
    client_for: Any, gemini: StubServer
) -> None:
    # One app per test: the LLM client's connections are closed on its app's executor loop.
    gemini.config = StubConfig(fault_rate=1.0, faults=("503",))
    lenient = client_for(llm_backend="gemini")
    row = lenient.post("/invocations", json=RECORDS).json()["predictions"][0]
    assert (row["note_source"], row["highest_severity"]) == ("fallback", "major")


def test_over_capacity_sheds_with_503_and_retry_after(client_for: Any, gemini: StubServer) -> None:
    gemini.config = StubConfig(latency_ms=1500)
    client = client_for(llm_backend="gemini", predict_threads=1, max_queue=0)
    shed_before = sample(client, "pharmacy_http_requests_shed_total")
    answers: list[Any] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        barrier.wait(10)
        answers.append(client.post("/invocations", json=RECORDS))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) >= 1
    assert statuses.count(503) >= 2
    shed = next(a for a in answers if a.status_code == 503)
    assert shed.headers["retry-after"] == "1"
    error(shed, 503, "OVERLOADED")
    assert sample(client, "pharmacy_http_requests_shed_total") - shed_before == statuses.count(503)


def test_request_id_is_echoed_or_generated(client_for: Any) -> None:
    client = client_for()
    assert (
        client.get("/health/live", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"}).headers[
        "x-request-id"
    ]
    assert generated != "bad id with spaces"
    assert len(generated) == 32


def test_health_and_version(client_for: Any, built_model: Path) -> None:
    client = client_for()
    assert client.get("/health/live").json()["status"] == "ok"
    for path in ("/health/ready", "/ping", "/health"):
        assert client.get(path).json() == {"status": "ready"}
    info = client.get("/version").json()
    assert (info["service"], info["sdk"], info["mlflow"]) == (
        version("pharmacy-service"),
        version("modelhub-sdk"),
        version("mlflow-skinny"),
    )
    assert info["pid"] == os.getpid()  # in process: this one
    model = info["model"]
    assert (model["uri"], model["llm_backend"]) == (str(built_model), "template")
    assert model["predict"] == "apredict on the executor loop"
    assert model["model_uuid"]
    assert model["mlflow_version"] == version("mlflow-skinny")
    assert "/v1/screen" in client.get("/openapi.json").json()["paths"]


def test_startup_fails_loudly_when_the_model_cannot_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker without its model must not start (gunicorn then reports the failed boot)."""
    app = create_app(Settings(model_uri=str(tmp_path / "absent")))
    with pytest.raises(MlflowException, match="No such artifact"), TestClient(app):
        pass
    (failed,) = [r for r in caplog.records if getattr(r, "event", None) == "model_load_failed"]
    assert failed.levelno == logging.ERROR
    assert failed.exc_info


def test_a_client_that_disconnects_mid_upload_is_counted_apart(
    client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a server error: no 5xx in the metrics, no ERROR line; its own counter."""
    client = client_for()
    labels = {"route": "/invocations", "method": "POST"}
    before = {
        s: sample(client, "pharmacy_http_requests_total", **labels, status=s)
        for s in ("499", "500")
    }
    gone_before = sample(client, "pharmacy_http_client_disconnects_total", route="/invocations")
    messages = iter(
        [{"type": "http.request", "body": b'{"dataframe_records": [', "more_body": True}]
    )

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    caplog.clear()
    client.portal.call(client.app, scope, receive, send)
    assert sample(client, "pharmacy_http_client_disconnects_total", route="/invocations") == (
        gone_before + 1
    )
    after = {
        s: sample(client, "pharmacy_http_requests_total", **labels, status=s)
        for s in ("499", "500")
    }
    assert (after["499"] - before["499"], after["500"] - before["500"]) == (1, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_untested_mlflow_fails_loudly_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler uses MLflow's private functions: outside the tested range the server
    refuses to start, with one message naming the range, instead of failing per request."""
    from pharmacy_service.server import _mlflow

    pinned = [
        d
        for d in tomllib.loads((ROOT / "service/pyproject.toml").read_text())["project"][
            "dependencies"
        ]
        if d.startswith("mlflow-skinny")
    ]
    assert pinned == [f"mlflow-skinny{_mlflow.TESTED_RANGE}"]  # one range, stated twice
    assert version("mlflow-skinny") in _mlflow.TESTED  # what this suite runs on
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.99.0")
    monkeypatch.delitem(sys.modules, "pharmacy_service.server._mlflow")
    with pytest.raises(ImportError, match=rf"mlflow-skinny{_mlflow.TESTED_RANGE}.*3\.99\.0"):
        importlib.import_module("pharmacy_service.server._mlflow")


def test_every_post_route_describes_its_request_body(client_for: Any) -> None:
    """Swagger's "Try it out" and generated clients need a request body to send: the routes read
    their bodies themselves (after the upload, before admission), so each describes it."""
    document = client_for().get("/openapi.json").json()
    posts = {path: ops["post"] for path, ops in document["paths"].items() if "post" in ops}
    assert set(posts) >= {"/invocations", "/v1/screen", "/v2/models/{name}/infer"}
    for path, operation in posts.items():
        content = operation.get("requestBody", {}).get("content", {})
        assert "application/json" in content, path
    assert "text/csv" in posts["/invocations"]["requestBody"]["content"]
    assert "ScreenRequest" in document["components"]["schemas"]
    forms = posts["/invocations"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {next(iter(f["required"])) for f in forms} == {
        "dataframe_records",
        "dataframe_split",
        "instances",
        "inputs",
    }


def test_screen_takes_a_long_comma_separated_string(client_for: Any) -> None:
    """The 50-item limit is on a list of names, not on the characters of one string."""
    medications = "Zoloft 50 mg daily, tramadol 50 mg q6h prn, warfarin 5 mg PO nightly"
    response = client_for().post(
        "/v1/screen", json={"patients": [{"patient_id": "s1", "medications": medications}]}
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["medications_normalized"] == ["sertraline", "tramadol", "warfarin"]


@pytest.mark.parametrize(
    "async_predict", [True, False], ids=["apredict on the loop", "predict in threads"]
)
def test_a_key_beside_the_protocol_s_is_refused_on_both_paths(
    client_for: Any, async_predict: bool
) -> None:
    """MLflow's parser ignores it; here it is a 422 naming it, whichever path parses the rows."""
    client = client_for(async_predict=async_predict)
    response = client.post("/invocations", json={**RECORDS, "dataframe_recrods": []})
    body = error(response, 422, "INVALID_INPUT")
    assert body["field"] == "dataframe_recrods"


def test_a_token_from_a_file_ending_in_a_newline_still_matches(client_for: Any) -> None:
    """A Kubernetes Secret file often ends in a newline: the token is its text without it."""
    client = client_for(api_token="s3cret-token\n")
    headers = {"Authorization": "Bearer s3cret-token"}
    assert client.post("/invocations", json=RECORDS, headers=headers).status_code == 200
    wrong = {"Authorization": "Bearer s3cret"}
    assert client.post("/invocations", json=RECORDS, headers=wrong).status_code == 401
