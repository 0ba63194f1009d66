"""The executor in a real Jupyter kernel: ipykernel started and driven through jupyter_client.

A kernel runs every cell inside its own asyncio loop, in the main thread. ``run_async`` from a
cell must work there (it blocks that loop until it returns, as any synchronous call does, and
says so once per call site); ``await executor.arun(...)`` must leave the kernel's loop free
while the call runs on the executor's loop.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

pytestmark = pytest.mark.slow  # a kernel takes a few seconds to start

KERNEL_NAME = "modelhub-sdk-test"
BLOCKED = "async_caller_loop_blocked"
TICK = 0.01  # the kernel-loop ticker's period, in seconds

# Runs once in the kernel: the SDK, a coroutine function, an executor instance, and a task on
# the kernel's loop that counts its turns across cells (it advances only while that loop is free).
SETUP = f"""
import asyncio
import threading
import time

from modelhub.serving import AsyncExecutor

async def double(value):
    await asyncio.sleep(0.01)
    return value * 2

async def until_set(event):
    # Runs on the executor's loop and ends only once the kernel's loop has set the event.
    while not event.is_set():
        await asyncio.sleep(0.005)
    return "set"

executor = AsyncExecutor()
ticks = 0

async def ticker():
    global ticks
    while True:
        await asyncio.sleep({TICK})
        ticks += 1

ticker_task = asyncio.get_running_loop().create_task(ticker())
"""


@dataclass
class Cell:
    """What one execute request produced."""

    stdout: str = ""
    stderr: str = ""
    errors: list[str] = field(default_factory=list)


class Kernel:
    def __init__(self, client: Any) -> None:
        self._client = client

    def run(self, code: str, timeout: float = 60) -> Cell:
        cell = Cell()

        def output(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                if content["name"] == "stdout":
                    cell.stdout += content["text"]
                else:
                    cell.stderr += content["text"]
            elif message["msg_type"] == "error":
                cell.errors.append(f"{content['ename']}: {content['evalue']}")

        reply = self._client.execute_interactive(
            textwrap.dedent(code), output_hook=output, timeout=timeout
        )
        if reply["content"]["status"] != "ok" and not cell.errors:
            cell.errors.append(str(reply["content"]))
        return cell

    def ok(self, code: str) -> Cell:
        cell = self.run(code)
        assert cell.errors == [], cell
        return cell


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel for the module, on this interpreter (which has modelhub installed), with a
    kernel spec of its own so that no installed ``python3`` spec is picked up instead."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL_NAME, "language": "python"})
    )
    manager = KernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]),
        ip="127.0.0.1",
        connection_file=str(folder / "connection.json"),
    )
    manager.start_kernel(cwd=str(folder))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        kernel = Kernel(client)
        kernel.ok(SETUP)
        yield kernel
    finally:
        client.stop_channels()
        manager.shutdown_kernel()


def test_a_cell_runs_inside_a_running_loop_in_the_main_thread(kernel: Kernel) -> None:
    """The premise of the other tests: a synchronous cell runs while the kernel's loop runs."""
    cell = kernel.ok(
        """
        print(asyncio.get_running_loop().is_running(),
              threading.current_thread() is threading.main_thread())
        """
    )
    assert cell.stdout == "True True\n"


def test_run_async_from_a_cell_works_and_warns_once(kernel: Kernel) -> None:
    code = "print([AsyncExecutor.run_async(double, n, timeout=10) for n in range(3)])"
    first = kernel.ok(code)
    again = kernel.ok(code)  # the same cell executed again: the same call site

    assert first.stdout == again.stdout == "[0, 2, 4]\n"
    # Three calls, one warning, shown in the cell's output (the SDK's logger has no handler
    # here, so logging's last-resort handler writes it to the kernel's stderr stream).
    assert first.stderr.count(BLOCKED) == 1, first.stderr
    assert "the call works but blocks that loop" in first.stderr
    assert BLOCKED not in again.stderr, again.stderr


def test_another_cell_is_another_call_site_warned_once(kernel: Kernel) -> None:
    code = "print(AsyncExecutor.run_async(double, 5, timeout=10))"
    first, again = kernel.ok(code), kernel.ok(code)
    assert first.stdout == again.stdout == "10\n"
    assert first.stderr.count(BLOCKED) == 1, first.stderr
    assert BLOCKED not in again.stderr, again.stderr


def test_await_arun_in_a_cell_leaves_the_kernel_loop_free(kernel: Kernel) -> None:
    # Ordering: the call ends only after a callback the cell queued on the kernel's loop ran,
    # which can happen only while the cell awaits.
    cell = kernel.ok(
        """
        turned = threading.Event()
        asyncio.get_running_loop().call_soon(turned.set)
        print(await executor.arun(until_set, turned, timeout=20))
        """
    )
    assert cell.stdout == "set\n"
    assert BLOCKED not in cell.stderr

    # Progress: the kernel's ticker task keeps turning while the cell awaits a 0.5 s call.
    cell = kernel.ok(
        """
        before, started = ticks, time.monotonic()
        await executor.arun(asyncio.sleep, 0.5)
        print(ticks - before, time.monotonic() - started)
        """
    )
    ticked, elapsed = (float(word) for word in cell.stdout.split())
    assert elapsed >= 0.5
    # At least a quarter of the turns a free loop would make (a loaded machine makes fewer).
    assert ticked * TICK / elapsed >= 0.25, (ticked, elapsed)


def test_a_blocking_run_from_a_cell_stops_the_kernel_loop(kernel: Kernel) -> None:
    """The same two probes with ``run``: they see the blocked loop, so the test above would
    fail if ``arun`` blocked."""
    cell = kernel.ok(
        """
        turned = threading.Event()
        asyncio.get_running_loop().call_soon(turned.set)
        before = ticks
        try:
            executor.run(until_set, turned, timeout=1)
        except TimeoutError as exc:
            print(type(exc).__name__)
        executor.run(asyncio.sleep, 0.2)
        print(ticks - before, turned.is_set())
        """
    )
    assert cell.stdout == "ExecutorTimeoutError\n0 False\n"
    assert cell.stderr.count(BLOCKED) == 2, cell.stderr  # two call sites in this cell


def test_the_kernel_survives_and_the_ticker_still_runs(kernel: Kernel) -> None:
    cell = kernel.ok("print(ticker_task.done(), executor.closed)")
    assert cell.stdout == "False False\n"
