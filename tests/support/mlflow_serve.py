"""MLflow's own scoring server (`mlflow models serve --env-manager local`) on a saved model."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import free_port, wait_until_ready

from tests.support.gunicorn import BIN


@contextmanager
def run_mlflow_serve(
    model_dir: Path, log: Path, *, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[str]:
    port = free_port()
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
    env.update(extra)
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
        wait_until_ready(process, f"{base}/ping", log, "mlflow models serve", 90)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
