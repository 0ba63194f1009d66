"""The one mapping from exceptions to HTTP statuses: server faults are 5xx, bad input 4xx."""

from __future__ import annotations

import pytest

from modelhub.serving import ExecutorClosedError, ExecutorTimeoutError
from pharmacy_service.model.errors import InvalidInputError, LLMUnavailableError
from pharmacy_service.server.errors import to_serving_error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (
            InvalidInputError("rows[0].patient_id is required", field="rows[0]"),
            422,
            "INVALID_INPUT",
        ),
        (ExecutorTimeoutError("late"), 504, "TIMEOUT"),
        (ExecutorClosedError("closed"), 503, "SHUTTING_DOWN"),
        (LLMUnavailableError("slow", kind="timeout"), 504, "UPSTREAM_TIMEOUT"),
        (LLMUnavailableError("down", kind="upstream"), 502, "UPSTREAM_ERROR"),
        (RuntimeError("Event loop is closed"), 500, "EVENT_LOOP_ERROR"),
        (ZeroDivisionError("bug"), 500, "MODEL_ERROR"),
    ],
)
def test_each_error_maps_to_its_status(error: Exception, status: int, code: str) -> None:
    mapped = to_serving_error(error)
    assert (mapped.status, mapped.error_code) == (status, code)


def test_a_worker_shutting_down_asks_the_client_to_retry() -> None:
    assert to_serving_error(ExecutorClosedError("closed")).headers == {"Retry-After": "1"}
