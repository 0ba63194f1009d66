"""Reproduce the seed's failure in a fresh process and print what happened as JSON.

Run as ``python -m tests.support.isolated_mode_failure BASE_URL``: a module-level aiohttp
session, 20 threads x 10 calls through ``isolated`` mode. The session stays bound to the first,
closed, loop; the leaked session and sockets die with this process instead of the test run's.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings

from modelhub.serving import AsyncExecutor, ExecutorConfig
from tests.support.loop_affine import ModuleLevelSession, hammer


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event:
            self.events.append({"event": event, "level": record.levelname, "mode": record.mode})  # type: ignore[attr-defined]


def main() -> None:
    warnings.simplefilter("ignore", ResourceWarning)
    collect = Collect()
    logger = logging.getLogger("modelhub.serving")
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    client = ModuleLevelSession(sys.argv[1])
    with AsyncExecutor(ExecutorConfig(mode="isolated", retry_initial_wait=0.001)) as executor:
        results, errors = hammer(lambda value: executor.run(client.echo, value, timeout=30))
    json.dump(
        {
            "ok": len(results),
            "errors": [f"{type(e).__name__}: {e}" for e in errors],
            "events": collect.events,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
