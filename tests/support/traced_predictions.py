"""The saved model with tracing on, in a fresh process (tracing is set up once per process):

- ``python -m tests.support.traced_predictions MODEL predict``: rows as JSON on stdin; prints
  the predictions and the id of the trace ``predict`` opened (it is the root: no server here);
- ``python -m tests.support.traced_predictions MODEL late``: a request whose LLM span ends after
  its root (as one still unwinding after a deadline does); prints that trace's id;
- ``python -m tests.support.traced_predictions MODEL timeouts N``: N predictions whose deadline
  passes while their LLM calls wait, from 20 threads; prints how they ended, the traces still
  held in memory, and how much memory MLflow's and OpenTelemetry's code holds after the first
  200 and after all N.
- ``python -m tests.support.traced_predictions MODEL contention``: a request with 500 questions
  of 2,000 characters to mask ends a span while another request, in another thread, starts and
  marks its own strings; prints whether that other request had to wait for the masking.
- ``python -m tests.support.traced_predictions MODEL unmaskable``: a span whose masking fails,
  with the patient's id in its inputs, an attribute, an exception and its status; prints the
  trace's id and what the masking logged.

The environment says where traces go (``MLFLOW_TRACKING_URI``) and where the LLM is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROW = {"patient_id": "P-LEAK-1", "medications": ["warfarin", "aspirin"]}


def run_traced(model: Path, args: list[str], env: dict[str, str], stdin: str = "") -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.traced_predictions", str(model), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"traced process failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _held_by_tracing(snapshot: tracemalloc.Snapshot) -> int:
    kept = snapshot.filter_traces(
        [
            tracemalloc.Filter(True, "*/mlflow/*"),
            tracemalloc.Filter(True, "*/opentelemetry/*"),
        ]
    )
    return sum(stat.size for stat in kept.statistics("filename"))


def _timeouts(model: Any, count: int) -> dict[str, Any]:
    import pandas as pd
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    from modelhub.serving import AsyncExecutor
    from pharmacy_service.model import tracing

    def one(_: int) -> str:
        try:
            model.predict(pd.DataFrame([ROW]), params={"timeout": 0.02})
        except TimeoutError:
            return "timeout"
        except Exception as exc:  # noqa: BLE001 - counted and reported by kind
            return type(exc).__name__
        return "ok"

    outcomes: Counter[str] = Counter()
    tracemalloc.start()
    with ThreadPoolExecutor(20) as pool:
        outcomes.update(pool.map(one, range(200)))
        warm = _held_by_tracing(tracemalloc.take_snapshot())
        outcomes.update(pool.map(one, range(count - 200)))
    import mlflow

    mlflow.flush_trace_async_logging()
    after = _held_by_tracing(tracemalloc.take_snapshot())
    AsyncExecutor.run_async(model.unwrap_python_model().aclose)

    def held() -> tuple[int, int]:
        traces = InMemoryTraceManager.get_instance()._traces  # type: ignore[no-untyped-call]
        return len(traces), len(tracing._sensitive)

    # The last predictions' cancelled work ends its spans on the executor's loop a moment after
    # their callers got TimeoutError (on a loaded machine, after this point): wait up to 10 s
    # for the count to settle. A trace that is never ended stays counted and fails the test.
    settle = time.monotonic() + 10
    while any(held()) and time.monotonic() < settle:
        time.sleep(0.05)
    traces_in_memory, masking_entries = held()
    return {
        "outcomes": dict(outcomes),
        "traces_in_memory": traces_in_memory,
        "masking_entries": masking_entries,
        "held_after_200": warm,
        "held_after_all": after,
    }


def _late_child() -> str | None:
    """A root that ends while its child span, started in another thread (the executor's loop,
    in the server), is still open; the child writes the patient's id after the root ended."""
    import contextvars
    import threading

    from pharmacy_service.model import tracing

    started, root_ended = threading.Event(), threading.Event()

    def child() -> None:
        with tracing.span("late.note", "LLM") as late:
            started.set()
            root_ended.wait(30)
            late.set_inputs({"prompt": f"Patient reference: {ROW['patient_id']}"})
            late.set_attribute("pharmacy.free_text", f"written for {ROW['patient_id']}")
            late.record_exception(RuntimeError(f"failed for {ROW['patient_id']}"))

    with tracing.request_span("late-root") as root:
        tracing.hide([str(ROW["patient_id"])])
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(child,))
        worker.start()
        started.wait(30)
    root_ended.set()
    worker.join(30)
    return tracing.trace_id(root)


def _contention() -> dict[str, Any]:
    """The masking runs in the thread that ends a span (here, this one). A profile hook watches
    it: once it has made 100 calls while holding the tracing lock, another request is let go
    (its root span and its ``hide``, both under that lock) and given 5 s to finish."""
    import contextvars
    import random
    import string
    import threading

    from pharmacy_service.model import tracing

    assert tracing.enabled(), "tracing did not turn on"
    draw = random.Random(5)
    questions = [
        "".join(draw.choices(string.ascii_letters + " ", k=2000))
        for _ in range(tracing.MAX_MASKED_VALUES)
    ]
    go, other_done = threading.Event(), threading.Event()

    def other_request() -> None:
        go.wait(60)
        with tracing.request_span("other-request"):
            tracing.hide(["P-OTHER-1"])
        other_done.set()

    report: dict[str, Any] = {"calls_under_lock": 0, "other_blocked": False}

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call") and tracing._state_lock.locked():
            report["calls_under_lock"] += 1
            if report["calls_under_lock"] == 100 and not go.is_set():
                go.set()
                report["other_blocked"] = not other_done.wait(5)

    # A fresh context: the other request is a request of its own, not a child of this one.
    other = threading.Thread(target=contextvars.Context().run, args=(other_request,))
    other.start()
    with tracing.request_span("large-request") as root:
        tracing.hide(questions)
        with tracing.span("child") as child:
            child.set_inputs({"text": f"asked: {questions[7]}"})
            sys.setprofile(watch)  # from here to the end of the child's masking
        sys.setprofile(None)
    go.set()
    other.join(60)
    report["other_finished"] = other_done.is_set()
    report["trace_id"] = tracing.trace_id(root)
    report["question"] = questions[7]
    return report


def _unmaskable() -> dict[str, Any]:
    """A real failure of the masking: an attribute nested deeper than it can follow (MLflow
    stores it, as JSON; masking it recurses past Python's limit)."""
    import logging

    from pharmacy_service.model import tracing

    logged: list[str] = []

    class Logged(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    logging.getLogger(tracing.__name__).addHandler(Logged(logging.WARNING))
    patient = str(ROW["patient_id"])
    nested: Any = [f"rows of {patient}"]
    for _ in range(600):
        nested = [nested]
    with tracing.request_span("unmaskable-root") as root:
        tracing.hide([patient])
        with tracing.span("unmaskable", "LLM") as child:
            child.set_inputs({"text": f"Patient reference: {patient}"})
            child.set_outputs({"text": f"written for {patient}"})
            child.set_attribute("pharmacy.rows", nested)
            child.set_attribute("pharmacy.free_text", f"written for {patient}")
            child.record_exception(RuntimeError(f"failed for {patient}"))
    return {"trace_id": tracing.trace_id(root), "logged": logged}


def main() -> None:
    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    from modelhub.serving import AsyncExecutor

    model = mlflow.pyfunc.load_model(sys.argv[1])
    if sys.argv[2] == "predict":
        predictions = model.predict(pd.DataFrame(json.load(sys.stdin))).to_dict("records")
        trace_id = mlflow.get_last_active_trace_id()
        mlflow.flush_trace_async_logging()
        AsyncExecutor.run_async(model.unwrap_python_model().aclose)
        sys.stdout.write(json.dumps({"trace_id": trace_id, "predictions": predictions}) + "\n")
    elif sys.argv[2] == "late":
        trace_id = _late_child()
        mlflow.flush_trace_async_logging()
        sys.stdout.write(json.dumps({"trace_id": trace_id}) + "\n")
    elif sys.argv[2] == "unmaskable":
        report = _unmaskable()
        mlflow.flush_trace_async_logging()
        sys.stdout.write(json.dumps(report) + "\n")
    elif sys.argv[2] == "contention":
        report = _contention()
        mlflow.flush_trace_async_logging()
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(json.dumps(_timeouts(model, int(sys.argv[3]))) + "\n")


if __name__ == "__main__":
    main()
