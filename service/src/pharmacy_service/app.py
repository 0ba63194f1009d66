"""The FastAPI app: ``create_app(settings)``; thin routes over :class:`ScoringHandler`."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from modelhub.serving import AsyncExecutor, ExecutorConfig, request_id_var

from . import metrics
from .errors import ServingError, to_serving_error
from .handler import ScoringHandler
from .logs import configure_logging
from .settings import Settings

__all__ = ["create_app", "create_app_from_env"]

logger = logging.getLogger(__name__)

PREDICTION_ROUTES = ("/invocations", "/v1/screen")
KNOWN_ROUTES = frozenset(
    (
        *PREDICTION_ROUTES,
        "/health/live",
        "/health/ready",
        "/ping",
        "/health",
        "/version",
        "/metrics",
    )
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# -- typed API ---------------------------------------------------------------------------------


class PatientIn(BaseModel):
    patient_id: str = Field(min_length=1, max_length=128, examples=["p-001"])
    medications: list[str] | str = Field(
        description="Names, or one comma-separated string", examples=[["Coumadin", "Advil"]]
    )
    question: str | None = Field(default=None, max_length=2000)


class ScreenRequest(BaseModel):
    patients: list[PatientIn] = Field(min_length=1, max_length=1000)


class Interaction(BaseModel):
    drug_a: str
    drug_b: str
    severity: Literal["contraindicated", "major", "moderate", "minor"]
    mechanism: str
    clinical_effect: str
    advice: str = Field(description="Advice for this pair (the rule's advice for its members)")
    rule_id: str
    basis: Literal["drug pair", "drug and class", "class pair"]
    source: str = Field(description="The label section or reference the rule follows")


class NotCovered(BaseModel):
    input: str = Field(description="The medication string as written")
    name: str = Field(description="The real drug it names, which the knowledge base does not cover")


class Correction(BaseModel):
    input: str = Field(description="The name as written")
    read_as: str = Field(description="The real drug name it was read as")
    generics: list[str]
    confidence: float


class NotScreened(BaseModel):
    input: str
    generic: str
    route: str
    reason: str


class Duplicate(BaseModel):
    generic: str
    inputs: list[str] = Field(description="The medication strings that all supply this drug")


class ResolvedBy(BaseModel):
    name: str
    method: Literal[
        "generic",
        "brand",
        "synonym",
        "product",
        "salt",
        "combination",
        "lexicon",
        "typo",
        "ambiguous",
    ]
    confidence: float
    read_as: str | None
    candidates: list[str]


class Medication(BaseModel):
    """One medication string: its parsed fields, and what the screen did with it."""

    text: str
    name: str | None
    strength: str | None
    unit: str | None
    form: str | None
    route: str | None
    frequency: str | None
    as_needed: bool
    release: str | None
    dose: str | None
    modifier: str | None
    sig: str | None
    status: Literal["screened", "not_covered", "local_route", "unrecognized"]
    generics: list[str] = Field(description="Drugs screened for interactions")
    not_covered: list[str]
    not_screened: list[str] = Field(description="Drugs in a local product (eye, ear, skin)")
    resolved_by: list[ResolvedBy]


class ScreenResult(BaseModel):
    patient_id: str
    medications_normalized: list[str] = Field(description="The drugs screened, each once")
    unrecognized: list[str]
    not_covered: list[NotCovered] = Field(description="Real drugs recognised but not covered")
    corrections: list[Correction] = Field(description="Names read as a likely misspelling")
    not_screened: list[NotScreened]
    duplicates: list[Duplicate]
    interactions: list[Interaction]
    highest_severity: Literal["contraindicated", "major", "moderate", "minor", "none"]
    counseling_note: str
    note_source: Literal["llm", "template", "fallback"]
    backend: str
    disclaimer: str
    medications: list[Medication]


class ScreenResponse(BaseModel):
    results: list[ScreenResult]


class ErrorBody(BaseModel):
    error_code: str
    message: str
    field: str | None = None
    request_id: str | None = None


# -- state -------------------------------------------------------------------------------------


class ServerState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.handler: ScoringHandler | None = None
        self.executor: AsyncExecutor | None = None
        self.model_info: dict[str, Any] = {"uri": settings.model_uri}
        self.draining = False
        self.load_error: str | None = None
        self.executor_metrics = metrics.ExecutorMetrics()


def load_model(settings: Settings) -> Any:
    import mlflow.pyfunc

    config: dict[str, Any] = {
        "llm_backend": settings.llm_backend,
        "llm_strict": settings.llm_strict,
        "inject_loop_errors": settings.fault_loop_errors,
        "inject_loop_block": settings.fault_block_loop_seconds,
    }
    return mlflow.pyfunc.load_model(settings.model_uri, model_config=config)


# -- middleware ----------------------------------------------------------------------------------


class RequestContext:
    """Request id in and out (``X-Request-ID``), metrics, and one access log line per request."""

    def __init__(self, app: FastAPI, draining: Callable[[], bool] = lambda: False) -> None:
        self.app = app  # the FastAPI app inside (routes, OpenAPI)
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        path = scope.get("path", "")
        route = path if path in KNOWN_ROUTES else "other"
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                if self.draining():  # the client should not reuse this connection
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            metrics.IN_FLIGHT.dec()
            metrics.REQUESTS.labels(route, scope.get("method", ""), str(status)).inc()
            metrics.LATENCY.labels(route).observe(elapsed)
            if route not in ("/metrics", "/health/live", "/health/ready", "/ping", "/health"):
                logger.info(
                    "request %s %s %d %.1fms",
                    scope.get("method"),
                    path,
                    status,
                    elapsed * 1000,
                    extra={
                        "event": "request",
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


# -- app ---------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> RequestContext:
    """Build the ASGI app (FastAPI inside :class:`RequestContext`). Cheap: the model is loaded
    at startup (per worker, after gunicorn forks)."""
    settings = settings if settings is not None else Settings()
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = AsyncExecutor(ExecutorConfig.from_env(), hooks=state.executor_metrics)
        AsyncExecutor.set_default(executor)  # what the model's predict uses via run_async
        state.executor = executor
        _drain_on_sigterm(state)
        try:
            model = await asyncio.to_thread(load_model, settings)
        except Exception as exc:
            state.load_error = f"{type(exc).__name__}: {exc}"
            logger.exception(
                "model_load_failed uri=%s", settings.model_uri, extra={"event": "model_load_failed"}
            )
            raise
        python_model = model.unwrap_python_model()
        pipeline = getattr(python_model, "pipeline", None)
        if pipeline is not None:
            pipeline.observer = metrics.LLMMetrics()
        state.handler = ScoringHandler(model, settings, executor)
        meta = model.metadata
        state.model_info = {
            "uri": settings.model_uri,
            "model_uuid": getattr(meta, "model_uuid", None),
            "run_id": getattr(meta, "run_id", None),
            "mlflow_version": getattr(meta, "mlflow_version", None),
            "llm_backend": settings.llm_backend,
            "predict": "apredict on the executor loop"
            if state.handler.uses_apredict
            else "predict in a thread pool",
        }
        logger.info(
            "model_loaded uri=%s predict=%s",
            settings.model_uri,
            state.model_info["predict"],
            extra={"event": "model_loaded"},
        )
        try:
            yield
        finally:
            state.draining = True
            state.handler.close()
            try:  # the LLM client's connections live on the executor's loop: close them there
                await executor.arun(python_model.aclose, timeout=5)
            except Exception:
                logger.warning("closing the model's LLM client failed", exc_info=True)
            AsyncExecutor.shutdown()

    app = FastAPI(
        title="Pharmacy interaction screener",
        version=version("pharmacy-service"),
        description="Medication-interaction screening (a screening aid, not medical advice), "
        "served with MLflow's scoring protocol and a typed API.",
        lifespan=lifespan,
        responses={
            401: {"model": ErrorBody},
            413: {"model": ErrorBody},
            415: {"model": ErrorBody},
            422: {"model": ErrorBody},
            500: {"model": ErrorBody},
            502: {"model": ErrorBody},
            503: {"model": ErrorBody},
            504: {"model": ErrorBody},
        },
    )
    app.state.server = state
    _install_error_handlers(app)

    async def authorize(request: Request) -> None:
        # async on purpose: FastAPI runs a sync dependency in its thread pool, a thread hop
        # (and up to 40 threads) per request for a few microseconds of work.
        token = settings.api_token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode(), expected
        ):
            raise ServingError(
                401,
                "UNAUTHORIZED",
                "A valid bearer token is required.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def handler() -> ScoringHandler:
        # While draining, requests that still arrive are answered (with Connection: close):
        # refusing them would lose work that this worker can still do.
        if state.handler is None:
            raise ServingError(
                503,
                "NOT_READY",
                "The model is not loaded (starting, or it failed to load).",
                headers={"Retry-After": "1"},
            )
        return state.handler

    @app.post(
        "/invocations",
        dependencies=[Depends(authorize)],
        tags=["predict"],
        summary="MLflow scoring protocol (dataframe_split, dataframe_records, instances, inputs; JSON or CSV)",
    )
    async def invocations(request: Request) -> Response:
        scorer = handler()
        with scorer.admitted():
            body = await read_body(request, settings.max_body_bytes)
            data, params = scorer.parse_invocations(body, request.headers.get("content-type"))
            predictions = await scorer.predict(data, params)
        return Response(json.dumps({"predictions": predictions}), media_type="application/json")

    @app.post(
        "/v1/screen",
        dependencies=[Depends(authorize)],
        tags=["predict"],
        response_model=ScreenResponse,
        summary="Screen patients' medications for interactions",
    )
    async def screen(request: Request) -> ScreenResponse:
        scorer = handler()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ServingError(
                415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json."
            )
        with scorer.admitted():
            body = await read_body(request, settings.max_body_bytes)
            try:
                payload = ScreenRequest.model_validate_json(body)
            except ValueError as exc:
                raise RequestValidationError(getattr(exc, "errors", lambda: [])()) from exc
            import pandas as pd

            rows = pd.DataFrame([p.model_dump() for p in payload.patients])
            return ScreenResponse(results=await scorer.predict(rows, None))

    @app.get("/health/live", tags=["health"], summary="Process and executor loop responsive")
    async def live() -> JSONResponse:
        executor = state.executor
        if executor is None:
            return JSONResponse({"status": "starting"}, status_code=503)

        async def noop() -> None:
            return None

        try:
            await asyncio.wait_for(executor.arun(noop), 2.0)
        except Exception:  # noqa: BLE001 - any failure means the loop is not serving
            return JSONResponse(
                {"status": "unresponsive", "loop_lag_seconds": executor.loop_lag}, status_code=503
            )
        return JSONResponse({"status": "ok", "loop_lag_seconds": round(executor.loop_lag, 4)})

    async def ready() -> JSONResponse:
        problems = []
        if state.handler is None:
            problems.append(state.load_error or "model not loaded")
        if state.draining:
            problems.append("draining")
        if state.executor is None or state.executor.closed:
            problems.append("executor closed")
        elif state.executor.loop_lag > 5.0:
            problems.append(f"executor loop {state.executor.loop_lag:.1f} s late")
        if problems:
            return JSONResponse(
                {"status": "not ready", "problems": problems},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse({"status": "ready"})

    for path in ("/health/ready", "/ping", "/health"):
        app.add_api_route(
            path,
            ready,
            methods=["GET"],
            tags=["health"],
            summary="Model loaded, executor healthy, not draining (MLflow-compatible alias)"
            if path != "/health/ready"
            else "Model loaded, executor healthy, not draining",
        )

    @app.get("/version", tags=["health"])
    async def version_info() -> dict[str, Any]:
        return {
            "service": version("pharmacy-service"),
            "sdk": version("modelhub-sdk"),
            "mlflow": version("mlflow-skinny"),
            "model": state.model_info,
        }

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def prometheus() -> Response:
        if state.executor is not None:  # a loop blocked right now reports no lag by itself
            state.executor_metrics.on_loop_lag(state.executor.loop_lag)
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)

    return RequestContext(app, draining=lambda: state.draining)


def create_app_from_env() -> RequestContext:
    """gunicorn's entry point: settings from the environment, logging configured once."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    # What loading the model imports (about 4 s): under gunicorn's preload_app this runs once,
    # in the master, and every worker forks with it. No thread is started by these imports.
    import google.genai  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    import pandas  # noqa: F401

    return create_app(settings)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServingError(413, "PAYLOAD_TOO_LARGE", f"The body is larger than {limit} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServingError(413, "PAYLOAD_TOO_LARGE", f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _install_error_handlers(app: FastAPI) -> None:
    def respond(error: ServingError) -> JSONResponse:
        return JSONResponse(
            error.body(request_id_var.get()), status_code=error.status, headers=error.headers
        )

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        message = (
            f"{where}: {first.get('msg')}" if where else str(first.get("msg", "Invalid request."))
        )
        if first.get("type") == "json_invalid":
            return respond(ServingError(400, "BAD_REQUEST", "The request body is not valid JSON."))
        return respond(ServingError(422, "INVALID_INPUT", message, where))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return respond(to_serving_error(exc))


def _drain_on_sigterm(state: ServerState) -> None:
    """On SIGTERM: readiness turns 503, the worker stops accepting connections (the other
    workers, or pods, take the new ones), and every answer carries ``Connection: close`` so that
    clients leave the connections they have; ``drain_delay`` seconds later the server's own
    handler (uvicorn's) finishes what is in flight and exits. Closing a connection at the moment
    its client sends a request is what loses requests on restarts; this leaves none to close."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # not the main thread (in-process tests): nothing to chain
        return
    loop = asyncio.get_running_loop()
    delay = state.settings.drain_delay

    def on_sigterm(signum: int, frame: Any) -> None:
        again = state.draining
        state.draining = True
        metrics.DRAINING.set(1)
        if not callable(previous):
            return
        if again or delay <= 0:  # a second SIGTERM: stop now
            previous(signum, frame)
            return
        logger.info(
            "draining: readiness is now 503, no new connections, answers close theirs; "
            "stopping in %.1f s",
            delay,
            extra={"event": "draining"},
        )
        loop.call_soon_threadsafe(_stop_accepting, previous)
        loop.call_soon_threadsafe(loop.call_later, delay, previous, signum, frame)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:
        return


def _stop_accepting(handle_exit: Any) -> None:
    """Close this worker's listening servers; the socket stays open in gunicorn's other
    processes. ``handle_exit`` is uvicorn's ``Server.handle_exit``; its server lists them."""
    for listener in getattr(getattr(handle_exit, "__self__", None), "servers", None) or []:
        listener.close()
