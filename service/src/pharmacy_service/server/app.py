"""The app factory: ``create_app(settings)`` assembles the protocols (:mod:`.protocols`), the
middleware (:mod:`.middleware`), the lifespan (:mod:`.lifecycle`) and the error mapping
(:mod:`.errors`); ``create_app_from_env`` is gunicorn's entry point."""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from modelhub.serving import request_id_var

from . import metrics, protocols
from .errors import ServingError, client_disconnected, to_serving_error
from .lifecycle import ServerState, lifespan
from .logs import configure_logging
from .middleware import RequestContext, route_label
from .protocols.v2.routes import PREFIX as V2_PREFIX
from .schemas import ErrorBody, ScreenRequest
from .settings import Settings

__all__ = ["create_app", "create_app_from_env"]

logger = logging.getLogger(__name__)

ERROR_STATUSES = (400, 401, 408, 413, 415, 422, 500, 502, 503, 504)


def create_app(settings: Settings | None = None) -> RequestContext:
    """Build the ASGI app (FastAPI inside :class:`RequestContext`). Cheap: the model is loaded
    at startup (per worker, after gunicorn forks)."""
    settings = settings if settings is not None else Settings()
    state = ServerState(settings)
    app = FastAPI(
        title="Pharmacy interaction screener",
        version=version("pharmacy-service"),
        description="Medication-interaction screening (a screening aid, not medical advice), "
        "served with MLflow's scoring protocol and a typed API.",
        lifespan=lifespan(state),
        responses={status: {"model": ErrorBody} for status in ERROR_STATUSES},
    )
    app.state.server = state
    _describe_bodies(app)
    for router in protocols.ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    return RequestContext(
        app,
        draining=lambda: state.draining,
        trace_tags={"pharmacy.backend": settings.llm_backend},
    )


def create_app_from_env() -> RequestContext:
    """gunicorn's entry point: settings from the environment, logging configured once."""
    settings = Settings()
    # What loading the model imports: under gunicorn's preload_app this runs once, in the
    # master, and every worker forks with it. No thread is started by these imports. Before
    # logging is configured: mlflow sets up its own logger when imported, and ours replaces it.
    import google.genai  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    import pandas  # noqa: F401

    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def _describe_bodies(app: FastAPI) -> None:
    """Register the schemas of the bodies routes read themselves (``/v1/screen`` reads and
    validates its body after the upload and before admission), so the OpenAPI document
    describes every POST's request body."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            schema = ScreenRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components["ScreenRequest"] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI) -> None:
    def respond(error: ServingError, request: Request | None = None) -> JSONResponse:
        if request is not None and request.url.path.startswith(V2_PREFIX + "/"):
            # The Open Inference Protocol's error: {"error": "..."}; it has no 422.
            status = 400 if error.status == 422 else error.status
            return JSONResponse({"error": error.message}, status_code=status, headers=error.headers)
        return JSONResponse(
            error.body(request_id_var.get()), status_code=error.status, headers=error.headers
        )

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return respond(exc, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        message = (
            f"{where}: {first.get('msg')}" if where else str(first.get("msg", "Invalid request."))
        )
        if first.get("type") == "json_invalid":
            return respond(
                ServingError(400, "BAD_REQUEST", "The request body is not valid JSON."), request
            )
        return respond(ServingError(422, "INVALID_INPUT", message, where), request)

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Not a server error: counted apart, logged at INFO; nobody reads the answer.
        route = route_label(request.url.path)
        metrics.CLIENT_DISCONNECTS.labels(route).inc()
        logger.info(
            "client_disconnected: %s %s",
            request.method,
            route,
            extra={"event": "client_disconnected"},
        )
        return respond(client_disconnected(), request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return respond(to_serving_error(exc), request)
