"""Real Spark on 127.0.0.1: one session per test module, the model built once per run."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from pharmacy_service.batch.cli import execute, parser
from pharmacy_service.batch.spark import local_session

logging.getLogger("py4j").setLevel(logging.INFO)  # not every command sent to the JVM

SPARK_WARNINGS = [
    # py4j's connections to the JVM are closed when collected, not by pyspark.
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """``local[2]`` (tasks tried 4 times), no UI; stopped when the module ends."""
    session = local_session("local[2]", conf={"spark.ui.enabled": "false"})
    session.sparkContext.setLogLevel("WARN")
    yield session
    session.stop()


def pharmacy_batch(spark: SparkSession, *argv: str) -> int:
    """``pharmacy-batch`` on the module's session: its exit status."""
    return execute(parser().parse_args(list(argv)), spark)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any] | str]) -> Path:
    """A JSON Lines file; a string is written as the line it is (not JSON, for bad lines)."""
    path.write_text(
        "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    )
    return path


def python_workers(spark: SparkSession) -> list[int]:
    """The Python workers this session's JVM forked from its pyspark daemon (Linux /proc):
    processes of this test run only, found by ancestry, never by name alone."""
    jvm: int = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(pid: int, ancestor: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == ancestor:
                return True
        return False

    daemons = {
        pid for pid, cmd in commands.items() if "pyspark.daemon" in cmd and descends(pid, jvm)
    }
    return sorted(pid for pid, parent in parents.items() if parent in daemons)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
