"""Runs inside the google-genai compatibility venv (see sdk_compat.py); prints one JSON object.

The pharmacy pipeline with its module-level genai.Client, driven like MLflow drives predict():
50 sequential calls from one thread, then 20 threads x 10 calls, through AsyncExecutor.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from importlib.metadata import version
from typing import Any

from modelhub.serving import AsyncExecutor, ExecutorConfig
from pharmacy_service.model import KnowledgeBase, Pipeline, parse_rows
from pharmacy_service.model.llm import GeminiBackend, GeminiSettings

_ADDRESS = re.compile(r"0x[0-9a-f]+")


class Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:  # Handler.handle() holds self.lock
        event = getattr(record, "event", None)
        if event:
            self.counts[str(event)] += 1


def main() -> None:
    base_url, mode = sys.argv[1], sys.argv[2]
    events = Events()
    for name in ("modelhub.serving", "pharmacy_service"):
        logging.getLogger(name).addHandler(events)
        logging.getLogger(name).setLevel(logging.INFO)
    settings = GeminiSettings(api_key=None, base_url=base_url, timeout=2.0)
    pipeline = Pipeline(KnowledgeBase.load(), GeminiBackend(settings))
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    rows = parse_rows([{"patient_id": "c1", "medications": ["Coumadin", "Advil"]}])

    def call(executor: AsyncExecutor) -> None:
        try:
            (row,) = executor.run(pipeline.run, rows, timeout=10)
            outcome = str(row["note_source"])
        except Exception as exc:  # noqa: BLE001 - counted
            outcome = "error"
            with lock:
                errors[f"{type(exc).__name__}: {_ADDRESS.sub('0x…', str(exc))[:90]}"] += 1
        with lock:
            outcomes[outcome] += 1

    started = time.monotonic()
    with AsyncExecutor(ExecutorConfig(mode=mode)) as executor:  # type: ignore[arg-type]
        for _ in range(50):
            call(executor)
        sequential = dict(outcomes)
        outcomes.clear()

        def worker() -> None:
            for _ in range(10):
                call(executor)

        threads = [threading.Thread(target=worker) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    report: dict[str, Any] = {
        "mode": mode,
        "google_genai": version("google-genai"),
        "sequential": sequential,
        "concurrent": dict(outcomes),
        "errors": dict(errors),
        "events": dict(events.counts),
        "seconds": round(time.monotonic() - started, 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
