"""Health, version and metrics routes: open (no token); keep /metrics on an internal network."""

from __future__ import annotations

import asyncio
import os
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from .. import metrics
from ..lifecycle import ServerState
from .dependencies import State

__all__ = ["readiness_problems", "router"]

router = APIRouter(tags=["health"])

READY_SUMMARY = "Model loaded, executor healthy, not draining"
MAX_READY_LOOP_LAG = 5.0
"""Seconds the executor's loop may run late before the worker reports not ready."""


@router.get("/health/live", summary="Process and executor loop responsive")
async def live(state: State) -> JSONResponse:
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


def readiness_problems(state: ServerState) -> list[str]:
    """Why this worker is not ready (empty when it is): the model, draining, the executor."""
    problems = []
    if state.handler is None:
        problems.append(state.load_error or "model not loaded")
    if state.draining:
        problems.append("draining")
    if state.executor is None or state.executor.closed:
        problems.append("executor closed")
    elif state.executor.loop_lag > MAX_READY_LOOP_LAG:
        problems.append(f"executor loop {state.executor.loop_lag:.1f} s late")
    return problems


async def ready(state: State) -> JSONResponse:
    problems = readiness_problems(state)
    if problems:
        return JSONResponse(
            {"status": "not ready", "problems": problems},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return JSONResponse({"status": "ready"})


router.add_api_route("/health/ready", ready, methods=["GET"], summary=READY_SUMMARY)
for _alias in ("/ping", "/health"):
    router.add_api_route(
        _alias, ready, methods=["GET"], summary=f"{READY_SUMMARY} (MLflow-compatible alias)"
    )


@router.get("/version")
async def version_info(state: State) -> dict[str, Any]:
    """Versions of the server, the SDK, MLflow and the model; ``pid`` names the worker that
    answered."""
    return {
        "service": version("pharmacy-service"),
        "sdk": version("modelhub-sdk"),
        "mlflow": version("mlflow-skinny"),
        "model": state.model_info,
        "pid": os.getpid(),
    }


@router.get("/metrics", include_in_schema=False)
async def prometheus(state: State) -> Response:
    if state.executor is not None:  # a loop blocked right now reports no lag by itself
        state.executor_metrics.on_loop_lag(state.executor.loop_lag)
    text = await asyncio.to_thread(metrics.render)  # it reads every worker's files
    return Response(text, media_type=metrics.CONTENT_TYPE_LATEST)
