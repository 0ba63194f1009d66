"""Overload: 10x the configured capacity; every refusal a 503 with Retry-After, the accepted
answered within a bounded p99, memory bounded, and all well after the burst."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.harness import process_stats
from bench.reliability.load import drive
from bench.reliability.processes import Stub, server
from bench.reliability.report import Result


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    stub.configure(latency_ms=200, fault_rate=0)
    env = {"PHARMACY_PREDICT_THREADS": "8", "PHARMACY_MAX_QUEUE": "8"}
    capacity = 16
    with server(model, stub, logs, "overload", workers=1, **env) as srv:
        worker = srv.workers()[0]
        rss_before = process_stats(worker)["rss_mib"]
        peak = {"rss": rss_before}

        def sample(_: int) -> None:
            peak["rss"] = max(peak["rss"], process_stats(worker)["rss_mib"])

        burst = asyncio.run(drive(srv.base, capacity * 10, seconds=10, sample=sample))
        after = asyncio.run(drive(srv.base, capacity // 2, seconds=5))
        shed_metric = srv.metric("pharmacy_http_requests_shed_total")
    shed = [o for o in burst.outcomes if o.status == 503]
    without_retry_after = [o for o in shed if not o.retry_after]
    other = [o for o in burst.outcomes if o.status not in (200, 503)]
    lat = burst.latency_ms()
    passed = (
        bool(shed)
        and not without_retry_after
        and not other
        and lat["p99"] < 2000
        and not after.failures()
        and peak["rss"] - rss_before < 200
    )
    return Result(
        "overload",
        passed,
        {
            "capacity (threads + queue)": capacity,
            "burst clients": capacity * 10,
            "burst answers 200 / 503 / other": f"{len(burst.ok())} / {len(shed)} / {len(other)}",
            "503 without Retry-After": len(without_retry_after),
            "shed counted by the metric": int(shed_metric),
            "p50 / p99 of accepted (ms)": f"{lat['p50']:.0f} / {lat['p99']:.0f} (upstream 200 ms)",
            "worker RSS before / peak (MiB)": f"{rss_before:.0f} / {peak['rss']:.0f}",
            "after the burst (8 clients, 5 s)": f"{len(after.ok())} x 200, failures {dict(after.failures()) or 0}, "
            + "p99 {p99:.0f} ms".format(**after.latency_ms()),
        },
        "One worker, PHARMACY_PREDICT_THREADS=8 and PHARMACY_MAX_QUEUE=8 (capacity 16), upstream "
        "200 ms, 160 clients for 10 s (a client waits 50 ms after a 503). Targets: every refusal "
        "a 503 with Retry-After, nothing else; p99 of the accepted under 2 s; RSS growth under "
        "200 MiB; every request answered 200 after the burst.",
    )
