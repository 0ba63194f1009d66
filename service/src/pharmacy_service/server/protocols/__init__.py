"""The protocols the server speaks, each an adapter over the one transport-free scoring handler
(:mod:`..handler`): MLflow's ``/invocations`` (:mod:`.mlflow`), the typed ``/v1/screen``
(:mod:`.screen`), the Open Inference Protocol ``/v2`` (:mod:`.v2`), and the health, version and
metrics routes (:mod:`.health`). :func:`pharmacy_service.server.app.create_app` assembles them.
"""

from __future__ import annotations

from fastapi import APIRouter

from .health import router as health
from .mlflow import router as mlflow
from .screen import router as screen
from .v2.routes import router as v2

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (mlflow, screen, v2, health)
