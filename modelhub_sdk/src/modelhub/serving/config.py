"""Executor configuration: one frozen dataclass; the environment is read in one place."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import ExecutorConfigError

__all__ = ["ENV_MAX_ATTEMPTS", "ENV_MODE", "ENV_TIMEOUT", "ExecutorConfig", "Mode"]

Mode = Literal["shared", "isolated"]
MODES: tuple[str, ...] = get_args(Mode)

ENV_MODE = "MODELHUB_ASYNC_MODE"
ENV_MAX_ATTEMPTS = "MODELHUB_ASYNC_MAX_ATTEMPTS"
ENV_TIMEOUT = "MODELHUB_ASYNC_TIMEOUT"


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    """How an :class:`~modelhub.serving.AsyncExecutor` runs coroutines."""

    mode: Mode = "shared"
    """``shared``: one long-lived loop in a daemon thread per process (default).
    ``isolated``: a fresh loop per call (``asyncio.run``), the behaviour of the original fix."""

    max_attempts: int = 3
    """Attempts per call when it fails with an event-loop lifecycle error (1 = no retry)."""

    timeout: float | None = None
    """Default deadline in seconds for a call, across all attempts; ``None`` waits forever."""

    retry_initial_wait: float = 0.05
    """First back-off in seconds; doubles per retry, plus jitter."""

    retry_max_wait: float = 1.0
    """Upper bound of one back-off, in seconds."""

    retry_jitter: float = 0.05
    """Random extra back-off, up to this many seconds."""

    lag_interval: float = 0.25
    """How often the shared loop measures its own lag, in seconds; 0 turns it off."""

    lag_warning: float = 0.5
    """Log a ``loop_lag`` WARNING when the shared loop runs this many seconds late."""

    shutdown_timeout: float = 5.0
    """Seconds ``close()`` waits for cancelled tasks and the loop thread to finish."""

    thread_name: str = "modelhub-async-loop"
    """Name of the shared loop's thread (visible in thread dumps and py-spy)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ExecutorConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}.")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ExecutorConfigError(
                f"max_attempts must be an integer, not {self.max_attempts!r}."
            )
        if self.max_attempts < 1:
            raise ExecutorConfigError(f"max_attempts must be at least 1, not {self.max_attempts}.")
        if self.timeout is not None:
            _check_positive("timeout", self.timeout)
        for name in ("retry_initial_wait", "retry_max_wait", "retry_jitter", "lag_interval"):
            _check_non_negative(name, getattr(self, name))
        for name in ("lag_warning", "shutdown_timeout"):
            _check_positive(name, getattr(self, name))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExecutorConfig:
        """Build the default configuration from ``MODELHUB_ASYNC_*`` environment variables.

        An unset or empty variable keeps the default. An invalid value raises
        :class:`ExecutorConfigError` naming the variable and what it accepts.
        """
        env = os.environ if environ is None else environ
        mode = env.get(ENV_MODE, "").strip().lower() or "shared"
        if mode not in MODES:
            raise ExecutorConfigError(
                f"{ENV_MODE}={env.get(ENV_MODE)!r} is invalid: use one of {', '.join(MODES)}."
            )
        raw_attempts = env.get(ENV_MAX_ATTEMPTS, "").strip()
        max_attempts = 3
        if raw_attempts:
            try:
                max_attempts = int(raw_attempts)
            except ValueError:
                max_attempts = 0
            if max_attempts < 1:
                raise ExecutorConfigError(
                    f"{ENV_MAX_ATTEMPTS}={raw_attempts!r} is invalid: use a whole number of at least 1."
                )
        raw_timeout = env.get(ENV_TIMEOUT, "").strip()
        timeout: float | None = None
        if raw_timeout and raw_timeout.lower() != "none":
            try:
                timeout = float(raw_timeout)
            except ValueError:
                timeout = -1.0
            if not (timeout > 0 and math.isfinite(timeout)):
                raise ExecutorConfigError(
                    f"{ENV_TIMEOUT}={raw_timeout!r} is invalid: use a number of seconds above 0, "
                    "or 'none' for no deadline."
                )
        return cls(mode=mode, max_attempts=max_attempts, timeout=timeout)  # type: ignore[arg-type]  # mode checked above


def _check_positive(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value))
    ):
        raise ExecutorConfigError(
            f"{name} must be a finite number of seconds above 0, not {value!r}."
        )


def _check_non_negative(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 and math.isfinite(value))
    ):
        raise ExecutorConfigError(
            f"{name} must be a finite number of seconds, 0 or more, not {value!r}."
        )
