"""Upstream faults: the stub fails 10%, 30% and 100% of calls; every row still has its findings,
each fault becomes one fallback note counted by the metric; strict mode answers 502/504 only."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from bench.harness import process_stats
from bench.reliability.load import Load, drive
from bench.reliability.processes import Stub, server
from bench.reliability.report import Result


def screen_rows(load: Load) -> tuple[int, int, int]:
    """(rows with findings, rows with a fallback note, 5xx answers)."""
    findings = fallbacks = server_errors = 0
    for o in load.outcomes:
        if o.status is not None and o.status >= 500:
            server_errors += 1
        if o.status != 200:
            continue
        for row in json.loads(o.body)["predictions"]:
            findings += bool(row["interactions"])
            fallbacks += row["note_source"] == "fallback"
    return findings, fallbacks, server_errors


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    per_rate = 100 if quick else 200
    faults = ["429", "500", "503", "slow", "reset"]
    figures: dict[str, Any] = {}
    passed = True
    llm_timeout = "1"  # below the stub's slow fault, so a slow answer times out
    with server(model, stub, logs, "upstream-faults", PHARMACY_LLM_TIMEOUT=llm_timeout) as srv:
        workers = srv.workers()
        stub.configure(latency_ms=20, fault_rate=0)
        # warm-up: pools and connections, so that threads are counted from a settled worker
        asyncio.run(drive(srv.base, 50, seconds=30, max_requests=300))
        threads: dict[int, list[float]] = {w: [process_stats(w)["threads"]] for w in workers}
        for rate in (0.1, 0.3, 1.0):
            stub.configure(latency_ms=20, fault_rate=rate, faults=faults, slow_seconds=2)
            httpx.post(f"{stub.url}/stats/reset", timeout=5)
            fallbacks_before = srv.metric("pharmacy_llm_fallbacks_total")
            load = asyncio.run(drive(srv.base, 20, seconds=120, max_requests=per_rate))
            injected = sum(stub.stats()["faults"].values())
            findings, fallback_rows, server_errors = screen_rows(load)
            counted = srv.metric("pharmacy_llm_fallbacks_total") - fallbacks_before
            ok = (
                len(load.ok()) == per_rate
                and findings == per_rate
                and fallback_rows == injected == counted
                and server_errors == 0
            )
            passed = passed and ok
            figures[f"{rate:.0%} faults"] = (
                f"{len(load.ok())}/{per_rate} answered 200, {findings} rows with findings, "
                f"{injected} faults injected, {fallback_rows} fallback notes, {counted:.0f} counted by the metric"
            )
            for w in workers:
                threads[w].append(process_stats(w)["threads"])
        figures["workers alive, same pids"] = srv.workers() == workers
        figures["threads per worker after warm-up, 10%, 30%, 100%"] = "; ".join(
            ", ".join(f"{n:.0f}" for n in counts) for counts in threads.values()
        )
        passed = passed and srv.workers() == workers
        # main, uvloop's executor, the executor loop and its default pool (min(32, cores + 4)
        # threads, for DNS lookups): bounded, and no growth once the faults are on
        passed = passed and all(max(c) <= 12 and c[-1] <= c[1] + 1 for c in threads.values())
    stub.configure(fault_rate=0.3, faults=faults, slow_seconds=2, latency_ms=20)
    with server(
        model,
        stub,
        logs,
        "upstream-faults-strict",
        PHARMACY_LLM_STRICT="true",
        PHARMACY_LLM_TIMEOUT=llm_timeout,
    ) as srv:
        load = asyncio.run(drive(srv.base, 20, seconds=120, max_requests=per_rate))
    statuses = Counter(o.status for o in load.outcomes)
    strict_ok = set(statuses) <= {200, 502, 504} and statuses[200] < per_rate
    passed = passed and strict_ok
    figures["strict mode, 30% faults"] = ", ".join(
        f"{n} x {s}" for s, n in sorted(statuses.items(), key=str)
    )
    stub.configure(fault_rate=0)
    return Result(
        "upstream-faults",
        passed,
        figures,
        "Faults drawn from 429, 500, 503, slow (2 s, LLM timeout 1 s), reset.",
    )
