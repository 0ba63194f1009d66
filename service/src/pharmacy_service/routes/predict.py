"""The prediction routes: MLflow's scoring protocol and the typed screening API. They move
bytes in and out; the handler parses, admits, predicts and shapes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from ..errors import ServingError
from ..handler import media_type
from ..model.pipeline import Slices
from ..schemas import ScreenRequest, ScreenResponse
from ..settings import Settings
from .dependencies import Scorer, State, authorize

__all__ = ["read_body", "router"]

router = APIRouter(tags=["predict"], dependencies=[Depends(authorize)])


@router.post(
    "/invocations",
    summary="MLflow scoring protocol (dataframe_split, dataframe_records, instances, inputs; JSON or CSV)",
)
async def invocations(request: Request, state: State, scorer: Scorer) -> Response:
    body = await read_body(request, state.settings)
    with scorer.admitted():
        data, params = scorer.parse_invocations(body, request.headers.get("content-type"))
        predictions = await scorer.predict(data, params)
    return Response(await _predictions_json(predictions), media_type="application/json")


@router.post(
    "/v1/screen",
    response_model=ScreenResponse,
    summary="Screen patients' medications for interactions",
)
async def screen(request: Request, state: State, scorer: Scorer) -> ScreenResponse:
    if media_type(request.headers.get("content-type")) != "application/json":
        raise ServingError(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json.")
    body = await read_body(request, state.settings)
    with scorer.admitted():
        try:
            payload = ScreenRequest.model_validate_json(body)
        except ValueError as exc:
            raise RequestValidationError(getattr(exc, "errors", lambda: [])()) from exc
        import pandas as pd

        rows = pd.DataFrame([p.model_dump() for p in payload.patients])
        return ScreenResponse(results=await scorer.predict(rows, None))


async def read_body(request: Request, settings: Settings) -> bytes:
    """The body, read before the request is admitted, so that an upload that stalls holds no
    predict slot: 413 as soon as it is known to be larger than ``max_body_bytes``, 408 when it
    has not all arrived within ``body_read_timeout`` seconds (uvicorn has no such timeout).
    The 408 closes the connection, since the rest of the body may still be on its way."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServingError(413, "PAYLOAD_TOO_LARGE", f"The body is larger than {limit} bytes.")
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_read_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServingError(
                        413, "PAYLOAD_TOO_LARGE", f"The body is larger than {limit} bytes."
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise ServingError(
            408,
            "REQUEST_TIMEOUT",
            f"The request body did not all arrive within {settings.body_read_timeout:g} "
            "seconds; send the request again.",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


async def _predictions_json(predictions: list[Any]) -> str:
    """``{"predictions": [...]}``, one row at a time, yielding the loop every 5 ms: a large
    answer (tens of megabytes) written in one ``json.dumps`` held every other request of the
    worker for most of a second."""
    parts: list[str] = []
    slices = Slices()
    for prediction in predictions:
        parts.append(json.dumps(prediction))
        await slices.tick()
    return '{"predictions": [' + ", ".join(parts) + "]}"
