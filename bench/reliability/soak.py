"""Soak: 20,000 requests; RSS, threads and open files per worker must not grow (slopes after
warm-up)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from pathlib import Path
from typing import Any

from bench.harness import process_stats
from bench.reliability.load import drive
from bench.reliability.processes import Stub, server
from bench.reliability.report import Result


def slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3 or len(set(xs)) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    total = 5_000 if quick else 20_000
    stub.configure(latency_ms=5, fault_rate=0)
    with server(model, stub, logs, "soak") as srv:
        workers = srv.workers()
        samples: dict[int, list[tuple[int, dict[str, float]]]] = {w: [] for w in workers}

        def sample(done: int) -> None:
            for w in workers:
                with contextlib.suppress(FileNotFoundError):
                    samples[w].append((done, process_stats(w)))

        load = asyncio.run(drive(srv.base, 50, seconds=600, max_requests=total, sample=sample))
        sample(len(load.outcomes))
        same_workers = srv.workers() == workers
    figures: dict[str, Any] = {
        "requests": len(load.outcomes),
        "failed": sum(load.failures().values()),
        "p50 / p99 ms": "{p50:.0f} / {p99:.0f}".format(**load.latency_ms()),
        "workers unchanged": same_workers,
    }
    passed = not load.failures() and same_workers
    for index, points in enumerate(samples.values(), 1):
        warm = [p for p in points if p[0] >= total * 0.2]  # after warm-up (caches, pools)
        xs = [p[0] / 1000 for p in warm]
        rss_slope = slope(xs, [p[1]["rss_mib"] for p in warm])
        fds_slope = slope(xs, [p[1]["fds"] for p in warm])
        threads = [p[1]["threads"] for p in warm]
        fds = [p[1]["fds"] for p in warm]
        figures[f"worker {index} RSS MiB first -> last sample, slope"] = (
            f"{warm[0][1]['rss_mib']:.1f} -> {warm[-1][1]['rss_mib']:.1f}, "
            f"{rss_slope:+.3f} MiB per 1,000 requests"
        )
        figures[f"worker {index} threads min-max"] = f"{min(threads):.0f}-{max(threads):.0f}"
        figures[f"worker {index} open files min-max, slope"] = (
            f"{min(fds):.0f}-{max(fds):.0f} (client and upstream sockets come and go), "
            f"{fds_slope:+.2f} per 1,000 requests"
        )
        passed = passed and rss_slope < 0.5 and max(threads) - min(threads) <= 2 and fds_slope < 0.5
    return Result(
        "soak",
        passed,
        figures,
        f"{total:,} requests, 50 clients, stub answering in 5 ms; samples every second after the "
        "first 20% (warm-up). Targets: RSS slope under 0.5 MiB and open-files slope under 0.5 per "
        "1,000 requests, thread count flat (within 2).",
    )
