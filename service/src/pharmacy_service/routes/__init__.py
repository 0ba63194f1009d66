"""The HTTP routes, one APIRouter per concern; :func:`pharmacy_service.app.create_app`
assembles them."""

from __future__ import annotations

from .health import router as health
from .predict import router as predict

__all__ = ["health", "predict"]
