"""MLflow Tracing, checked on what reaches a real tracking store (MLflow's file store), from the
real server (gunicorn, two workers), from ``mlflow models serve``, and from the model loaded in a
fresh process: one trace per request with the LLM spans nested through the executor, traces of
requests whose deadline passed, masking, and the ``X-MLflow-Trace-Id`` header."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.entities import Trace

from pharmacy_service.stub import StubConfig, StubServer, run_in_thread
from tests.service.conftest import stub_base_url
from tests.support.gunicorn import RunningGunicorn, free_port, run_gunicorn
from tests.support.mlflow_serve import run_mlflow_serve
from tests.support.traced_predictions import run_traced

API_KEY = "AIzaSyTEST-not-a-real-key-0123456789abcdef"
PATIENT = "P-TRACE-4471"
QUESTION = "Is it safe with my evening grapefruit juice?"
MEDICATIONS = ["Coumadin 5 mg PO nightly", "aspirin 81 mg"]
NAMES = ("coumadin", "warfarin", "aspirin")
"""What the request's medications are, as written and as read: masked by default."""


@pytest.fixture(scope="module", autouse=True)
def _file_store_allowed() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        # MLflow keeps its file store behind a switch (it prefers a database); it is a real
        # store, and the one a test can open without a server.
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        # mlflow.set_experiment (the model's build, in this process) exports the experiment's
        # id to the environment; the servers started here must not inherit it.
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return (tmp_path_factory.mktemp("mlruns") / "store").as_uri()


@pytest.fixture(scope="module")
def llm() -> Iterator[StubServer]:
    with run_in_thread(StubConfig(seed=5, echo_api_key=True)) as server:
        yield server


def tracing_env(store: str, llm: StubServer, backend: str = "gemini") -> dict[str, str]:
    prefix = backend.upper()
    return {
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_EXPERIMENT_NAME": "pharmacy-tests",
        "PHARMACY_LLM_BACKEND": backend,
        f"{prefix}_BASE_URL": stub_base_url(backend, llm.port or 0),
        f"{prefix}_API_KEY": API_KEY,
    }


@pytest.fixture(scope="module")
def server(
    built_model: Path, store: str, llm: StubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGunicorn]:
    log = tmp_path_factory.mktemp("traced") / "server.log"
    with run_gunicorn(built_model, log, workers=2, env=tracing_env(store, llm)) as running:
        yield running


def read_trace(store: str, trace_id: str, timeout: float = 30.0) -> Trace:
    """The trace as exported (export is asynchronous: wait for it, within a deadline)."""
    client = MlflowClient(tracking_uri=store)
    deadline = time.monotonic() + timeout
    while True:
        try:
            trace = client.get_trace(trace_id)
        except Exception:  # noqa: BLE001 - not there yet (the store says so in its own ways)
            trace = None
        if trace is not None and trace.data.spans:
            found: Trace = trace
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"trace {trace_id} was not exported within {timeout} s")
        time.sleep(0.2)


def one_traced_request(built_model: Path, store: str, tmp_path: Path, env: dict[str, str]) -> Trace:
    """One /v1/screen request to a one-worker server started with ``env``, answered 200; its
    trace, read after the server stopped."""
    with run_gunicorn(built_model, tmp_path / "server.log", workers=1, env=env) as one:
        response = screen(one, [{"patient_id": PATIENT, "medications": MEDICATIONS}])
    assert response.status_code == 200, response.text
    return read_trace(store, response.headers["x-mlflow-trace-id"])


def tree(trace: Trace) -> dict[str, list[Any]]:
    """Children by parent span id ("" for the root)."""
    children: dict[str, list[Any]] = {}
    for span in trace.data.spans:
        children.setdefault(span.parent_id or "", []).append(span)
    return children


def names(spans: list[Any]) -> list[str]:
    return sorted(span.name for span in spans)


def screen(server: RunningGunicorn, patients: list[dict[str, Any]], **headers: str) -> Any:
    return httpx.post(
        f"{server.base_url}/v1/screen", json={"patients": patients}, headers=headers, timeout=30
    )


def test_a_request_is_one_trace_with_the_llm_spans_nested_under_it(
    server: RunningGunicorn, store: str
) -> None:
    patients = [
        {"patient_id": PATIENT, "medications": MEDICATIONS, "question": QUESTION},
        {"patient_id": "P-TRACE-4472", "medications": ["simvastatin", "clarithromycin"]},
    ]
    response = screen(server, patients)
    assert response.status_code == 200, response.text
    trace_id = response.headers["x-mlflow-trace-id"]
    trace = read_trace(store, trace_id)

    assert trace.info.state.value == "OK"
    assert trace.info.client_request_id == response.headers["x-request-id"]
    tags = trace.info.tags
    assert (tags["pharmacy.route"], tags["pharmacy.backend"], tags["pharmacy.outcome"]) == (
        "/v1/screen",
        "gemini",
        "ok",
    )
    children = tree(trace)
    (root,) = children[""]
    assert root.name == "screen"
    assert root.attributes["http.status_code"] == 200
    (predict,) = children[root.span_id]
    assert predict.name == "apredict"  # on the executor's loop: the contextvars followed
    assert names(children[predict.span_id]) == ["note", "note", "parse_rows", "screen"]
    notes = [s for s in children[predict.span_id] if s.name == "note"]
    assert sorted(s.attributes["pharmacy.row"] for s in notes) == [0, 1]
    tokens = 0
    for note in notes:
        assert note.attributes["pharmacy.note_source"] == "llm"
        (llm_span,) = children[note.span_id]
        assert (llm_span.name, llm_span.span_type) == ("gemini.note", "LLM")
        assert llm_span.attributes["mlflow.llm.model"] == "gemini-2.5-flash"
        usage = llm_span.attributes["mlflow.chat.tokenUsage"]
        assert usage["input_tokens"] > 0
        assert usage["output_tokens"] > 0
        tokens += usage["total_tokens"]
        assert note.attributes["pharmacy.grounded"] is True
    assert (
        json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])["total_tokens"] == tokens
    )
    assert all(
        span.end_time_ns and span.status.status_code.value == "OK" for span in trace.data.spans
    )


def test_twenty_concurrent_requests_get_twenty_traces_none_mixed(
    server: RunningGunicorn, store: str
) -> None:
    """Each request its own X-Request-ID and its own number of rows (1 to 3): its trace must
    carry that id and exactly that many note and LLM spans."""

    def one(index: int) -> tuple[str, int, str]:
        rows = index % 3 + 1
        patients = [
            {"patient_id": f"C{index}-{n}", "medications": ["warfarin", "ibuprofen"]}
            for n in range(rows)
        ]
        request_id = f"concurrent-{index}"
        response = screen(server, patients, **{"X-Request-ID": request_id})
        assert response.status_code == 200, response.text
        return response.headers["x-mlflow-trace-id"], rows, request_id

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert len({trace_id for trace_id, _, _ in answers}) == 20
    for trace_id, rows, request_id in answers:
        trace = read_trace(store, trace_id)
        assert trace.info.client_request_id == request_id
        spans = trace.data.spans
        assert sum(s.name == "note" for s in spans) == rows
        assert sum(s.span_type == "LLM" for s in spans) == rows
        (parse,) = [s for s in spans if s.name == "parse_rows"]
        assert parse.outputs["rows"] == rows
        assert len(spans) == 4 + 2 * rows  # root, apredict, parse_rows, screen; 2 per row


def test_a_request_past_its_deadline_still_exports_a_complete_trace(
    server: RunningGunicorn, store: str, llm: StubServer
) -> None:
    previous = llm.config
    llm.config = StubConfig(latency_ms=3000, seed=5)
    try:
        response = httpx.post(
            f"{server.base_url}/invocations",
            json={
                "dataframe_records": [{"patient_id": PATIENT, "medications": MEDICATIONS}],
                "params": {"timeout": 0.3},
            },
            timeout=30,
        )
    finally:
        llm.config = previous
    assert response.status_code == 504, response.text
    trace = read_trace(store, response.headers["x-mlflow-trace-id"])
    assert trace.info.state.value == "ERROR"
    assert trace.info.tags["pharmacy.outcome"] == "timeout"
    assert all(span.end_time_ns for span in trace.data.spans)  # no span left open
    by_name = {span.name: span for span in trace.data.spans}
    assert set(by_name) == {
        "invocations",
        "apredict",
        "parse_rows",
        "screen",
        "note",
        "gemini.note",
    }
    llm_span = by_name["gemini.note"]
    assert llm_span.status.status_code.value == "ERROR"
    assert llm_span.status.description == "cancelled"
    assert [e.name for e in llm_span.events] == ["cancelled"]
    assert by_name["invocations"].status.description == "504 timeout"


def test_patient_data_and_keys_are_masked_in_the_exported_trace(
    server: RunningGunicorn, store: str, llm: StubServer
) -> None:
    """A failing upstream that quotes the API key in its error (the stub's echo_api_key): the
    key must not reach the trace either; nor the patient id, the question or the drugs."""
    previous = llm.config
    llm.config = StubConfig(fault_rate=1.0, faults=("500",), seed=5, echo_api_key=True)
    try:
        response = screen(
            server, [{"patient_id": PATIENT, "medications": MEDICATIONS, "question": QUESTION}]
        )
    finally:
        llm.config = previous
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["note_source"] == "fallback"
    trace = read_trace(store, response.headers["x-mlflow-trace-id"])
    llm_span = next(s for s in trace.data.spans if s.span_type == "LLM")
    assert llm_span.attributes["pharmacy.llm.error_kind"] == "server_error"
    assert any(e.name == "exception" for e in llm_span.events)  # the error is kept, masked
    note = next(s for s in trace.data.spans if s.name == "note")
    assert note.attributes["pharmacy.fallback_reason"] == "server_error"
    exported = trace.to_json().lower()
    for secret in (PATIENT, QUESTION, API_KEY, *NAMES):
        assert secret.lower() not in exported, secret
    assert "[masked]" in exported


def test_names_outside_the_knowledge_base_are_masked_in_the_exported_trace(
    server: RunningGunicorn, store: str, llm: StubServer
) -> None:
    """An upstream whose error quotes the prompt (the stub's echo_prompt): the prompt reaches
    the LLM span's exception and status, so every name in it must be masked there, not only the
    knowledge base's drugs. Digitoxin is recognised but not covered (the prompt names it apart
    from the string written); Voltaren is a local-route product, written with a tab, as pasted
    from a spreadsheet (the prompt's JSON writes the tab as an escape, so only its name, not the
    string as written, can be found there); diclofenac is what that product holds."""
    medications = ["digitoxin 0.1 mg daily", "Voltaren\t1% gel", "warfarin 5 mg"]
    previous = llm.config
    llm.config = StubConfig(fault_rate=1.0, faults=("500",), seed=5, echo_prompt=True)
    try:
        response = screen(server, [{"patient_id": PATIENT, "medications": medications}])
    finally:
        llm.config = previous
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["note_source"] == "fallback"
    assert result["not_covered"] == [{"input": "digitoxin 0.1 mg daily", "name": "digitoxin"}]
    assert [item["generic"] for item in result["not_screened"]] == ["diclofenac"]
    trace = read_trace(store, response.headers["x-mlflow-trace-id"])
    exported = trace.to_json().lower()
    assert "write the counselling note now" in exported  # the echoed prompt is in the trace...
    for name in ("digitoxin", "voltaren", "diclofenac", "warfarin", PATIENT.lower()):
        assert name not in exported, name  # ...without any name of the patient's


def test_a_span_that_ends_after_its_requests_root_is_masked_whole(
    built_model: Path, store: str, llm: StubServer
) -> None:
    """After a deadline, code still unwinding on the loop can end its span after the root,
    when the request's own strings are no longer known: such a span keeps no text at all.
    Medication names are allowed here, so only that rule can keep the patient id out."""
    env = {**tracing_env(store, llm), "PHARMACY_TRACE_MEDICATIONS": "true"}
    answer = run_traced(built_model, ["late"], env)
    trace = read_trace(store, answer["trace_id"])
    late = next(s for s in trace.data.spans if s.name == "late.note")
    assert late.inputs == {"prompt": "[MASKED]"}
    assert late.attributes["pharmacy.free_text"] == "[MASKED]"
    assert "P-LEAK-1" not in trace.to_json()


def test_a_span_whose_masking_fails_keeps_no_text_of_the_request(
    built_model: Path, store: str, llm: StubServer
) -> None:
    """Masking fails for real (an attribute nested deeper than it can follow): the span is
    still exported, with no text of the request's in its inputs, outputs, attributes, events or
    status. The events are rewritten on the OpenTelemetry span MLflow wraps (no public API
    changes an event): this checks that against the installed OpenTelemetry SDK."""
    env = {**tracing_env(store, llm), "MLFLOW_EXPERIMENT_NAME": "pharmacy-tests-unmaskable"}
    report = run_traced(built_model, ["unmaskable"], env)
    assert any("masking" in line for line in report["logged"]), report["logged"]
    trace = read_trace(store, report["trace_id"])
    span = next(s for s in trace.data.spans if s.name == "unmaskable")
    assert (span.inputs, span.outputs) == ("[MASKED]", "[MASKED]")
    assert span.attributes["pharmacy.free_text"] == "[MASKED]"
    assert span.attributes["pharmacy.rows"] == "[MASKED]"
    assert [event.name for event in span.events] == ["exception"]
    assert set(span.events[0].attributes.values()) == {"[MASKED]"}
    assert span.status.status_code.value == "ERROR"
    assert span.status.description == "[MASKED]"
    assert "P-LEAK-1" not in trace.to_json()


def test_masking_a_large_request_does_not_hold_up_other_requests(
    built_model: Path, store: str, llm: StubServer
) -> None:
    """A request with 500 questions of 2,000 characters ends a span; while that span is masked,
    another request starts its trace and marks its strings (both take the process-wide tracing
    lock). It must not wait for the masking: the matcher is not built under that lock (it was:
    compiling one regular expression of every value held the lock for seconds)."""
    env = {**tracing_env(store, llm), "MLFLOW_EXPERIMENT_NAME": "pharmacy-tests-contention"}
    report = run_traced(built_model, ["contention"], env)
    assert report["other_blocked"] is False, report
    assert report["other_finished"] is True
    trace = read_trace(store, report["trace_id"])
    child = next(s for s in trace.data.spans if s.name == "child")
    assert child.inputs == {"text": "asked: [MASKED]"}
    assert report["question"] not in trace.to_json()


@pytest.mark.parametrize(
    "case", ["no tracking uri", "switched off", "not sampled", "tracking server unreachable"]
)
def test_a_request_without_a_trace_gets_no_header_and_is_served(
    built_model: Path, store: str, llm: StubServer, tmp_path: Path, case: str
) -> None:
    env = {"PHARMACY_LLM_BACKEND": "template"}
    if case != "no tracking uri":
        env["MLFLOW_TRACKING_URI"] = store
    if case == "switched off":
        env["PHARMACY_TRACING"] = "false"
    if case == "not sampled":
        env["MLFLOW_TRACE_SAMPLING_RATIO"] = "0"
    if case == "tracking server unreachable":
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    with run_gunicorn(built_model, tmp_path / "server.log", workers=1, env=env) as plain:
        response = screen(plain, [{"patient_id": "P1", "medications": ["warfarin", "aspirin"]}])
        lines = [json.loads(line) for line in plain.log_lines()]
    assert response.status_code == 200, response.text
    assert "x-mlflow-trace-id" not in response.headers
    events = {line.get("event") for line in lines}
    if case == "tracking server unreachable":
        assert "tracing_off" in events  # said, once per try, and serving went on
    else:
        assert "tracing_off" not in events
    assert ("tracing_on" in events) == (case == "not sampled")


def test_the_thread_pool_path_nests_under_the_same_root(
    built_model: Path, store: str, llm: StubServer, tmp_path: Path
) -> None:
    """Also the shutdown: the trace is read after the server stopped, within a second or two of
    the request, before MLflow's export would have sent it; without the worker's flush at
    shutdown it is lost (seen: not exported within 30 s)."""
    env = {**tracing_env(store, llm), "PHARMACY_ASYNC_PREDICT": "false"}
    children = tree(one_traced_request(built_model, store, tmp_path, env))
    (root,) = children[""]
    (predict,) = children[root.span_id]
    assert predict.name == "predict"  # MLflow's predict in a thread, then the executor's loop
    assert names(children[predict.span_id]) == ["note", "parse_rows", "screen"]
    (note,) = [s for s in children[predict.span_id] if s.name == "note"]
    assert "gemini.note" in names(children[note.span_id])


def test_an_executor_retry_is_a_second_attempt_span_in_the_same_trace(
    built_model: Path, store: str, llm: StubServer, tmp_path: Path
) -> None:
    """The worker's first prediction hits "Event loop is closed" once (the fault drill): the
    executor retries it, and the trace shows both attempts under the one root."""
    env = {**tracing_env(store, llm), "PHARMACY_FAULT_LOOP_ERRORS": "1"}
    trace = one_traced_request(built_model, store, tmp_path, env)
    children = tree(trace)
    (root,) = children[""]
    first, second = sorted(children[root.span_id], key=lambda span: span.start_time_ns)
    assert (first.name, second.name) == ("apredict", "apredict")
    assert first.status.status_code.value == "ERROR"
    assert "Event loop is closed" in first.status.description
    assert second.status.status_code.value == "OK"
    assert "note" in names(children[second.span_id])
    assert trace.info.state.value == "OK"


@pytest.mark.parametrize("backend", ["gemini", "openai", "anthropic"])
def test_each_backend_writes_its_llm_span_and_predict_is_a_root_of_its_own(
    built_model: Path, store: str, llm: StubServer, backend: str
) -> None:
    """The model alone (no server): ``predict`` opens the trace. Medication names kept on
    request (PHARMACY_TRACE_MEDICATIONS), patient ids never."""
    env = {**tracing_env(store, llm, backend), "PHARMACY_TRACE_MEDICATIONS": "true"}
    rows = [{"patient_id": PATIENT, "medications": MEDICATIONS, "question": QUESTION}]
    answer = run_traced(built_model, ["predict"], env, json.dumps(rows))
    assert answer["predictions"][0]["note_source"] == "llm"
    trace = read_trace(store, answer["trace_id"])
    children = tree(trace)
    (root,) = children[""]
    assert root.name == "predict"
    assert root.attributes["pharmacy.backend"] == backend
    llm_span = next(s for s in trace.data.spans if s.span_type == "LLM")
    assert llm_span.name == f"{backend}.note"
    assert llm_span.attributes["mlflow.llm.provider"] == backend
    assert llm_span.attributes["mlflow.chat.tokenUsage"]["output_tokens"] > 0
    assert "warfarin" in llm_span.inputs["prompt"].lower()  # kept: the setting allows it
    exported = trace.to_json()
    assert PATIENT not in exported
    assert QUESTION not in exported


def test_a_bad_sampling_ratio_is_refused_when_the_model_loads(
    built_model: Path, store: str, llm: StubServer
) -> None:
    env = {**tracing_env(store, llm), "MLFLOW_TRACE_SAMPLING_RATIO": "2"}
    with pytest.raises(RuntimeError, match=r"MLFLOW_TRACE_SAMPLING_RATIO='2' is invalid"):
        run_traced(
            built_model,
            ["predict"],
            env,
            json.dumps([{"patient_id": "P", "medications": ["warfarin"]}]),
        )


def test_mlflow_models_serve_gets_a_trace_per_request(
    built_model: Path, store: str, llm: StubServer, tmp_path: Path
) -> None:
    env = {**tracing_env(store, llm), "MLFLOW_EXPERIMENT_NAME": "pharmacy-tests-mlflow-serve"}
    client = MlflowClient(tracking_uri=store)
    with run_mlflow_serve(built_model, tmp_path / "serve.log", env=env) as base:
        for n in range(2):
            response = httpx.post(
                f"{base}/invocations",
                json={"dataframe_records": [{"patient_id": f"S{n}", "medications": MEDICATIONS}]},
                timeout=60,
            )
            assert response.status_code == 200, response.text
        experiment = client.get_experiment_by_name("pharmacy-tests-mlflow-serve")
        assert experiment is not None
        deadline = time.monotonic() + 30
        while len(traces := client.search_traces(locations=[experiment.experiment_id])) < 2:
            assert time.monotonic() < deadline, f"{len(traces)} traces exported, expected 2"
            time.sleep(0.2)
    assert len(traces) == 2
    for trace in traces:
        children = tree(trace)
        (root,) = children[""]
        assert root.name == "predict"
        assert any(s.span_type == "LLM" for s in trace.data.spans)


def test_a_thousand_timed_out_predictions_leave_no_span_open(
    built_model: Path, store: str, llm: StubServer
) -> None:
    """Every prediction's deadline (20 ms) passes while its LLM call waits (1 s): each trace
    must still end and be exported, and none may stay in memory."""
    previous = llm.config
    llm.config = StubConfig(latency_ms=1000, seed=5)
    try:
        report = run_traced(
            built_model,
            ["timeouts", "1000"],
            {**tracing_env(store, llm), "MLFLOW_EXPERIMENT_NAME": "pharmacy-tests-timeouts"},
        )
    finally:
        llm.config = previous
    assert report["outcomes"] == {"timeout": 1000}
    assert report["traces_in_memory"] == 0
    assert report["masking_entries"] == 0  # the masking processor forgot each request's values
    # What MLflow's and OpenTelemetry's code holds does not grow with the requests: 800 traces
    # left open would hold several megabytes.
    assert report["held_after_all"] - report["held_after_200"] < 256 * 1024, report
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("pharmacy-tests-timeouts")
    assert experiment is not None
    exported = client.search_traces(
        locations=[experiment.experiment_id], max_results=1000, include_spans=False
    )
    assert len(exported) == 1000
    assert {trace.info.state.value for trace in exported} == {"ERROR"}
