"""MLflow's own scoring server (`mlflow models serve --env-manager local`) on a saved model."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.gunicorn import BIN, free_port


@contextmanager
def run_mlflow_serve(model_dir: Path, log: Path, *, workers: int = 1) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # it runs `uvicorn` from PATH
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                str(model_dir),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(workers),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve not ready in 90 s:\n{log.read_text()}")
            time.sleep(0.3)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
