"""MLflow's scoring protocol, ``POST /invocations`` (dataframe_split, dataframe_records,
instances, inputs; JSON or CSV): the route moves bytes in and out; the handler parses, admits,
predicts and shapes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ...model.pipeline import MAX_INTEGER_ID, Slices
from ..schemas import MEDICATION_TEXT, NOT_BLANK
from .body import read_body
from .dependencies import Scorer, State, authorize

__all__ = ["router"]

router = APIRouter(tags=["mlflow"], dependencies=[Depends(authorize)])


_PATIENT_ID = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NOT_BLANK},
        # An integer is read as its digits, within what a double holds exactly.
        {"type": "integer", "minimum": -MAX_INTEGER_ID, "maximum": MAX_INTEGER_ID},
    ]
}
_MEDICATIONS = {
    "description": "at most 50 medication strings: a list, or one string separated by commas, "
    "semicolons or new lines; each at most 200 characters (blank entries are skipped)",
    "anyOf": [
        {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 50},
        {"type": "string", "pattern": MEDICATION_TEXT},
    ],
}
_QUESTION = {"type": ["string", "null"], "maxLength": 2000}
_ROW = {
    "type": "object",
    "required": ["patient_id", "medications"],
    "properties": {
        "patient_id": _PATIENT_ID,
        "medications": _MEDICATIONS,
        "question": _QUESTION,
    },
    "additionalProperties": False,
}
_ROWS = {"type": "array", "items": _ROW, "minItems": 1, "maxItems": 1000}
_PARAMS = {
    "type": ["object", "null"],
    "properties": {
        "timeout": {
            "type": ["number", "null"],
            "minimum": 0,
            "exclusiveMaximum": 1e9,
            "description": "seconds (0: the server's limit)",
        }
    },
}


def _split(columns: list[str], values: list[Any]) -> dict[str, Any]:
    """``dataframe_split`` with these columns in this order: every row has one value per
    column (JSON Schema can say so only for a fixed list of columns, hence one form each)."""
    return {
        "type": "object",
        "required": ["columns", "data"],
        "properties": {
            "columns": {
                "type": "array",
                "prefixItems": [{"const": name} for name in columns],
                "items": False,
                "minItems": len(columns),
            },
            "data": {
                "type": "array",
                "items": {
                    "type": "array",
                    "prefixItems": values,
                    "items": False,
                    "minItems": len(columns),
                },
                "minItems": 1,
                "maxItems": 1000,
            },
        },
        "additionalProperties": False,
    }


def _form(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: schema, "params": _PARAMS},
        "additionalProperties": False,
    }


_INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "description": "One of MLflow's four JSON forms, or CSV. Described here: "
        "`dataframe_split` with its columns in the order patient_id, medications[, question] "
        "and `inputs` as a list of rows; the server also takes the columns in any order, no "
        'index, and `inputs` as columns of equal length (`{"patient_id": [...], ...}`), '
        "which JSON Schema cannot describe.",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _form("dataframe_records", _ROWS),
                        _form(
                            "dataframe_split",
                            {
                                "oneOf": [
                                    _split(
                                        ["patient_id", "medications"], [_PATIENT_ID, _MEDICATIONS]
                                    ),
                                    _split(
                                        ["patient_id", "medications", "question"],
                                        [_PATIENT_ID, _MEDICATIONS, _QUESTION],
                                    ),
                                ]
                            },
                        ),
                        _form("instances", _ROWS),
                        _form("inputs", _ROWS),
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
