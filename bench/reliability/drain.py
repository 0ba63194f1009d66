"""Drain: SIGTERM to the master under load; readiness turns 503 at once, every request in flight
is answered, nothing is reset, and the master exits within the graceful timeout."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
from bench.reliability.load import Load, drive
from bench.reliability.processes import Stub, server
from bench.reliability.report import Result


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    stub.configure(latency_ms=1000, fault_rate=0)
    with server(model, stub, logs, "drain", GRACEFUL_TIMEOUT="20") as srv:
        signalled: dict[str, float] = {}
        ready_503_after: list[float] = []

        def sigterm() -> None:
            signalled["at"] = time.monotonic()
            srv.process.send_signal(signal.SIGTERM)
            srv.process.wait(30)
            signalled["exited"] = time.monotonic()

        async def readiness_probe() -> None:
            # One kept-alive connection polls readiness, as a load balancer would.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
                while True:
                    try:
                        async with session.get(f"{srv.base}/health/ready") as response:
                            await response.read()
                            if "at" in signalled and response.status == 503:
                                ready_503_after.append(time.monotonic() - signalled["at"])
                                return
                    except aiohttp.ClientError:
                        if "at" in signalled:
                            return
                    await asyncio.sleep(0.01)

        async def both() -> Load:
            probe = asyncio.create_task(readiness_probe())
            load = await drive(
                srv.base, 40, seconds=12, events=[(3.0, sigterm)], stop_on_refused=True
            )
            await asyncio.wait_for(probe, 30)
            return load

        load = asyncio.run(both())
        exit_code = srv.process.wait(30)
        exited = signalled["exited"] - signalled["at"]
    at = signalled["at"]
    in_flight = [o for o in load.outcomes if o.started < at < o.finished]
    in_flight_ok = [o for o in in_flight if o.status == 200]
    later = [o for o in load.outcomes if o.started >= at]
    resets = [o for o in load.outcomes if o.status is None and o.error != "ClientConnectorError"]
    figures = {
        "in flight at SIGTERM": len(in_flight),
        "of them answered 200": len(in_flight_ok),
        "resets / disconnects (any request)": len(resets),
        "requests after SIGTERM refused at connect": sum(
            1 for o in later if o.error == "ClientConnectorError"
        ),
        "readiness 503 after SIGTERM": f"{ready_503_after[0] * 1000:.0f} ms"
        if ready_503_after
        else "closed first",
        "exit after SIGTERM": f"{exited:.1f} s (graceful timeout 20 s), code {exit_code}",
    }
    passed = (
        bool(in_flight)
        and len(in_flight_ok) == len(in_flight)
        and not resets
        and exit_code == 0
        and exited < 20
    )
    return Result(
        "drain",
        passed,
        figures,
        "SIGTERM to the master with 40 clients, upstream 1 s (so that requests are in flight). "
        "Targets: readiness 503 at once, every request in flight answered 200, no reset, exit "
        "within the graceful timeout. New connections after SIGTERM are refused (the whole "
        "server is stopping); clients stop at their first refusal.",
    )
