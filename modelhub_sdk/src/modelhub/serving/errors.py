"""Error types raised by :mod:`modelhub.serving`.

Every error derives from :class:`ModelhubError`; leaves also derive from the builtin they
specialise, so ``except TimeoutError`` and ``except ValueError`` keep working.
"""

from __future__ import annotations

__all__ = [
    "CalledFromExecutorLoopError",
    "ExecutorClosedError",
    "ExecutorConfigError",
    "ExecutorTimeoutError",
    "ModelhubError",
]


class ModelhubError(Exception):
    """Root of every error raised by the modelhub SDK."""


class ExecutorConfigError(ModelhubError, ValueError):
    """A configuration value (argument or environment variable) is invalid."""


class ExecutorTimeoutError(ModelhubError, TimeoutError):
    """The call's deadline passed; its task was cancelled in the event loop."""


class ExecutorClosedError(ModelhubError, RuntimeError):
    """The executor instance was closed; create a new one (the default executor restarts by itself)."""


class CalledFromExecutorLoopError(ModelhubError, RuntimeError):
    """A blocking call was made from the executor's own event-loop thread (it would deadlock)."""
