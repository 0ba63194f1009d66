"""The typed screening API, ``POST /v1/screen`` (its schemas in :mod:`..schemas`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError

from ..errors import ServingError
from ..handler import media_type
from ..schemas import ScreenRequest, ScreenResponse
from .body import read_body
from .dependencies import Scorer, State, authorize

__all__ = ["router"]

router = APIRouter(tags=["screen"], dependencies=[Depends(authorize)])


@router.post(
    "/v1/screen",
    response_model=ScreenResponse,
    summary="Screen patients' medications for interactions",
    # The body is read and validated by the route itself (after the upload, before admission),
    # so FastAPI cannot see it: described here, its schema registered by the app.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ScreenRequest"}}
            },
        }
    },
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
