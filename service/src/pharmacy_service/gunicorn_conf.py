"""gunicorn configuration: ``gunicorn -c python:pharmacy_service.gunicorn_conf``.

Environment: ``PORT`` (8080), ``HOST`` (0.0.0.0), ``WEB_CONCURRENCY`` (workers, 2),
``GRACEFUL_TIMEOUT`` (25 s: shorter than Kubernetes' grace period), ``WORKER_TIMEOUT`` (60 s),
``KEEPALIVE`` (5 s), ``MAX_REQUESTS`` (20000, with 10% jitter; 0 disables), ``PRELOAD_APP`` (true),
``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary directory when unset).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pharmacy_service.logs import logging_config

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="pharmacy-metrics-"))
# It must exist before the app is preloaded (the metrics module opens its files at import);
# on_starting empties it once, at the master's start.
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

wsgi_app = "pharmacy_service.app:create_app_from_env()"
worker_class = "uvicorn_worker.UvicornWorker"
# Import the app (mlflow, pandas, google-genai: most of a worker's start-up) once in the master;
# each worker then only loads the model (lifespan, after the fork: no thread crosses a fork).
# A new worker (SIGHUP, max_requests, a crash) serves in about a second instead of four, and
# the workers share the imported code's memory. SIGHUP then reloads workers, not code: deploy
# new code by restarting the master (or rolling the pods). PRELOAD_APP=false turns it off.
preload_app = os.environ.get("PRELOAD_APP", "true").lower() not in ("0", "false", "no")
bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "25"))
timeout = int(os.environ.get("WORKER_TIMEOUT", "60"))
keepalive = int(os.environ.get("KEEPALIVE", "5"))
max_requests = int(os.environ.get("MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
# Request line and header limits (the body limit is PHARMACY_MAX_BODY_BYTES, in the app).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# gunicorn's control socket ($HOME/.gunicorn/gunicorn.ctl) is not used; it would need a writable
# home (read-only root filesystems) and clashes between servers on one machine.
control_socket_disable = True
accesslog = None  # the app logs one JSON line per request, with its request id
logconfig_dict = logging_config(
    os.environ.get("PHARMACY_LOG_LEVEL", "INFO"), os.environ.get("PHARMACY_LOG_FORMAT", "json")
)


def on_starting(server: Any) -> None:
    """Start with an empty metrics directory: old files would add stale values."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_file():
            entry.unlink()
        else:
            shutil.rmtree(entry, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the aggregated metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
