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


_ROW = {
    "type": "object",
    "required": ["patient_id", "medications"],
    "properties": {
        "patient_id": {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"\S"},
                {"type": "integer"},
            ]
        },
        "medications": {
            "description": "a list of medication strings, or one string separated by commas",
            "anyOf": [
                {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 50},
                {"type": "string"},
            ],
        },
        "question": {"type": ["string", "null"], "maxLength": 2000},
    },
}
_PARAMS = {
    "type": ["object", "null"],
    "properties": {"timeout": {"type": ["number", "null"], "minimum": 0, "description": "seconds"}},
}
_INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["dataframe_records"],
                            "properties": {
                                "dataframe_records": {
                                    "type": "array",
                                    "items": _ROW,
                                    "minItems": 1,
                                    "maxItems": 1000,
                                },
                                "params": _PARAMS,
                            },
                            "additionalProperties": False,
                        },
                        {
                            "type": "object",
                            "required": ["dataframe_split"],
                            "properties": {
                                "dataframe_split": {
                                    "type": "object",
                                    "required": ["columns", "data"],
                                    "properties": {
                                        "columns": {"type": "array", "items": {"type": "string"}},
                                        "data": {"type": "array", "items": {"type": "array"}},
                                        "index": {"type": "array"},
                                    },
                                    "additionalProperties": False,
                                },
                                "params": _PARAMS,
                            },
                            "additionalProperties": False,
                        },
                        {
                            "type": "object",
                            "required": ["instances"],
                            "properties": {
                                "instances": {"type": "array", "items": _ROW, "minItems": 1},
                                "params": _PARAMS,
                            },
                            "additionalProperties": False,
                        },
                        {
                            "type": "object",
                            "required": ["inputs"],
                            "properties": {
                                "inputs": {
                                    "type": "object",
                                    "description": "columns: each a list, one value per row",
                                },
                                "params": _PARAMS,
                            },
                            "additionalProperties": False,
                        },
                    ]
                },
                "example": {
                    "dataframe_records": [
                        {"patient_id": "p1", "medications": ["Coumadin 5 mg", "Advil 400 mg"]}
                    ]
                },
            },
            "text/csv": {
                "schema": {
                    "type": "string",
                    "description": "a header of patient_id, medications (and question), then "
                    "one row per patient; medications separated by commas inside quotes",
                    "pattern": r"^patient_id,medications\n[A-Za-z0-9]{1,20},[A-Za-z]{1,30}\n$",
                },
                "example": 'patient_id,medications\np2,"Zocor, Biaxin"\n',
            },
        },
    }
}


@router.post(
    "/invocations",
    summary="MLflow scoring protocol (dataframe_split, dataframe_records, instances, inputs; JSON or CSV)",
    openapi_extra=_INVOCATIONS_BODY,
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
