"""Settings, read from the environment here and nowhere else: the app's (``PHARMACY_*``,
:class:`Settings`) and the server process's (``PORT``, ``WEB_CONCURRENCY``, ``MAX_REQUESTS``...,
:class:`ServerSettings`). Constructing them has no side effects; loading the model is a
separate step (:func:`pharmacy_service.server.app.create_app`). The LLM backends' own settings
(``GEMINI_*``) belong to the model package."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServerSettings", "Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PHARMACY_", extra="ignore", frozen=True)

    model_uri: str = "build/pharmacy-model"
    """The model to serve: a local MLflow model directory, or ``models:/name@alias`` with
    ``MLFLOW_TRACKING_URI`` set."""

    model_name: str | None = None
    """The model's name in the Open Inference Protocol's URLs (``/v2/models/<name>``): by
    default the registered name when ``model_uri`` is ``models:/<name>/...``, else
    ``pharmacy-interaction-screener``."""

    llm_backend: Literal["template", "gemini", "openai", "anthropic"] = "template"
    """Counselling-note backend: ``template`` (offline), ``gemini``, ``openai`` or ``anthropic``
    (see the GEMINI_*, OPENAI_* and ANTHROPIC_* variables)."""

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

    body_read_timeout: float = Field(default=10.0, gt=0, le=600)
    """Seconds for a request's whole body to arrive; then the answer is 408 and the
    connection closes. Bodies are read before admission, so this bounds how long an upload
    that stalls holds its memory (up to ``max_body_bytes``); it never holds a predict slot."""

    drain_delay: float = Field(default=1.0, ge=0, le=60)
    """Seconds a worker keeps answering after SIGTERM, every answer with ``Connection: close``,
    before it stops accepting and drains; clients move to other workers without a reset."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Root log level."""

    log_format: Literal["json", "text"] = "json"
    """``json``: one JSON object per line; ``text``: for a terminal."""

    api_token: SecretStr | None = None
    """When set, prediction routes require ``Authorization: Bearer <token>``; health, version
    and metrics stay open (keep /metrics on an internal network). Set but empty (or only
    whitespace), it is refused: the server does not start."""

    fault_loop_errors: int = Field(default=0, ge=0)
    """Chaos and test setting: the first N predictions in each worker fail once with
    "Event loop is closed", to see the executor's retries (``async_retry``) at work."""

    fault_block_loop_seconds: float = Field(default=0.0, ge=0, le=600)
    """Chaos and test setting: the first prediction in each worker blocks the executor's event
    loop this long (a synchronous sleep inside async code), to see loop lag and timeouts."""

    @field_validator("api_token")
    @classmethod
    def _token_not_empty(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty secret is a deployment mistake (a missing Secret key, an empty variable),
        # not a request to serve without one: it would admit "Bearer" with nothing after it.
        if token is not None and not token.get_secret_value().strip():
            raise ValueError(
                "PHARMACY_API_TOKEN is set but empty (or only whitespace), which would admit "
                "'Authorization: Bearer' with no token: set it to the secret, or unset it to "
                "serve the prediction routes without a token."
            )
        # A Secret mounted from a file often ends in a newline; clients send the token without
        # it (and authorize strips what they send), so the token is its text without spaces.
        return SecretStr(token.get_secret_value().strip()) if token is not None else None

    @property
    def capacity(self) -> int:
        """Predictions admitted at once (running + waiting) before shedding."""
        return self.predict_threads + self.max_queue


class ServerSettings(BaseSettings):
    """The process settings gunicorn and its workers read, under the names container platforms
    and gunicorn users expect (no prefix). :mod:`pharmacy_service.server.gunicorn_conf` turns them
    into gunicorn's configuration; the worker (:mod:`pharmacy_service.server.worker`) applies the
    HTTP limits, which gunicorn itself does not enforce for uvicorn workers."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = "0.0.0.0"
    """Address to listen on."""

    port: int = Field(default=8080, ge=1, le=65535)
    """Port to listen on."""

    web_concurrency: int = Field(default=2, ge=1, le=64)
    """Worker processes."""

    graceful_timeout: int = Field(default=25, ge=1)
    """Seconds a stopping worker has to finish its requests (shorter than Kubernetes' grace
    period)."""

    worker_timeout: int = Field(default=60, ge=1)
    """Seconds without a heartbeat before gunicorn kills a worker."""

    keepalive: int = Field(default=5, ge=0)
    """Seconds an idle keep-alive connection stays open."""

    max_requests: int = Field(default=20_000, ge=0)
    """Requests after which a worker is replaced (with up to 10% more, at random, so workers
    do not recycle together); 0 never recycles. Recycling drains like a SIGTERM."""

    preload_app: bool = True
    """Import the app once in gunicorn's master; workers fork with it and only load the model."""

    prometheus_multiproc_dir: str | None = None
    """Directory of the metrics files shared by the workers (a fresh temporary one when unset)."""

    limit_request_line: int = Field(default=8190, ge=256)
    """Longest request line (method, path, query) in bytes; longer ones get 414."""

    limit_request_fields: int = Field(default=100, ge=1)
    """Most header fields in a request; more get 431."""

    limit_request_field_size: int = Field(default=8190, ge=256)
    """Longest header field (name and value) in bytes; longer ones get 431."""

    limit_request_head: int = Field(default=65_536, ge=1024)
    """Most bytes in a request's line and headers together; more get 431."""
