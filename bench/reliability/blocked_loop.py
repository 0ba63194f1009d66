"""Blocked loop: a coroutine blocks the executor loop; requests time out with 504 instead of
hanging, /health/live answers 503, the lag shows in the metric and a WARNING."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from bench.reliability.load import invoke
from bench.reliability.processes import Server, Stub, server
from bench.reliability.report import Result


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    stub.configure(latency_ms=20, fault_rate=0)
    block = 8.0
    with server(
        model,
        stub,
        logs,
        "blocked-loop",
        workers=1,
        PHARMACY_FAULT_BLOCK_LOOP_SECONDS=str(block),
        PHARMACY_REQUEST_TIMEOUT="3",
    ) as srv:
        results: dict[str, Any] = {}

        def blocked_request() -> None:
            t0 = time.monotonic()
            response = invoke(srv.base)
            results["blocked"] = (response.status_code, time.monotonic() - t0, response.json())

        def second_request() -> None:
            t0 = time.monotonic()
            response = invoke(srv.base)
            results["second"] = (response.status_code, time.monotonic() - t0)

        first = asyncio.run(_run_blocked(srv, blocked_request, second_request, results))
        lag_while_blocked = results["lag while blocked"]
        time.sleep(block)  # let the loop come back
        lag = srv.metric("modelhub_executor_loop_lag_seconds")
        after = invoke(srv.base).status_code
        live_after = httpx.get(f"{srv.base}/health/live", timeout=5).status_code
        records = srv.log_records()
    warnings = [
        r
        for r in records
        if r.get("level") == "WARNING" and "lag" in str(r.get("event", "")) + r.get("message", "")
    ]
    status, seconds, body = results["blocked"]
    figures = {
        "blocking request": f"{status} after {seconds:.1f} s ({body.get('error_code')}), timeout 3 s, block {block:.0f} s",
        "request behind it": "{} after {:.1f} s".format(*results["second"]),
        "/health/live while blocked": first,
        "loop lag metric while blocked / after": f"{lag_while_blocked:.1f} s / {lag:.1f} s",
        "lag WARNING lines": len(warnings),
        "after the block: /invocations, /health/live": f"{after}, {live_after}",
    }
    passed = (
        status == 504
        and seconds < 5
        and results["second"][0] in (503, 504)
        and results["second"][1] < 5
        and first.startswith("503")
        and lag_while_blocked >= 1.0
        and lag >= block * 0.9
        and warnings
        and after == 200
        and live_after == 200
    )
    return Result(
        "blocked-loop",
        bool(passed),
        figures,
        "One worker, PHARMACY_FAULT_BLOCK_LOOP_SECONDS=8 (the first prediction sleeps on the "
        "executor loop), PHARMACY_REQUEST_TIMEOUT=3. Targets: both requests 504 within 5 s "
        "(not hung), /health/live 503, loop lag in the metric and a WARNING, all well afterwards.",
    )


async def _run_blocked(
    srv: Server, blocked: Callable[[], None], second: Callable[[], None], results: dict[str, Any]
) -> str:
    task = asyncio.create_task(asyncio.to_thread(blocked))
    await asyncio.sleep(1.0)  # the loop is blocked now
    second_task = asyncio.create_task(asyncio.to_thread(second))
    async with httpx.AsyncClient(timeout=10) as client:
        t0 = time.monotonic()
        live = await client.get(f"{srv.base}/health/live")
        live_text = f"{live.status_code} in {time.monotonic() - t0:.1f} s: {live.text[:80]}"
    results["lag while blocked"] = await asyncio.to_thread(
        srv.metric, "modelhub_executor_loop_lag_seconds"
    )
    await task
    await second_task
    return live_text
