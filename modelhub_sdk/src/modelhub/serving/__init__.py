"""Run async code (LLM SDKs) from synchronous model code, safely under concurrent load.

>>> from modelhub.serving import AsyncExecutor
>>> async def answer(x: int) -> int:
...     return x * 2
>>> AsyncExecutor.run_async(answer, 21, timeout=5)
42
"""

from ._executor import AsyncExecutor, run_async
from ._loop_errors import is_loop_error
from .config import ExecutorConfig
from .context import request_id_var
from .errors import (
    CalledFromExecutorLoopError,
    ExecutorClosedError,
    ExecutorConfigError,
    ExecutorTimeoutError,
    ModelhubError,
)
from .hooks import ExecutorHooks

__all__ = [
    "AsyncExecutor",
    "CalledFromExecutorLoopError",
    "ExecutorClosedError",
    "ExecutorConfig",
    "ExecutorConfigError",
    "ExecutorHooks",
    "ExecutorTimeoutError",
    "ModelhubError",
    "is_loop_error",
    "request_id_var",
    "run_async",
]
