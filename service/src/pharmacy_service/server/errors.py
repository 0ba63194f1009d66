"""Serving errors and their HTTP mapping: the one place where exceptions become statuses."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from modelhub.serving import ExecutorClosedError, ExecutorTimeoutError, is_loop_error

from ..model.errors import (
    InvalidInputError,
    LimitExceededError,
    LLMUnavailableError,
    MalformedInputError,
)

__all__ = ["ServingError", "client_disconnected", "to_serving_error"]

logger = logging.getLogger(__name__)


@dataclass
class ServingError(Exception):
    """An error with its HTTP status and a JSON body (``error_code`` as MLflow's server uses)."""

    status: int
    error_code: str
    message: str
    field: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def body(self, request_id: str | None) -> dict[str, object]:
        body: dict[str, object] = {"error_code": self.error_code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if request_id is not None:
            body["request_id"] = request_id
        return body


def bad_request(message: str) -> ServingError:
    return ServingError(400, "BAD_REQUEST", message)


def unprocessable(message: str, field: str | None = None) -> ServingError:
    return ServingError(422, "INVALID_INPUT", message, field)


def client_disconnected() -> ServingError:
    """The client closed the connection before its request arrived: nobody reads the answer,
    and it is not a server fault. 499 is the status proxies record for it (nginx)."""
    return ServingError(
        499, "CLIENT_DISCONNECTED", "The client closed the connection before its body arrived."
    )


def to_serving_error(exc: BaseException) -> ServingError:
    """Map any exception raised while answering a request to its HTTP error."""
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, MalformedInputError):
        return ServingError(400, "BAD_REQUEST", str(exc), exc.field)
    if isinstance(exc, LimitExceededError):
        return ServingError(413, "LIMIT_EXCEEDED", str(exc), exc.field)
    if isinstance(exc, InvalidInputError):
        return unprocessable(str(exc), exc.field)
    if isinstance(exc, ExecutorTimeoutError):
        return ServingError(
            504, "TIMEOUT", "The prediction did not finish in time and was cancelled."
        )
    if isinstance(exc, ExecutorClosedError):  # the worker is shutting down: try another
        return ServingError(
            503,
            "SHUTTING_DOWN",
            "This worker is shutting down; retry the request.",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, LLMUnavailableError):
        if exc.kind == "timeout":
            return ServingError(504, "UPSTREAM_TIMEOUT", str(exc))
        return ServingError(502, "UPSTREAM_ERROR", str(exc))
    if is_loop_error(exc):  # the executor retried it and logged async_failed with the traceback
        return ServingError(
            500,
            "EVENT_LOOP_ERROR",
            f"An event-loop error persisted after every attempt ({exc}); it is in the server "
            "log as async_failed.",
        )
    mlflow_error = _from_mlflow(exc)
    if mlflow_error is not None:
        return mlflow_error
    logger.error(
        "model_error: predict raised %s",
        type(exc).__name__,
        exc_info=exc,
        extra={"event": "model_error"},
    )
    return ServingError(
        500, "MODEL_ERROR", "The model failed while predicting; the error is in the server log."
    )


def _from_mlflow(exc: BaseException) -> ServingError | None:
    """MLflow raises MlflowException for inputs it cannot parse or that break the signature."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return None
    if not isinstance(exc, MlflowException):
        return None
    message = str(getattr(exc, "message", exc))
    cause = exc.__cause__
    if isinstance(cause, InvalidInputError):
        return to_serving_error(cause)
    if "valid JSON" in message or "JSON formatted" in message:
        return bad_request("The request body is not valid JSON.")
    # MLflow's messages quote the whole input table, then say what is wrong after "Error:".
    reason = message.rsplit("Error:", 1)[-1] if "Error:" in message else message
    reason = " ".join(reason.split()) or "Invalid input."
    return unprocessable(reason[:500])
