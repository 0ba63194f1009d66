"""The real server, started the way production starts it: gunicorn with uvicorn workers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from bench.harness import children, free_port, launched, wait_for_workers

__all__ = ["BIN", "RunningGunicorn", "free_port", "run_gunicorn"]

BIN = Path(sys.executable).parent


@dataclass
class RunningGunicorn:
    base_url: str
    process: Popen[bytes]
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)


@contextmanager
def run_gunicorn(
    model_dir: Path, log: Path, *, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[RunningGunicorn]:
    """Serve ``model_dir`` until the block exits; every worker has answered before it starts."""
    port = free_port()
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PHARMACY_", "GEMINI_", "OPENAI_", "ANTHROPIC_", "MODELHUB_"))
    }
    environment.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "PHARMACY_MODEL_URI": str(model_dir),
            "PHARMACY_LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(log.parent / f"metrics-{port}"),
            **(env or {}),
        }
    )
    base = f"http://127.0.0.1:{port}"
    command = [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.server.gunicorn_conf"]
    with launched(command, environment, log, f"{base}/health/ready", "gunicorn") as (process, _):
        wait_for_workers(base, process.pid, workers, 60)
        yield RunningGunicorn(base, process, log)
