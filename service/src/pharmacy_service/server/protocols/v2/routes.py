"""The Open Inference Protocol (KServe V2) REST routes: health, metadata and inference, over the
same scoring handler as ``/invocations`` (admission, deadline, auth, metrics, logs, traces).

Errors on these routes are ``{"error": "<message>"}`` (the app's error handler writes them so);
bad rows are 400 here, as the protocol has no 422.
"""

from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from ....model.pipeline import OUTPUT_COLUMNS
from ...errors import ServingError
from ...lifecycle import ModelIdentity, ServerState
from ...schemas import MEDICATION_TEXT, NOT_BLANK
from ..body import read_body
from ..dependencies import Scorer, State, authorize
from ..health import readiness_problems
from . import codecs

__all__ = ["PREFIX", "router"]

PREFIX = "/v2"


class V2ErrorBody(BaseModel):
    """The Open Inference Protocol's error answer."""

    error: str


router = APIRouter(
    prefix=PREFIX,
    tags=["open inference protocol (v2)"],
    responses={
        status: {"model": V2ErrorBody}
        for status in (400, 401, 404, 408, 413, 415, 500, 502, 503, 504)
    },
)


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {
        "name": "pharmacy-service",
        "version": package_version("pharmacy-service"),
        "extensions": ["binary_tensor_data"],
    }


@router.get("/health/live", summary="Server live")
async def server_live(state: State) -> JSONResponse:
    live = state.executor is not None and not state.executor.closed
    return JSONResponse({"live": live}, status_code=200 if live else 503)


@router.get("/health/ready", summary="Server ready (the model loaded, the executor healthy)")
async def server_ready(state: State) -> JSONResponse:
    ready = not readiness_problems(state)
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


def _model(state: ServerState, name: str, version: str | None) -> ModelIdentity:
    """The served model's identity, or 404 for another name or version."""
    identity = state.model_identity
    if name != identity.name:
        raise ServingError(
            404, "NOT_FOUND", f"Model {name!r} is not served here; {identity.name!r} is."
        )
    if version is not None and version != identity.version:
        served = f"version {identity.version!r}" if identity.version else "no versions"
        raise ServingError(
            404, "NOT_FOUND", f"Model {name!r} has no version {version!r} here ({served})."
        )
    return identity


def _metadata(state: ServerState, name: str, version: str | None) -> dict[str, Any]:
    identity = _model(state, name, version)
    if state.handler is None:
        raise ServingError(503, "NOT_READY", "The model is not loaded yet.")
    document: dict[str, Any] = {"name": identity.name}
    if identity.version is not None:
        document["versions"] = [identity.version]
    document.update(
        {
            "platform": "mlflow",
            "inputs": [
                _tensor_metadata(c.name, c.content_type)
                for c in codecs.columns_of(state.handler.input_schema)
            ],
            "outputs": [
                _tensor_metadata(c.name, c.content_type)
                for c in codecs.columns_of(state.handler.output_schema)
            ],
            "parameters": {"content_type": "pd"},
        }
    )
    return document


def _tensor_metadata(name: str, content_type: str) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "INT64" if content_type == "np" else "BYTES",
        "shape": [-1, 1],
        "parameters": {"content_type": content_type},
    }


async def model_metadata(name: str, state: State, version: str | None = None) -> dict[str, Any]:
    return _metadata(state, name, version)


async def model_ready(name: str, state: State, version: str | None = None) -> JSONResponse:
    _model(state, name, version)
    ready = not readiness_problems(state)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


async def infer(
    name: str, request: Request, state: State, scorer: Scorer, version: str | None = None
) -> Response:
    identity = _model(state, name, version)
    body = await read_body(request, state.settings)
    with scorer.admitted():
        try:
            decoded = codecs.decode_request(
                body,
                request.headers.get(codecs.HEADER_LENGTH),
                codecs.columns_of(scorer.input_schema),
            )
        except codecs.V2Error as exc:
            raise ServingError(exc.status, "BAD_REQUEST", str(exc)) from None
        params = scorer.check_params(decoded.params)
        if decoded.timeout_seconds is not None:
            params = {**(params or {}), "timeout": decoded.timeout_seconds}
        predictions = await scorer.predict(scorer.rows_for_model(decoded.rows), params)
    try:
        encoded = codecs.encode_response(
            predictions, model_name=identity.name, model_version=identity.version, request=decoded
        )
    except codecs.V2Error as exc:
        raise ServingError(exc.status, "BAD_REQUEST", str(exc)) from None
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


def _tensor(name: str, element: dict[str, Any], *, as_text: bool = False) -> dict[str, Any]:
    """One input as the model takes it: BYTES, one row (shape ``[1]`` or ``[1, 1]``); with
    ``as_text`` its content type must say ``str`` (the metadata declares ``pd_json``)."""
    content_type: dict[str, Any] = {
        "type": "object",
        "properties": {"content_type": {"const": "str"}},
    }
    required = ["name", "shape", "datatype", "data"]
    if as_text:
        content_type["required"] = ["content_type"]
        required.append("parameters")
    return {
        "type": "object",
        "required": required,
        "properties": {
            "name": {"const": name},
            "shape": {"enum": [[1], [1, 1]]},
            "datatype": {"const": "BYTES"},
            "parameters": content_type,
            "data": {"type": "array", "items": element, "minItems": 1, "maxItems": 1},
        },
    }


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "One input per column (patient_id, medications, optional question). "
        "Described here: one row, medications as comma-separated text (content_type str). The "
        "server also takes N rows (shape [N] or [N, 1] with N elements), medications as a JSON "
        "list per row (content_type pd_json, what the metadata declares), the inputs in any "
        "order, and the binary tensor data extension (an Inference-Header-Content-Length "
        "header: that many bytes of JSON, then the binary tensors); JSON Schema cannot describe "
        "those.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "content_type": {"const": "pd"},
                                "timeout": {
                                    "type": "number",
                                    "minimum": 0,
                                    "description": "microseconds, as tritonclient's "
                                    "infer(timeout=); shortens the server's deadline",
                                },
                                "binary_data_output": {"type": "boolean"},
                            },
                        },
                        "inputs": {
                            "type": "array",
                            "prefixItems": [
                                _tensor(
                                    "patient_id",
                                    {"type": "string", "maxLength": 128, "pattern": NOT_BLANK},
                                ),
                                _tensor(
                                    "medications",
                                    {"type": "string", "pattern": MEDICATION_TEXT},
                                    as_text=True,
                                ),
                                _tensor(
                                    "question", {"type": "string", "maxLength": 2000}, as_text=True
                                ),
                            ],
                            "items": False,
                            "minItems": 2,
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"enum": [name for name, _ in OUTPUT_COLUMNS]},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data": {"type": "boolean"}},
                                    },
                                },
                            },
                        },
                    },
                },
                "example": {
                    "id": "r1",
                    "inputs": [
                        {"name": "patient_id", "shape": [1], "datatype": "BYTES", "data": ["p1"]},
                        {
                            "name": "medications",
                            "shape": [1],
                            "datatype": "BYTES",
                            "parameters": {"content_type": "str"},
                            "data": ["warfarin 5 mg, Advil 400 mg"],
                        },
                    ],
                },
            },
        },
    }
}


_INFER_ANSWER = {
    "description": "The outputs: JSON, or with binary outputs asked for (binary_data, "
    "binary_data_output) a JSON header of Inference-Header-Content-Length bytes, then the "
    "binary tensors",
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


# Each route with and without a version: one endpoint, two paths (FastAPI passes version=None
# when the path has none).
for _path, _summary in (
    ("/models/{name}", "Model metadata"),
    ("/models/{name}/versions/{version}", "Model metadata (a version)"),
):
    router.add_api_route(_path, model_metadata, methods=["GET"], summary=_summary)
for _path, _summary in (
    ("/models/{name}/ready", "Model ready"),
    ("/models/{name}/versions/{version}/ready", "Model ready (a version)"),
):
    router.add_api_route(_path, model_ready, methods=["GET"], summary=_summary)
for _path, _summary in (
    ("/models/{name}/infer", "Inference"),
    ("/models/{name}/versions/{version}/infer", "Inference (a version)"),
):
    router.add_api_route(
        _path,
        infer,
        methods=["POST"],
        summary=_summary,
        dependencies=[Depends(authorize)],
        openapi_extra=_INFER_BODY,
        responses={200: _INFER_ANSWER},
    )
