"""A loop-affine client shaped like an LLM SDK's, and a way to call it from many threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import aiohttp

THREADS, CALLS_PER_THREAD = 20, 10


def hammer(call: Callable[[str], Any]) -> tuple[list[Any], list[BaseException]]:
    """THREADS threads x CALLS_PER_THREAD calls, started together."""
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        barrier.wait(10)
        for n in range(CALLS_PER_THREAD):
            try:
                value = call(f"{index}-{n}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                with lock:
                    errors.append(exc)
            else:
                with lock:
                    results.append(value)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results, errors


class ModuleLevelSession:
    """Like an SDK's module-level client: one aiohttp session, created lazily on first use."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session: aiohttp.ClientSession | None = None

    async def echo(self, value: str) -> str:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.get(f"{self.base_url}/echo", params={"value": value}) as response:
            response.raise_for_status()
            body = await response.json()
            return str(body["value"])

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
