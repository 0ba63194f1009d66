"""MLflow Tracing for the screening model: opt-in, one trace per request, masked before export.

On when ``MLFLOW_TRACKING_URI`` is set (``PHARMACY_TRACING=true|false`` overrides; in a Spark
task only ``PHARMACY_TRACING=true``: see :func:`wanted`), off and at no cost otherwise: :func:`span` then yields a do-nothing span and MLflow's tracer is never built.
:func:`setup` runs in each process that serves (the model's ``load_context``, which the server
calls in every worker after gunicorn forks): MLflow's export queue is a thread, and threads do
not survive a fork.

What the project writes (not MLflow's autolog, whose gemini and anthropic patches turn a
cancelled call into ``None`` and whose openai patch leaves its span open, so that the trace is
never exported): a span per step, and one LLM span per note that ends, state ERROR, when a
deadline cancels it.

Masking (:func:`mask_span`, a span processor MLflow applies as each span ends, before export):
patient ids and questions are always replaced, wherever they appear; anything that looks like a
secret too; medication names, prompts and notes unless ``PHARMACY_TRACE_MEDICATIONS=true``.
Finding a request's strings in a text (normalised matching, the mask's places) is
:mod:`.masking`'s; which strings, which fields, and when, is decided here.
The experiment is MLflow's ``MLFLOW_EXPERIMENT_NAME`` (default ``pharmacy-interaction-
screener``) or ``MLFLOW_EXPERIMENT_ID``; the sampling ratio is MLflow's
``MLFLOW_TRACE_SAMPLING_RATIO``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

from ._env import env_flag
from .masking import EVERYTHING, MASK, MAX_MASKED_VALUES, Everything, HiddenValues, Matcher
from .masking import normalised as _normalised
from .redaction import redact

__all__ = [
    "DEFAULT_EXPERIMENT",
    "MASK",
    "MAX_MASKED_VALUES",
    "current_attribute",
    "enabled",
    "fail",
    "flush",
    "hide",
    "mask_span",
    "record_usage",
    "request_span",
    "setup",
    "span",
    "tag_trace",
    "trace_id",
    "untraced",
]

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "pharmacy-interaction-screener"
CANCELLED = "cancelled"
"""A cancelled span's status description (the project's own words: never masked)."""

_ALWAYS_MASKED = frozenset({"patient_id", "question"})
"""Keys whose values never leave the process."""
_MEDICATION_KEYS = frozenset(
    {
        "medications",
        "medications_normalized",
        "interactions",
        "corrections",
        "unrecognized",
        "not_covered",
        "not_screened",
        "duplicates",
        "prompt",
        "note",
        "counseling_note",
    }
)
"""Keys that hold medication names (or text written from them): kept only when allowed."""
_SECRET = re.compile(
    r"(?:sk-(?:ant-)?[A-Za-z0-9_-]{16,}|AIza[0-9A-Za-z_-]{30,}|"
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}|(?i:api[_-]?key)[\"'=:\s]+[A-Za-z0-9._-]{8,})"
)

_state_lock = threading.Lock()
_setup_pid: int | None = None
_enabled = False
_keep_medications = False
_sampling_ratio = 1.0
_OUTSIDE, _TRACED, _NOT_SAMPLED = 0, 1, 2
_request: ContextVar[int] = ContextVar("pharmacy_trace_request", default=_OUTSIDE)
"""Whether the request this code serves is traced: decided once, at its root (the executor
copies the caller's context, so its loop sees the same answer)."""

_sensitive: dict[str, HiddenValues] = {}
"""Per trace id, from its root's start to its end: the trace's own strings (patient ids,
questions; medication names unless allowed), normalised by :func:`hide` outside the lock. The
span processor takes a snapshot of their matcher under the lock and masks outside it."""


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether tracing is asked for: ``PHARMACY_TRACING``, else ``MLFLOW_TRACKING_URI`` set,
    except in a Spark task: ``spark_udf`` sets the driver's tracking URI in every Python worker,
    MLflow's default included, so there only ``PHARMACY_TRACING=true`` turns tracing on."""
    env = os.environ if environ is None else environ
    asked = bool(env.get("MLFLOW_TRACKING_URI", "").strip()) and not _in_spark_task()
    return env_flag(env, "PHARMACY_TRACING", asked)


def _in_spark_task() -> bool:
    """Whether this code runs inside a Spark task (a pandas UDF in a Python worker)."""
    if "pyspark" not in sys.modules:  # never imports pyspark: the server does not have it
        return False
    from pyspark import TaskContext

    return TaskContext.get() is not None


RETRY_SECONDS = 30.0
"""How often a worker tries again to reach a tracking store it could not reach."""


def setup(environ: Mapping[str, str] | None = None, *, wait: float = 10.0) -> bool:
    """Turn tracing on in this process when it is asked for; idempotent per process.

    The experiment is looked up (or created) by a background thread: start-up waits for it at
    most ``wait`` seconds. A tracking store that cannot be reached (or an experiment id it does
    not have) leaves tracing off, with a warning, and serving goes on; the thread tries again
    every :data:`RETRY_SECONDS` and turns tracing on when it succeeds. Returns whether tracing
    is on now."""
    global _setup_pid, _enabled, _keep_medications, _sampling_ratio
    env = dict(os.environ if environ is None else environ)
    on = wanted(env)
    # Read (and refused when wrong) only when tracing is on: they mean nothing otherwise.
    keep = env_flag(env, "PHARMACY_TRACE_MEDICATIONS") if on else False
    ratio = _ratio(env) if on else 1.0
    with _state_lock:
        if _setup_pid == os.getpid():
            return _enabled
        _setup_pid, _enabled, _keep_medications = os.getpid(), False, keep
        _sampling_ratio = ratio
    if not on:
        return False
    # The sample is drawn here, at each request's root, so that a request not sampled opens no
    # span at all; MLflow must not draw again (it would trace ratio squared).
    if environ is None:
        os.environ.pop("MLFLOW_TRACE_SAMPLING_RATIO", None)
    import mlflow

    mlflow.tracing.configure(span_processors=[mask_span])
    if "IPython" not in sys.modules:  # a server: nobody to show traces to in a notebook cell
        mlflow.tracing.disable_notebook_display()  # type: ignore[no-untyped-call]
    first_try = threading.Event()
    threading.Thread(
        target=_connect, args=(env, first_try), name="tracing-setup", daemon=True
    ).start()
    first_try.wait(wait)
    return _enabled


def _connect(env: Mapping[str, str], first_try: threading.Event) -> None:
    """Resolve the experiment until it works, then turn tracing on."""
    global _enabled
    import mlflow

    experiment_id = env.get("MLFLOW_EXPERIMENT_ID")
    name = env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    while True:
        try:
            if experiment_id:
                mlflow.set_experiment(experiment_id=experiment_id)  # raises if it does not exist
            else:
                try:
                    mlflow.set_experiment(name)
                except Exception:  # noqa: BLE001 - another worker created it after our lookup
                    mlflow.set_experiment(name)
        except Exception as exc:  # noqa: BLE001 - any failure: serve without traces for now
            logger.warning(
                "tracing_off: the tracking store could not be set up (%s); serving without "
                "traces, trying again in %.0f s",
                redact(f"{type(exc).__name__}: {exc}"),
                RETRY_SECONDS,
                extra={"event": "tracing_off"},
            )
            first_try.set()
            time.sleep(RETRY_SECONDS)
            continue
        with _state_lock:
            _enabled = True
        logger.info(
            "tracing_on experiment=%s medications=%s",
            experiment_id or name,
            "kept" if _keep_medications else "masked",
            extra={"event": "tracing_on"},
        )
        first_try.set()
        return


def _ratio(env: Mapping[str, str]) -> float:
    raw = env.get("MLFLOW_TRACE_SAMPLING_RATIO", "").strip() or "1.0"
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(
            f"MLFLOW_TRACE_SAMPLING_RATIO={raw!r} is invalid: use a number from 0 to 1."
        )
    return ratio


def enabled() -> bool:
    return _enabled


def flush() -> None:
    """Export the traces still queued (the server calls it at shutdown)."""
    if _enabled:
        import mlflow

        mlflow.flush_trace_async_logging()


class _NoSpan:
    """What :func:`span` yields when tracing is off: every call does nothing."""

    trace_id = None

    def set_inputs(self, inputs: Any) -> None: ...
    def set_outputs(self, outputs: Any) -> None: ...
    def set_attribute(self, key: str, value: Any) -> None: ...
    def set_attributes(self, attributes: dict[str, Any]) -> None: ...
    def record_exception(self, exception: Exception) -> None: ...


NO_SPAN = _NoSpan()


@contextmanager
def _marked(state: int) -> Iterator[None]:
    token = _request.set(state)
    try:
        yield
    finally:
        _request.reset(token)


def untraced() -> AbstractContextManager[None]:
    """A request the server does not trace (tracing was off when it arrived): nothing in it
    starts a trace of its own, should tracing turn on meanwhile."""
    return _marked(_NOT_SAMPLED)


@contextmanager
def request_span(
    name: str, span_type: str = "CHAIN", attributes: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A request's root span, where the sample is drawn (``MLFLOW_TRACE_SAMPLING_RATIO``); inside
    a request already traced, an ordinary child span. A request not sampled opens no span."""
    state = _request.get()
    if not _enabled or state == _NOT_SAMPLED:
        yield NO_SPAN
        return
    if state == _TRACED:
        with span(name, span_type, attributes) as live:
            yield live
        return
    sampled = _sampling_ratio >= 1.0 or random.random() < _sampling_ratio
    with _marked(_TRACED if sampled else _NOT_SAMPLED):
        if not sampled:
            yield NO_SPAN
            return
        with span(name, span_type, attributes) as live:
            if (opened := trace_id(live)) is not None:
                with _state_lock:  # the masking processor's list for this trace, until it ends
                    _sensitive.setdefault(opened, HiddenValues())
            yield live


@contextmanager
def span(
    name: str, span_type: str = "UNKNOWN", attributes: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A child of the current span (or a root); ends with state ERROR on an exception or a
    cancellation, which is recorded as such (MLflow's own context manager records only
    ``Exception``\\ s: a cancelled span would end OK). Nothing in a request not sampled."""
    if not _enabled or _request.get() == _NOT_SAMPLED:
        yield NO_SPAN
        return
    import mlflow

    with mlflow.start_span(name, span_type=span_type, attributes=attributes) as live:
        try:
            yield live
        except asyncio.CancelledError:
            _record_cancellation(live)
            raise


def _record_cancellation(live: Any) -> None:
    from mlflow.entities import SpanEvent, SpanStatus, SpanStatusCode

    live.add_event(
        SpanEvent(  # type: ignore[abstract]  # a dataclass; mypy misreads its base
            "cancelled",
            attributes={
                "exception.type": "asyncio.CancelledError",
                "exception.message": "cancelled: the request's deadline passed, or it was "
                "cancelled",
            },
        )
    )
    live.set_status(SpanStatus(SpanStatusCode.ERROR, CANCELLED))


def trace_id(live: Any) -> str | None:
    """The trace id of a span :func:`span` yielded, or None when nothing is recorded (tracing
    off, or the trace not sampled)."""
    value = getattr(live, "trace_id", None)
    if not value or not isinstance(value, str) or not value.startswith("tr-"):
        return None
    return value


def _current() -> Any:
    """The span recorded in this context, or None (tracing off, none open, not sampled)."""
    if not _enabled or _request.get() == _NOT_SAMPLED:
        return None
    import mlflow

    return mlflow.get_current_active_span()


def hide(values: Iterable[str | None], *, medications: bool = False) -> None:
    """Mark the request's own strings for masking in the current trace: patient ids and
    questions; medication names (``medications=True``) unless they may be kept."""
    if medications and _keep_medications:
        return
    current = _current()
    if current is None or trace_id(current) is None:
        return
    # Normalised here, outside the lock: a request's strings can be long.
    strings = _normalised(values)
    with _state_lock:
        # Only while the request's trace is open: after a deadline, code still running on the
        # loop must not bring back the list its root's end dropped.
        if (known := _sensitive.get(current.trace_id)) is not None:
            known.add(strings)


def tag_trace(client_request_id: str, tags: Mapping[str, str]) -> None:
    """The current trace's client request id and tags (searchable: ``tags.`` in MLflow)."""
    if not _enabled:
        return
    import mlflow

    mlflow.update_current_trace(client_request_id=client_request_id, tags=dict(tags))


def fail(live: Any, description: str) -> None:
    """Mark a span (a request's root) ERROR without an exception: a 5xx answer."""
    if not _enabled or trace_id(live) is None:
        return
    from mlflow.entities import SpanStatus, SpanStatusCode

    live.set_status(SpanStatus(SpanStatusCode.ERROR, description))


def current_attribute(key: str, value: Any) -> None:
    """Set an attribute on the current span, if one is recorded."""
    if (current := _current()) is not None:
        current.set_attribute(key, value)


def record_usage(input_tokens: Any, output_tokens: Any, total_tokens: Any = None) -> None:
    """The LLM call's token usage on the current span (MLflow sums it into the trace's)."""
    if not (_enabled and isinstance(input_tokens, int) and isinstance(output_tokens, int)):
        return
    from mlflow.tracing.constant import SpanAttributeKey

    total = total_tokens if isinstance(total_tokens, int) else input_tokens + output_tokens
    current_attribute(
        SpanAttributeKey.CHAT_USAGE,
        {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": total},
    )


# -- masking ------------------------------------------------------------------------------------


def mask_span(span: Any) -> None:
    """The span processor: mask inputs, outputs, the project's attributes and event attributes.
    MLflow calls it as each span ends, before the trace is exported. It fails closed: if
    masking fails, the span keeps no text of the request's (:func:`_drop_text`)."""
    try:
        _mask_span(span)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the span fails closed
        # The error's type only: its message could quote what was being masked.
        logger.warning(
            "masking_failed span=%s error=%s: the span keeps no text",
            span.name,
            type(exc).__name__,
            extra={"event": "masking_failed"},
        )
        _drop_text(span)


def _drop_text(span: Any) -> None:
    """A span whose masking failed keeps its name, type, timing, MLflow's own attributes (ids,
    span type, model, token counts) and its events' names; its inputs, outputs, the project's
    attributes, every event attribute and its status description are replaced by
    :data:`MASK`. Each part on its own, so that one that fails does not keep the others."""
    from mlflow.entities import SpanStatus

    def attributes() -> None:
        for key in list(span.attributes or {}):
            if not key.startswith("mlflow."):
                span.set_attribute(key, MASK)

    def status() -> None:
        current = span.status
        if current.description and current.description != CANCELLED:
            span.set_status(SpanStatus(current.status_code, MASK))

    parts: dict[str, Callable[[], None]] = {
        "inputs": lambda: span.set_inputs(MASK),
        "outputs": lambda: span.set_outputs(MASK),
        "attributes": attributes,
        "events": lambda: _rewrite_events(span, lambda found: dict.fromkeys(found, MASK)),
        "status": status,
    }
    for part, drop in parts.items():
        try:
            drop()
        except Exception as exc:  # noqa: BLE001 - said, and the other parts are still dropped
            logger.error(
                "masking_failed span=%s part=%s error=%s: that part could not be dropped",
                span.name,
                part,
                type(exc).__name__,
                extra={"event": "masking_failed"},
            )


def _mask_span(span: Any) -> None:
    root = span.parent_id is None
    with _state_lock:  # only a snapshot here: the lock is every request's
        masking = _sensitive.pop(span.trace_id, None) if root else _sensitive.get(span.trace_id)
        matcher = masking.matcher() if masking is not None else None
    if masking is None and not root:
        # A span that ended after its request's root (code still unwinding on the loop after a
        # deadline): the request's strings are no longer known, so every text goes.
        matcher = EVERYTHING
    if span.inputs is not None:
        span.set_inputs(_mask(span.inputs, matcher))
    if span.outputs is not None:
        span.set_outputs(_mask(span.outputs, matcher))
    for key, value in (span.attributes or {}).items():
        if key.startswith("mlflow."):
            continue
        masked = _mask({key: value}, matcher)[key]
        if masked != value:
            span.set_attribute(key, masked)
    _mask_events(span, matcher)
    status = span.status
    if status is not None and status.description and status.description != CANCELLED:
        masked = _mask(status.description, matcher)
        if masked != status.description:
            from mlflow.entities import SpanStatus

            span.set_status(SpanStatus(status.status_code, masked))


def _mask(value: Any, matcher: Matcher | Everything | None) -> Any:
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if key in _ALWAYS_MASKED and item is not None:
                out[key] = MASK
            elif key in _MEDICATION_KEYS and not _keep_medications and item:
                out[key] = _summary(item)
            else:
                out[key] = _mask(item, matcher)
        return out
    if isinstance(value, list | tuple):
        return [_mask(item, matcher) for item in value]
    if isinstance(value, str):
        if matcher is not None:
            value = matcher.sub(value)
        return _SECRET.sub("[REDACTED]", redact(value))
    return value


def _summary(item: Any) -> str:
    """What a masked medication field says instead: its size, not its content."""
    if isinstance(item, str):
        return f"{MASK} ({len(item)} characters)"
    if isinstance(item, list | tuple | Mapping):
        return f"{MASK} ({len(item)} items)"
    return MASK


def _mask_events(span: Any, matcher: Matcher | Everything | None) -> None:
    """Exception messages can carry what the request held: mask the events' attributes."""
    _rewrite_events(span, lambda found: {k: _mask(v, matcher) for k, v in found.items()})


def _rewrite_events(span: Any, rewrite: Callable[[Mapping[str, Any]], dict[str, Any]]) -> None:
    """Replace each event's attributes with ``rewrite(attributes)``, before the span ends.

    Neither MLflow nor OpenTelemetry can change an event once added (OpenTelemetry makes event
    attributes immutable on purpose), and an exception's message is where a request's text
    most often lands. So this touches two private names of the OpenTelemetry SDK: the span
    MLflow's ``LiveSpan`` wraps (``_span``, an ``opentelemetry.sdk.trace.Span``) gets a new
    ``_events`` list (a ``BoundedList``), of events built with the SDK's public ``Event``. Both
    have been there through the SDK's 1.x releases, and a test checks them against the
    installed version (``tests/service/test_tracing.py``, the span whose masking fails). If
    they are gone this raises rather than pass the events by: the masking fails closed, says so
    (``masking_failed``), and that test fails on the upgrade."""
    from opentelemetry.sdk.trace import Event
    from opentelemetry.sdk.util import BoundedList

    otel: Any = span._span
    events = otel.events
    if not events:
        return
    if not isinstance(getattr(otel, "_events", None), BoundedList):
        raise RuntimeError(
            "this OpenTelemetry SDK keeps a span's events where they cannot be masked"
        )
    rebuilt = [
        Event(event.name, rewrite(event.attributes or {}), event.timestamp) for event in events
    ]
    otel._events = BoundedList.from_seq(None, rebuilt)  # the span is ending: nothing is added
