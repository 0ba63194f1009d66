"""Rolling restart: 50 clients for 30 s while the master gets SIGHUP twice and one worker SIGTERM;
every request must be answered 200."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from bench.reliability.load import drive
from bench.reliability.processes import Stub, server
from bench.reliability.report import Result


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    seconds = 15 if quick else 30
    stub.configure(latency_ms=100, fault_rate=0)
    with server(model, stub, logs, "rolling-restart", GRACEFUL_TIMEOUT="20") as srv:
        events = [
            (seconds * 0.2, lambda: srv.process.send_signal(signal.SIGHUP)),
            (seconds * 0.47, lambda: srv.process.send_signal(signal.SIGHUP)),
            (seconds * 0.73, lambda: os.kill(srv.workers()[0], signal.SIGTERM)),
        ]
        before = srv.workers()
        load = asyncio.run(drive(srv.base, 50, seconds=seconds, events=events))
        after = srv.workers()
    failures = load.failures()
    start = min(o.started for o in load.outcomes)
    failed_at = [
        f"{o.finished - start:.2f} s {o.error or o.status} {o.body[:60]!r}"
        for o in load.outcomes
        if o.status != 200
    ]
    return Result(
        "rolling-restart",
        not failures,
        {
            **load.figures(clients=50, seconds=seconds),
            "p50 / p99 ms": "{p50:.0f} / {p99:.0f}".format(**load.latency_ms()),
            "workers replaced": f"{len(set(before) - set(after))} of {len(before)} (2 x SIGHUP, 1 x SIGTERM)",
            "signals at": ", ".join(f"{e[0]:.1f} s" for e in events),
            "failures at": "; ".join(failed_at[:10]) or "-",
        },
        "Target: zero failed requests (every request answered 200).",
    )
