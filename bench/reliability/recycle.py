"""Recycle: MAX_REQUESTS under load replaces workers through the SIGTERM drain; nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.reliability.load import drive
from bench.reliability.processes import Stub, server
from bench.reliability.report import Result


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    seconds = 15 if quick else 30
    stub.configure(latency_ms=50, fault_rate=0)
    with server(model, stub, logs, "recycle", MAX_REQUESTS="300") as srv:
        before = srv.workers()
        load = asyncio.run(drive(srv.base, 50, seconds=seconds))
        after = srv.workers()
        records = srv.log_records()
    recycled = [r for r in records if r.get("event") == "recycling"]
    failures = load.failures()
    return Result(
        "recycle",
        not failures and len(recycled) >= 2,
        {
            **load.figures(clients=50, seconds=seconds),
            "workers recycled (recycling lines)": len(recycled),
            "workers at the end that were there at the start": len(set(before) & set(after)),
            "p50 / p99 ms": "{p50:.0f} / {p99:.0f}".format(**load.latency_ms()),
        },
        "MAX_REQUESTS=300 (jitter 30), 2 workers, 50 keep-alive clients, upstream 50 ms: each "
        "worker recycles several times, through the SIGTERM drain. Target: zero failed requests.",
    )
