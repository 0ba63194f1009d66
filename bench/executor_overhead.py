"""Per-call cost of bridging sync code to coroutines: AsyncExecutor against the alternatives.

Every method is measured interleaved in one run (round after round, the order rotating), and
the medians are reported with their ratios. Results go to bench/results/executor_overhead.md.

    python bench/executor_overhead.py [--rounds 5] [--calls 1000] [--output PATH]

``--submission`` instead compares, inside ``AsyncExecutor.run``, the executor's own submission
to its loop with the same submission built on ``asyncio.run_coroutine_threadsafe`` (same
closing lock and in-flight tracking), and prints a markdown section:

    python bench/executor_overhead.py --submission [--rounds 5] [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import datetime as dt
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal
from asgiref.sync import async_to_sync

from modelhub.serving import (
    AsyncExecutor,
    ExecutorClosedError,
    ExecutorConfig,
    ExecutorTimeoutError,
)
from modelhub.serving._loop import LoopThread
from modelhub.serving._work import Work

RESULTS = Path(__file__).parent / "results"

Bridge = Callable[[Callable[[], Awaitable[Any]]], Any]


async def trivial() -> int:
    return 1


async def two_sleeps() -> int:
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return 1


async def io_wait() -> int:
    await asyncio.sleep(0.05)
    return 1


WORKLOADS: dict[str, Callable[[], Awaitable[Any]]] = {
    "trivial coroutine": trivial,
    "asyncio.sleep(0) twice": two_sleeps,
}


# -- the bridges ---------------------------------------------------------------------------


@contextmanager
def executor_bridge(mode: str) -> Iterator[Bridge]:
    with AsyncExecutor(ExecutorConfig(mode=mode)) as executor:  # type: ignore[arg-type]
        executor.run(trivial)  # start the loop outside the measurement
        yield executor.run


@contextmanager
def asyncio_run_bridge() -> Iterator[Bridge]:
    yield lambda fn: asyncio.run(fn())


@contextmanager
def threadsafe_bridge() -> Iterator[Bridge]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-loop", daemon=True)
    thread.start()
    try:
        yield lambda fn: asyncio.run_coroutine_threadsafe(fn(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@contextmanager
def runner_bridge() -> Iterator[Bridge]:
    local = threading.local()
    runners: list[asyncio.Runner] = []
    lock = threading.Lock()

    def call(fn: Callable[[], Awaitable[Any]]) -> Any:
        runner = getattr(local, "runner", None)
        if runner is None:
            runner = local.runner = asyncio.Runner()
            with lock:
                runners.append(runner)
        # A fresh context per call, as a correct bridge must (the Runner's own is shared).
        return runner.run(fn(), context=contextvars.copy_context())  # type: ignore[arg-type]

    try:
        yield call
    finally:
        for runner in runners:  # closed from another thread: fine once its thread is done
            runner.close()


@contextmanager
def asgiref_bridge() -> Iterator[Bridge]:
    yield lambda fn: async_to_sync(fn)()


@contextmanager
def anyio_bridge() -> Iterator[Bridge]:
    with start_blocking_portal() as portal:
        yield portal.call


BRIDGES: dict[str, Callable[[], AbstractContextManager[Bridge]]] = {
    "AsyncExecutor shared": lambda: executor_bridge("shared"),
    "AsyncExecutor isolated": lambda: executor_bridge("isolated"),
    "asyncio.run": asyncio_run_bridge,
    "run_coroutine_threadsafe": threadsafe_bridge,
    "per-thread asyncio.Runner": runner_bridge,
    "asgiref async_to_sync": asgiref_bridge,
    "anyio BlockingPortal.call": anyio_bridge,
}


# -- measurement ---------------------------------------------------------------------------


def per_call_us(
    bridge: Bridge, fn: Callable[[], Awaitable[Any]], threads: int, calls: int
) -> float:
    """Wall time per call in µs, ``calls`` calls spread over ``threads`` worker threads."""
    per_thread = calls // threads
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(per_thread):
            bridge(fn)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for worker_thread in workers:
        worker_thread.start()
    barrier.wait()
    started = time.perf_counter()
    for worker_thread in workers:
        worker_thread.join()
    return (time.perf_counter() - started) / (per_thread * threads) * 1e6


def io_calls_per_second(bridge: Bridge, threads: int = 64, calls: int = 20) -> float:
    """Throughput once all threads are started (timed from the barrier, like per_call_us)."""
    return 1e6 / per_call_us(bridge, io_wait, threads, threads * calls)


def timeout_overshoot_ms(samples: int = 30, timeout: float = 0.05) -> list[float]:
    """How long after its deadline ExecutorTimeoutError reaches the caller (shared mode)."""
    overshoots = []
    with AsyncExecutor() as executor:
        for _ in range(samples):
            started = time.perf_counter()
            try:
                executor.run(asyncio.sleep, 10, timeout=timeout)
            except ExecutorTimeoutError:
                overshoots.append((time.perf_counter() - started - timeout) * 1e3)
    return overshoots


def run(rounds: int, calls: int) -> dict[str, Any]:
    samples: dict[tuple[str, str, int], list[float]] = {}
    io: dict[str, list[float]] = {}
    names = list(BRIDGES)
    for round_index in range(rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            with ExitStack() as stack:
                bridge = stack.enter_context(BRIDGES[name]())
                for workload, fn in WORKLOADS.items():
                    for threads in (1, 16):
                        value = per_call_us(bridge, fn, threads, calls)
                        samples.setdefault((name, workload, threads), []).append(value)
                io.setdefault(name, []).append(io_calls_per_second(bridge))
        print(f"round {round_index + 1}/{rounds} done", file=sys.stderr)
    return {
        "per_call_us": {
            f"{name}|{workload}|{threads}": values
            for (name, workload, threads), values in samples.items()
        },
        "io_calls_per_second": io,
        "timeout_overshoot_ms": timeout_overshoot_ms(),
    }


# -- submission: the executor's own against run_coroutine_threadsafe ----------------------


async def _await_work(work: Work[Any]) -> Any:
    return await work.make()


class ThreadsafeLoopThread(LoopThread):
    """The candidate: submission through asyncio.run_coroutine_threadsafe, keeping the closing
    lock and the in-flight set (contextvars are copied by call_soon_threadsafe's handle, and
    cancelling the returned future cancels the task)."""

    def submit(self, work: Work[Any]) -> Any:
        with self._lock:
            if self.closing:
                work.discard()
                raise ExecutorClosedError("closing")
            future: Any = asyncio.run_coroutine_threadsafe(_await_work(work), self.loop)
            self.pending.add(future)
        future.add_done_callback(self.pending.discard)
        future.cancel_task = future.cancel
        return future


SUBMITTERS: dict[str, type[LoopThread]] = {
    "AsyncExecutor (its own submission)": LoopThread,
    "AsyncExecutor (run_coroutine_threadsafe)": ThreadsafeLoopThread,
}


@contextmanager
def submitter_bridge(loop_thread_type: type[LoopThread]) -> Iterator[Bridge]:
    with AsyncExecutor() as executor:
        executor._loop_thread = loop_thread_type(executor.config, executor._report.lag)
        executor.run(trivial)
        yield executor.run


def submission(rounds: int, calls: int) -> str:
    samples: dict[tuple[str, int], list[float]] = {}
    names = list(SUBMITTERS)
    for round_index in range(rounds):
        for threads in (1, 8):
            order = names if (round_index + threads) % 2 else names[::-1]
            for name in order:
                with submitter_bridge(SUBMITTERS[name]) as bridge:
                    value = per_call_us(bridge, trivial, threads, calls)
                samples.setdefault((name, threads), []).append(value)
        print(f"round {round_index + 1}/{rounds} done", file=sys.stderr)
    median = {key: statistics.median(values) for key, values in samples.items()}
    info = machine()
    lines = [
        "## Submission: the executor's own against run_coroutine_threadsafe",
        "",
        f"- Date: {info['date']}; CPU: {info['cpu']}; Python {info['python']}",
        f"- Command: `python bench/executor_overhead.py --submission --rounds {rounds} "
        f"--calls {calls}`",
        f"- Method: `AsyncExecutor.run(trivial)` in shared mode, {calls} calls per cell from 1 "
        f"thread, then from 8 threads ({calls // 8} each); {rounds} rounds, the two submitters "
        "interleaved in alternating order; median µs per call (wall time / calls).",
        "",
        "| submission | 1 thread | 8 threads |",
        "|---|---:|---:|",
    ]
    for name in names:
        lines.append(f"| {name} | {median[(name, 1)]:.1f} | {median[(name, 8)]:.1f} |")
    own, candidate = names
    ratios = {
        threads: [
            theirs / ours
            for theirs, ours in zip(
                samples[(candidate, threads)], samples[(own, threads)], strict=True
            )
        ]
        for threads in (1, 8)
    }
    lines += [
        "",
        "run_coroutine_threadsafe / own submission, per round (same round, same load): "
        + "; ".join(
            f"{threads} thread(s): "
            + ", ".join(f"{r:.2f}" for r in ratios[threads])
            + f" (median {statistics.median(ratios[threads]):.2f}x)"
            for threads in (1, 8)
        )
        + ".",
        "",
        "The standard library would be preferred within 1.10x of the executor's own cost: "
        + (
            "it is, so prefer run_coroutine_threadsafe."
            if max(statistics.median(r) for r in ratios.values()) <= 1.10
            else "it is not, so the executor keeps its own submission."
        ),
        "",
    ]
    return "\n".join(lines)


# -- report --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
            platform.processor(),
        )
    except OSError:
        cpu = platform.processor()
    versions = {
        package: importlib.metadata.version(package)
        for package in ("modelhub-sdk", "tenacity", "asgiref", "anyio")
    }
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu} ({threading.active_count() and __import__('os').cpu_count()} cores)",
        "python": platform.python_version(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def report(raw: dict[str, Any], rounds: int, calls: int, command: str) -> str:
    info = machine()
    median = {key: statistics.median(values) for key, values in raw["per_call_us"].items()}
    lines = [
        "# AsyncExecutor overhead",
        "",
        f"- Date: {info['date']}",
        f"- CPU: {info['cpu']}",
        f"- Python: {info['python']}; {info['packages']}",
        f"- Command: `{command}`",
        f"- Method: {rounds} rounds, every method once per round in rotating order; "
        f"{calls} calls per cell; medians over rounds. 16 threads: wall time / calls.",
        "",
        "## Per-call cost (median µs, lower is better)",
        "",
        "| bridge | trivial, 1 thread | trivial, 16 threads | sleep(0)x2, 1 thread | sleep(0)x2, 16 threads |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in BRIDGES:
        cells = [
            f"{median[f'{name}|{workload}|{threads}']:.1f}"
            for workload in WORKLOADS
            for threads in (1, 16)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    def ratio(a: str, b: str, workload: str, threads: int) -> float:
        return median[f"{a}|{workload}|{threads}"] / median[f"{b}|{workload}|{threads}"]

    lines += ["", "## Targets", ""]
    for workload in WORKLOADS:
        for threads in (1, 16):
            vs_raw = ratio("AsyncExecutor shared", "run_coroutine_threadsafe", workload, threads)
            vs_asgiref = ratio("asgiref async_to_sync", "AsyncExecutor shared", workload, threads)
            lines.append(
                f"- {workload}, {threads} thread(s): shared = {vs_raw:.2f}x raw "
                f"run_coroutine_threadsafe (target <= 1.3x: {'met' if vs_raw <= 1.3 else 'MISSED'}); "
                f"asgiref = {vs_asgiref:.1f}x shared (target >= 5x: "
                f"{'met' if vs_asgiref >= 5 else 'MISSED'})"
            )
    ideal = 64 / 0.05
    lines += [
        "",
        "## I/O: 64 threads x 20 calls of asyncio.sleep(0.05) (ideal 1280 calls/s)",
        "",
        "| bridge | calls/s (median) | % of ideal |",
        "|---|---:|---:|",
    ]
    for name in BRIDGES:
        value = statistics.median(raw["io_calls_per_second"][name])
        lines.append(f"| {name} | {value:.0f} | {100 * value / ideal:.0f}% |")
    overshoot = raw["timeout_overshoot_ms"]
    lines += [
        "",
        "## Timeout latency (shared mode, 30 calls with a 50 ms deadline)",
        "",
        f"ExecutorTimeoutError reached the caller a median {statistics.median(overshoot):.1f} ms "
        f"after the deadline (max {max(overshoot):.1f} ms; target: within 50 ms).",
        "",
        "## Reading",
        "",
        "- The per-thread `asyncio.Runner` is cheapest because each thread runs its own loop; that",
        "  is exactly what breaks a module-level client shared by threads (ARCHITECTURE.md), so it",
        "  is a floor, not an alternative.",
        "- `AsyncExecutor isolated` pays for a new loop per call, like `asyncio.run`, plus retries.",
        "- The I/O row is bounded by the GIL on 2 cores: every call crosses two threads.",
        "",
        "## Raw samples",
        "",
        "```json",
        json.dumps(raw, indent=1, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1600)
    parser.add_argument("--output", type=Path, default=RESULTS / "executor_overhead.md")
    parser.add_argument(
        "--submission",
        action="store_true",
        help="only compare the two submissions and print it (a full run includes it)",
    )
    args = parser.parse_args()
    if args.submission:
        print(submission(args.rounds, args.calls))
        return
    raw = run(args.rounds, args.calls)
    command = "python bench/executor_overhead.py " + " ".join(sys.argv[1:])
    text = report(raw, args.rounds, args.calls, command.strip())
    # The submission comparison is part of every full run, so a re-run never drops it.
    text += "\n" + submission(args.rounds, 20_000)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text.split("## Raw samples")[0])


if __name__ == "__main__":
    main()
