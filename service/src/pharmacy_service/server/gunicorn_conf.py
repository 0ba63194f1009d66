"""gunicorn configuration: ``gunicorn -c python:pharmacy_service.server.gunicorn_conf``.

Every value comes from :class:`pharmacy_service.server.settings.ServerSettings` (``PORT``, ``HOST``,
``WEB_CONCURRENCY``, ``GRACEFUL_TIMEOUT``, ``WORKER_TIMEOUT``, ``KEEPALIVE``, ``MAX_REQUESTS``,
``PRELOAD_APP``, ``PROMETHEUS_MULTIPROC_DIR``, ``LIMIT_REQUEST_*``) and, for logging, from
:class:`pharmacy_service.server.settings.Settings`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pharmacy_service.server.logs import logging_config
from pharmacy_service.server.settings import ServerSettings, Settings

_server = ServerSettings()
_settings = Settings()

# prometheus_client reads the directory from the environment, in the master and the workers.
# It must exist before the app is preloaded (the metrics module opens its files at import);
# on_starting empties it once, at the master's start.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _server.prometheus_multiproc_dir or tempfile.mkdtemp(
    prefix="pharmacy-metrics-"
)
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

# MLflow's usage telemetry sends events to MLflow's servers from every process that imports it:
# a server holding patient data does not, unless its operator sets this to false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

wsgi_app = "pharmacy_service.server.app:create_app_from_env()"
# uvicorn's worker, with JSON logging after preload, enforced HTTP limits, and recycling that
# drains (see the module's docstring).
worker_class = "pharmacy_service.server.worker.PharmacyWorker"
# Import the app (mlflow, pandas, google-genai: most of a worker's start-up) once in the master;
# each worker then only loads the model (lifespan, after the fork: no thread crosses a fork).
# A new worker (SIGHUP, max_requests, a crash) serves sooner, and the workers share the
# imported code's memory. SIGHUP then reloads workers, not code: deploy new code by restarting
# the master (or rolling the pods). PRELOAD_APP=false turns it off.
preload_app = _server.preload_app
bind = [f"{_server.host}:{_server.port}"]
workers = _server.web_concurrency
graceful_timeout = _server.graceful_timeout
timeout = _server.worker_timeout
keepalive = _server.keepalive
max_requests = _server.max_requests
max_requests_jitter = max_requests // 10
# Request line and header limits, enforced by the worker's HTTP protocol (the body limit is
# PHARMACY_MAX_BODY_BYTES, in the app).
limit_request_line = _server.limit_request_line
limit_request_fields = _server.limit_request_fields
limit_request_field_size = _server.limit_request_field_size
# gunicorn's control socket ($HOME/.gunicorn/gunicorn.ctl) is not used; it would need a writable
# home (read-only root filesystems) and clashes between servers on one machine.
control_socket_disable = True
accesslog = None  # the app logs one JSON line per request, with its request id
logconfig_dict = logging_config(_settings.log_level, _settings.log_format)


def on_starting(server: Any) -> None:
    """Start with an empty metrics directory: old files would add stale values."""
    from pharmacy_service.server.metrics import reset_directory

    reset_directory(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))


def child_exit(server: Any, worker: Any) -> None:
    """Fold a dead worker's counters into the directory's archive (they must never go back),
    and drop its live gauges."""
    from pharmacy_service.server.metrics import retire_process

    retire_process(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]), worker.pid)
