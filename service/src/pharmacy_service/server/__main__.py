"""``pharmacy-serve``: run the server on its embedded defaults (``make serve``).

Builds the model directory on first run, then execs gunicorn on 127.0.0.1:8080 (``HOST``,
``PORT`` and every ``PHARMACY_*`` setting still apply).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .settings import ServerSettings, Settings


def main() -> None:
    settings = Settings()
    model = Path(settings.model_uri)
    if "://" not in settings.model_uri and not (model / "MLmodel").exists():
        sys.stderr.write(f"Building the pharmacy model into {model} (first run) ...\n")
        from ..model.build import build

        build(model)
    # Defaults for a local run, for gunicorn's configuration to read (ServerSettings).
    os.environ.setdefault("HOST", "127.0.0.1")
    os.environ.setdefault("PHARMACY_LOG_FORMAT", "text" if sys.stderr.isatty() else "json")
    server = ServerSettings()
    base = f"http://{server.host}:{server.port}"
    sys.stderr.write(
        f"\nServing {settings.model_uri} on {base}  (docs: {base}/docs)\n"
        f"Try:\n  curl -s {base}/v1/screen -H 'Content-Type: application/json' \\\n"
        """    -d '{"patients":[{"patient_id":"p1","medications":["Coumadin","Advil"]}]}'\n\n"""
    )
    gunicorn = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
    os.execv(gunicorn, [gunicorn, "-c", "python:pharmacy_service.server.gunicorn_conf"])


if __name__ == "__main__":
    main()
