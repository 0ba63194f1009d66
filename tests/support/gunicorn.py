"""The real server, started the way production starts it: gunicorn with uvicorn workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(
    process: subprocess.Popen[bytes], url: str, log: Path, name: str, seconds: float
) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or is late."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready in {seconds:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


@dataclass
class RunningGunicorn:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]


@contextmanager
def run_gunicorn(
    model_dir: Path, log: Path, *, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[RunningGunicorn]:
    port = free_port()
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PHARMACY_", "GEMINI_", "MODELHUB_"))
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
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.gunicorn_conf"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, f"{base}/health/ready", log, "gunicorn", 60)
        # Every worker must be up, not just the first to answer.
        while len(RunningGunicorn(base, process, log).worker_pids()) < workers:
            time.sleep(0.1)
        yield RunningGunicorn(base, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
