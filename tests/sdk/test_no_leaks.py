"""10,000 calls from 32 threads, then close(): nothing left behind."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_ten_thousand_calls_from_32_threads_leave_nothing_behind(
    make_executor: Any, mode: str
) -> None:
    executor = make_executor(mode)
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    calls_per_thread = 10_000 // 32 + 1
    results: list[int] = []
    lock = threading.Lock()

    async def work(n: int) -> int:
        await asyncio.sleep(0)
        return n

    def caller() -> None:
        total = sum(executor.run(work, n, timeout=30) for n in range(calls_per_thread))
        with lock:
            results.append(total)

    threads = [threading.Thread(target=caller) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 32
    assert set(results) == {sum(range(calls_per_thread))}

    loop_thread = executor._loop_thread  # white-box: the loop must be closed afterwards
    if loop_thread is not None:
        assert not loop_thread.pending  # every finished call was forgotten
    executor.close()
    assert set(threading.enumerate()) == threads_before
    assert open_fds() <= fds_before
    if mode == "shared":
        assert loop_thread is not None
        assert loop_thread.loop.is_closed()
        assert not asyncio.all_tasks(loop_thread.loop)
    else:
        assert loop_thread is None  # isolated mode never starts the shared loop
