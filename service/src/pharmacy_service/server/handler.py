"""The transport-free scoring handler: parse MLflow's scoring protocol, admit, predict, shape.

No FastAPI here: the routes in :mod:`pharmacy_service.server.app` only move bytes in and out.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from email.message import Message
from io import StringIO
from typing import Any

from modelhub.serving import AsyncExecutor

from . import _mlflow, metrics
from .errors import ServingError, bad_request, to_serving_error, unprocessable
from .settings import Settings

__all__ = ["ScoringHandler", "media_type"]

logger = logging.getLogger(__name__)

JSON = "application/json"
CSV = "text/csv"


class ScoringHandler:
    def __init__(self, model: Any, settings: Settings, executor: AsyncExecutor) -> None:
        self.model = model
        self.settings = settings
        self.executor = executor
        self.python_model: Any = model.unwrap_python_model()
        self.uses_apredict = settings.async_predict and callable(
            getattr(self.python_model, "apredict", None)
        )
        self._pool = ThreadPoolExecutor(settings.predict_threads, thread_name_prefix="predict")
        self._admitted = 0  # touched only on the event loop's thread
        self.input_schema = model.metadata.get_input_schema()
        self._params_schema = model.metadata.get_params_schema()
        self.output_schema = model.metadata.get_output_schema()

    def rows_for_model(self, rows: list[dict[str, Any]]) -> Any:
        """Decoded rows as this model takes them: the list itself for ``apredict`` (it checks
        its rows), a DataFrame for ``predict`` (MLflow enforces the signature on it)."""
        if self.uses_apredict:
            return rows
        import pandas as pd

        return pd.DataFrame(rows)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- parsing ----------------------------------------------------------------------------

    def parse_invocations(
        self, body: bytes, content_type: str | None
    ) -> tuple[Any, dict[str, Any] | None]:
        """MLflow's scoring protocol: JSON parsed by MLflow's own code (same accepted inputs),
        CSV read as MLflow reads it but with every cell the string it is (:func:`_read_csv`)."""
        mime = media_type(content_type)
        if mime not in (JSON, CSV):
            raise ServingError(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"Content-Type must be {JSON} or {CSV}, not {content_type or 'missing'!r}.",
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("The request body is not valid UTF-8.") from None
        try:
            if mime == JSON:
                try:
                    payload = json.loads(text)
                except ValueError:
                    payload = None  # MLflow's parser says what is wrong with it
                _refuse_unknown_keys(payload)
                fast = _records_without_pandas(payload) if self.uses_apredict else None
                if fast is not None:
                    return fast[0], self.check_params(fast[1])
            if mime == CSV:
                return _read_csv(text), None
            try:
                parsed = _mlflow.parse_json_data(text, self.model.metadata, self.input_schema)
            except (TypeError, KeyError, IndexError, AttributeError) as exc:
                # MLflow's parser fails this way only on a body it cannot take apart (a column
                # named by an object, say): the body is at fault, not the server.
                raise bad_request(
                    "The body is not in a form of MLflow's scoring protocol "
                    f"({type(exc).__name__}: {str(exc)[:200]})."
                ) from None
        except RecursionError:
            raise bad_request("The JSON body is nested too deeply.") from None
        except ServingError:
            raise
        except Exception as exc:
            raise to_serving_error(exc) from exc
        return parsed.data, self.check_params(parsed.params)

    def check_params(self, params: Any) -> dict[str, Any] | None:
        """``params`` against the model's params schema (MLflow's check, types converted), and
        ``timeout`` (seconds) must not be negative: errors name the parameter (422)."""
        if params is None:
            return None
        if not isinstance(params, dict):
            raise ServingError(422, "INVALID_INPUT", "'params' must be an object.", "params")
        if self._params_schema is not None:
            try:
                params = _mlflow.enforce_params_schema(params, self._params_schema)
            except Exception as exc:
                raise to_serving_error(exc) from exc
        timeout = params.get("timeout")
        if timeout is not None and not (isinstance(timeout, int | float) and 0 <= timeout < 1e9):
            raise ServingError(
                422,
                "INVALID_INPUT",
                f"params.timeout must be a number of seconds, 0 or more (0: the server's "
                f"limit), not {timeout!r}.",
                "params.timeout",
            )
        return dict(params)

    # -- predicting -------------------------------------------------------------------------

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Admit a request (parse, predict) or shed it with 503 before it is parsed: a shed
        request costs as little as possible, so that shedding itself cannot overload. Enter it
        after the body has been read (the routes' ``read_body``, bounded in size and time): a
        slot held while a body is awaited could be held by an upload that never arrives."""
        if self._admitted >= self.settings.capacity:
            metrics.SHED.inc()
            raise ServingError(
                503,
                "OVERLOADED",
                "The server is at capacity; retry shortly.",
                headers={"Retry-After": "1"},
            )
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def _acquire(self) -> None:
        self._admitted += 1
        metrics.QUEUE_DEPTH.set(max(0, self._admitted - self.settings.predict_threads))

    def _release(self) -> None:
        self._admitted -= 1
        metrics.QUEUE_DEPTH.set(max(0, self._admitted - self.settings.predict_threads))

    def _hold_until_done(self, work: Future[Any]) -> None:
        """Keep one admission slot taken until ``work`` (a predict thread that outlived its
        request) returns: a thread cannot be stopped, and while it runs it still takes a
        predict thread, so the server must not admit as if it had finished."""
        loop = asyncio.get_running_loop()
        self._acquire()

        def release(_: Future[Any]) -> None:
            with suppress(RuntimeError):  # the loop closed first: nothing is left to admit
                loop.call_soon_threadsafe(self._release)

        work.add_done_callback(release)

    async def predict(self, data: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Run the model within one deadline: the server's request timeout, or the request's
        ``params.timeout`` when that is shorter. Call it inside :meth:`admitted`. A deadline
        that passes before the model starts (a tiny ``params.timeout``) answers 504 too."""
        seconds = self.settings.request_timeout
        if params and params.get("timeout"):
            seconds = min(seconds, float(params["timeout"]))
        deadline = time.monotonic() + seconds
        try:
            if self.uses_apredict:
                return await self._predict_async(data, params, deadline)
            return await self._predict_in_thread(data, params, deadline)
        except ServingError:
            raise
        except Exception as exc:
            raise to_serving_error(exc) from exc

    async def _predict_async(
        self, data: Any, params: dict[str, Any] | None, deadline: float
    ) -> list[Any]:
        if not isinstance(data, list):  # a DataFrame from MLflow's parser: enforce its schema
            data, params = _mlflow.validate_prediction_input(
                data, params, self.input_schema, self._params_schema
            )
        result: list[Any] = await self.executor.arun(
            self.python_model.apredict, data, params, timeout=_remaining(deadline)
        )
        return result

    async def _predict_in_thread(
        self, data: Any, params: dict[str, Any] | None, deadline: float
    ) -> list[Any]:
        remaining = _remaining(deadline)
        params = {**(params or {}), "timeout": remaining}
        context = contextvars.copy_context()  # the request id follows into the thread
        work = self._pool.submit(context.run, self.model.predict, data, params)
        waiter = asyncio.wrap_future(work)
        try:
            # The model's own deadline (params["timeout"]) cancels its work; this one is the
            # safety net for a predict that never returns. asyncio.wait leaves the work alone.
            done, _ = await asyncio.wait({waiter}, timeout=remaining + 1.0)
        finally:
            # Still queued: it never starts. Running (or this request was cancelled): its slot
            # stays taken until the thread really returns.
            if not work.done() and not work.cancel():
                self._hold_until_done(work)
            waiter.cancel()  # nobody waits for its outcome any more
        if not done:
            raise ServingError(504, "TIMEOUT", "The prediction did not finish in time.")
        # predict answers a table (so that every MLflow consumer can encode it); the
        # protocols write rows, as MLflow's scoring server does.
        result: list[Any] = _mlflow.jsonable(work.result())
        return result


def _read_csv(text: str) -> Any:
    """A CSV body as a table, read with pandas' defaults as MLflow's scoring server reads it,
    except that every cell is kept as the string it is: a patient id such as ``00123`` or
    ``NA`` is an id, not the number 123 nor a missing value. Only an empty cell is missing
    (as ``null`` in JSON), so that the model still names a required value left out."""
    import pandas as pd

    try:
        return pd.read_csv(StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except ValueError as exc:  # pandas' ParserError and EmptyDataError
        raise bad_request(f"The CSV body could not be read: {str(exc)[:200]}") from None


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header, lower case, read as HTTP says (RFC 9110:
    parameter values may be quoted; names and the charset are case-blind), by the standard
    library's header parser. The only parameter accepted is ``charset``, and it must be UTF-8:
    anything else is 415."""
    header = Message()
    header["content-type"] = content_type or ""
    for key, value in header.get_params(failobj=[])[1:]:
        if key.lower() != "charset" or not value:
            raise ServingError(
                415, "UNSUPPORTED_MEDIA_TYPE", f"Unsupported content type parameter {key!r}."
            )
        if str(value).strip().lower() not in ("utf-8", "utf8"):
            raise ServingError(415, "UNSUPPORTED_MEDIA_TYPE", "Only UTF-8 bodies are accepted.")
    if not content_type or "/" not in content_type.partition(";")[0]:
        return ""
    return header.get_content_type()


def _remaining(deadline: float) -> float:
    """Seconds left before ``deadline``; a deadline already past is a 504 (the request asked
    for less time than it took to get here), never a negative timeout."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ServingError(
            504, "TIMEOUT", "The request's deadline passed before the prediction started."
        )
    return remaining


_FORMATS = ("dataframe_records", "dataframe_split", "instances", "inputs")


def _refuse_unknown_keys(payload: Any) -> None:
    """A key beside the protocol's own (MLflow's parser ignores it): 422 naming it, whichever
    path parses the rest."""
    if not isinstance(payload, dict) or not set(payload) & set(_FORMATS):
        return
    unknown = sorted(map(str, set(payload) - {*_FORMATS, "params"}))
    if unknown:
        raise unprocessable(
            f"unknown key(s) {unknown} in the body: expected one of {', '.join(_FORMATS)}, "
            "and params",
            unknown[0],
        )


def _records_without_pandas(
    payload: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None] | None:
    """The common JSON shapes of MLflow's protocol turned into row dicts without pandas, for a
    model that validates its own rows (apredict). Returns None for anything unusual, which then
    goes through MLflow's own parser, so the accepted inputs stay the same."""
    if not isinstance(payload, dict) or set(payload) - {*_FORMATS, "params"}:
        return None
    keys = [k for k in _FORMATS if k in payload]
    params = payload.get("params")
    if len(keys) != 1 or not (params is None or isinstance(params, dict)):
        return None
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(data, dict) or set(data) - {"columns", "data"}:
            return None
        columns, values = data.get("columns"), data.get("data")
        if not (isinstance(columns, list) and isinstance(values, list)):
            return None
        for i, column in enumerate(columns):
            if not isinstance(column, str):  # MLflow's parser drops or trips over it
                raise unprocessable(
                    f"dataframe_split.columns[{i}] must be a column name (a string), not "
                    f"{json.dumps(column)[:50]}",
                    f"dataframe_split.columns[{i}]",
                )
        if not all(isinstance(v, list) and len(v) == len(columns) for v in values):
            return None
        return [dict(zip(columns, v, strict=True)) for v in values], params
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return data, params
    if keys[0] in ("inputs", "instances") and isinstance(data, dict) and data:
        columns = list(data.values())
        if all(isinstance(c, list) for c in columns) and len({len(c) for c in columns}) == 1:
            return [dict(zip(data, row, strict=True)) for row in zip(*columns, strict=True)], params
    return None
