"""A user's Spark job module calling an LLM from a pandas UDF with a module-level
``openai.AsyncOpenAI`` client: the seed's way (``asyncio.run`` per row or per Arrow batch) and
modelhub's (``AsyncExecutor.run_async``). Shipped to the Python workers as a file
(``SparkContext.addPyFile``) and imported there as ``spark_llm_udf``, so that each worker
process keeps its own module globals (its clients) across the tasks it runs, as a real job's
module does. Standard library, pandas, openai and modelhub only: no test code in the workers.

Each row's outcome is a string: ``ok pid=<worker pid>``, or the failure's class, its loop-error
reason (``loop_closed``...) and the start of its message. A failed row does not fail the task:
the job finishes and the rows can be counted.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import openai
import pandas as pd

from modelhub.serving import AsyncExecutor
from modelhub.serving._loop_errors import loop_error_reason

CONCURRENCY = 8
"""LLM calls in flight per batch (the model's default ``PHARMACY_LLM_CONCURRENCY``)."""

_clients: dict[str, Any] = {}
"""The module-level clients, one per way (a way's failures must not come from another's use)."""


def client(way: str, base_url: str) -> Any:
    """The process's client for ``way``: built once, then reused by every task this worker
    runs, as a module-level ``client = AsyncOpenAI()`` is."""
    if way not in _clients:
        _clients[way] = openai.AsyncOpenAI(
            base_url=base_url, api_key="no-key-needed-for-a-local-server", max_retries=0, timeout=20
        )
    return _clients[way]


def outcome(exc: BaseException | None) -> str:
    if exc is None:
        return f"ok pid={os.getpid()}"
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    reason = loop_error_reason(exc) or "-"
    return f"{type(exc).__name__} {reason} {type(root).__name__}: {str(root)[:80]}"


async def _one(way: str, base_url: str, prompt: str, gate: asyncio.Semaphore | None) -> str:
    try:
        if gate is None:
            response = await _ask(way, base_url, prompt)
        else:
            async with gate:
                response = await _ask(way, base_url, prompt)
    except Exception as exc:  # noqa: BLE001 - the row records it
        return outcome(exc)
    return outcome(None) if response else "EmptyAnswer - -"


async def _ask(way: str, base_url: str, prompt: str) -> str:
    answer = await client(way, base_url).chat.completions.create(
        model="stub", messages=[{"role": "user", "content": prompt}], max_tokens=50
    )
    return str(answer.choices[0].message.content or "")


async def _batch(way: str, base_url: str, prompts: list[str]) -> list[str]:
    gate = asyncio.Semaphore(CONCURRENCY)
    return list(await asyncio.gather(*(_one(way, base_url, p, gate) for p in prompts)))


def _each_row(run: Callable[..., str], way: str, base_url: str, prompts: pd.Series) -> pd.Series:
    return pd.Series([run(_one, way, base_url, prompt, None) for prompt in prompts])


def _asyncio_run(fn: Callable[..., Coroutine[Any, Any, str]], *args: Any) -> str:
    return asyncio.run(fn(*args))


def seed_per_row(prompts: pd.Series, base_url: pd.Series) -> pd.Series:
    """The seed's shape: ``asyncio.run`` for each row (a new loop per call)."""
    return _each_row(_asyncio_run, "seed_per_row", base_url.iloc[0], prompts)


def seed_per_batch(prompts: pd.Series, base_url: pd.Series) -> pd.Series:
    """``asyncio.run`` once per Arrow batch, the batch's calls concurrent."""
    return pd.Series(asyncio.run(_batch("seed_per_batch", base_url.iloc[0], list(prompts))))


def executor_per_row(prompts: pd.Series, base_url: pd.Series) -> pd.Series:
    """``AsyncExecutor.run_async`` for each row: every call on the worker's one loop."""
    return _each_row(AsyncExecutor.run_async, "executor_per_row", base_url.iloc[0], prompts)


def executor_per_batch(prompts: pd.Series, base_url: pd.Series) -> pd.Series:
    """``AsyncExecutor.run_async`` once per Arrow batch, the batch's calls concurrent."""
    url = base_url.iloc[0]
    return pd.Series(AsyncExecutor.run_async(_batch, "executor_per_batch", url, list(prompts)))


WAYS: dict[str, Callable[[pd.Series, pd.Series], pd.Series]] = {
    "seed_per_row": seed_per_row,
    "seed_per_batch": seed_per_batch,
    "executor_per_row": executor_per_row,
    "executor_per_batch": executor_per_batch,
}
