"""Server settings, from ``PHARMACY_*`` environment variables. Constructing them has no side
effects; loading the model is a separate step (:func:`pharmacy_service.app.create_app`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PHARMACY_", extra="ignore", frozen=True)

    model_uri: str = "build/pharmacy-model"
    """The model to serve: a local MLflow model directory, or ``models:/name@alias`` with
    ``MLFLOW_TRACKING_URI`` set."""

    llm_backend: Literal["template", "gemini"] = "template"
    """Counselling-note backend: ``template`` (offline) or ``gemini`` (see GEMINI_* variables)."""

    llm_strict: bool = False
    """Answer 502/504 when the LLM fails instead of the template note."""

    predict_threads: int = Field(default=64, ge=1, le=1024)
    """Threads that run a synchronous ``predict`` (MLflow's server has 6 on 2 cores)."""

    max_queue: int = Field(default=256, ge=0, le=100_000)
    """Requests allowed to wait for a predict slot; beyond it the server answers 503."""

    async_predict: bool = True
    """Await a model's ``async def apredict`` on the executor's loop (no thread) when it has one."""

    request_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds for one prediction; then its work is cancelled and the answer is 504."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body accepted; larger ones get 413."""

    drain_delay: float = Field(default=1.0, ge=0, le=60)
    """Seconds a worker keeps answering after SIGTERM, every answer with ``Connection: close``,
    before it stops accepting and drains; clients move to other workers without a reset."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Root log level."""

    log_format: Literal["json", "text"] = "json"
    """``json``: one JSON object per line; ``text``: for a terminal."""

    api_token: SecretStr | None = None
    """When set, prediction routes require ``Authorization: Bearer <token>``; health, version
    and metrics stay open (keep /metrics on an internal network)."""

    fault_loop_errors: int = Field(default=0, ge=0)
    """Chaos and test setting: the first N predictions in each worker fail once with
    "Event loop is closed", to see the executor's retries (``async_retry``) at work."""

    fault_block_loop_seconds: float = Field(default=0.0, ge=0, le=600)
    """Chaos and test setting: the first prediction in each worker blocks the executor's event
    loop this long (a synchronous sleep inside async code), to see loop lag and timeouts."""

    @property
    def capacity(self) -> int:
        """Predictions admitted at once (running + waiting) before shedding."""
        return self.predict_threads + self.max_queue
