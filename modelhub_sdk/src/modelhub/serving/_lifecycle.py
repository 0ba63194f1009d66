"""Process lifecycle: after ``fork`` a child forgets its parent's loop threads (they do not
exist there) and starts its own on the next call; at interpreter exit every executor closes."""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["keep_inherited", "on_fork_in_child", "track"]

logger = logging.getLogger("modelhub.serving")


class _Executor(Protocol):
    def close(self) -> None: ...

    def _after_fork_in_child(self) -> None: ...


_live_executors: weakref.WeakSet[_Executor] = weakref.WeakSet()
_fork_callbacks: list[Callable[[], None]] = []
# Loop threads inherited from the parent: kept referenced so that their loops are never
# garbage-collected half-alive in the child.
_inherited: list[object] = []


def track(executor: _Executor) -> None:
    """Reset ``executor`` in a forked child and close it at exit (for as long as it lives)."""
    _live_executors.add(executor)


def on_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in a forked child before the executors are reset."""
    _fork_callbacks.append(callback)


def keep_inherited(loop_thread: object) -> None:
    _inherited.append(loop_thread)


def _reset_after_fork() -> None:
    for callback in _fork_callbacks:
        callback()
    for executor in list(_live_executors):
        executor._after_fork_in_child()


def _close_all_at_exit() -> None:
    for executor in list(_live_executors):
        try:
            executor.close()
        except Exception:  # best effort at interpreter exit
            logger.debug("closing %r at exit failed", executor, exc_info=True)


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_close_all_at_exit)
