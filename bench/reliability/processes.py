"""The processes a scenario drives: the Gemini-compatible stub and the real server (gunicorn
with uvicorn workers), each on a free port of 127.0.0.1, logging to a file, stopped with its
whole process group on exit."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from bench.harness import children, free_port, launched, wait_for_workers

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Stub:
    url: str
    process: subprocess.Popen[bytes]

    def configure(self, **values: Any) -> None:
        httpx.post(f"{self.url}/config", json=values, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/stats", timeout=5).json()
        return result


@contextlib.contextmanager
def stub_process(latency_ms: float, logs: Path) -> Iterator[Stub]:
    port = free_port()
    command = [
        str(BIN / "pharmacy-gemini-stub"),
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
    ]
    url = f"http://127.0.0.1:{port}"
    with launched(command, dict(os.environ), logs / "stub.log", f"{url}/health", "stub", 30) as (
        process,
        _,
    ):
        yield Stub(url, process)


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return records

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples (matching labels) from /metrics."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            match = re.match(r"^([a-z_:]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if not match or match.group(1) != name:
                continue
            sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total


@contextlib.contextmanager
def server(
    model: Path, stub: Stub, logs: Path, name: str, workers: int = 2, **env: str
) -> Iterator[Server]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
    full_env.update(
        PATH=f"{BIN}{os.pathsep}{full_env.get('PATH', '')}",
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY=str(workers),
        PHARMACY_MODEL_URI=str(model),
        PHARMACY_LLM_BACKEND="gemini",
        PHARMACY_LOG_FORMAT="json",
        GEMINI_BASE_URL=stub.url,
        PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="reliability-metrics-"),
        MAX_REQUESTS="0",  # no recycling but in the recycle scenario: it would blur the figures
    )
    full_env.update(env)
    log = logs / f"{name}.log"
    command = [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.server.gunicorn_conf"]
    base = f"http://127.0.0.1:{port}"
    with launched(command, full_env, log, f"{base}/health/ready", name) as (process, _):
        wait_for_workers(base, process.pid, workers, 30)  # every worker has loaded its model
        yield Server(base, process, log, full_env)
