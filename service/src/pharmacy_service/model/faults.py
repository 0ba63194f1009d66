"""Fault injection for tests and chaos drills, kept out of the production pipeline: the model
wraps its pipeline in :class:`FaultInjectingPipeline` only when a fault is configured
(``model_config``: ``inject_loop_errors``, ``inject_loop_block``; the server sets them from
``PHARMACY_FAULT_*``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .pipeline import Pipeline, Row

__all__ = ["FaultInjectingPipeline"]

logger = logging.getLogger(__name__)


class FaultInjectingPipeline(Pipeline):
    """The pipeline, plus the faults it was asked to inject:

    - ``loop_errors``: the first N runs in this process raise ``RuntimeError("Event loop is
      closed")``, as a client bound to a dead loop would, so the executor's retries show;
    - ``loop_block``: the first run blocks its event loop for that many seconds with a
      synchronous sleep, as blocking code inside a coroutine would (loop lag, timeouts).
    """

    def __init__(
        self, *args: Any, loop_errors: int = 0, loop_block: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._errors_left = loop_errors
        self._block_left = loop_block
        self._lock = threading.Lock()

    async def run(self, rows: list[Row]) -> list[dict[str, Any]]:
        with self._lock:
            block, self._block_left = self._block_left, 0.0
            inject = self._errors_left > 0
            self._errors_left = max(0, self._errors_left - 1)
        if block:
            logger.warning(
                "loop_block_injected: blocking the event loop for %.1f s on purpose",
                block,
                extra={"event": "loop_block_injected"},
            )
            time.sleep(block)  # noqa: ASYNC251 (the fault being injected)
        if inject:
            logger.warning(
                "loop_error_injected: failing this attempt on purpose",
                extra={"event": "loop_error_injected"},
            )
            raise RuntimeError("Event loop is closed")
        return await super().run(rows)
