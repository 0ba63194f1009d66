"""MLflow's scoring protocol, ``POST /invocations`` (dataframe_split, dataframe_records,
instances, inputs; JSON or CSV): the route moves bytes in and out; the handler parses, admits,
predicts and shapes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ...model.pipeline import Slices
from .body import read_body
from .dependencies import Scorer, State, authorize

__all__ = ["router"]

router = APIRouter(tags=["mlflow"], dependencies=[Depends(authorize)])


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
