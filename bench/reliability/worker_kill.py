"""Worker kill: SIGKILL one worker under load; reports the requests lost with it and the time
until capacity is back (reported, not a pass/fail target)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.reliability.load import drive
from bench.reliability.processes import Stub, server
from bench.reliability.report import Result


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    stub.configure(latency_ms=200, fault_rate=0)
    seconds = 20
    with server(model, stub, logs, "worker-kill") as srv:
        killed: dict[str, Any] = {}

        def kill() -> None:
            killed["pid"] = srv.workers()[0]
            killed["at"] = time.monotonic()
            killed["wall"] = time.time()
            os.kill(killed["pid"], signal.SIGKILL)

        load = asyncio.run(drive(srv.base, 50, seconds=seconds, events=[(6.0, kill)]))
        records = srv.log_records()
        replacement = [
            r
            for r in records
            if r.get("event") == "model_loaded"
            and r.get("process") not in (None, killed["pid"])
            and r.get("process") in srv.workers()
        ]
    at = killed["at"]
    lost = [o for o in load.outcomes if o.status != 200]
    # capacity timeline: 200s per second
    start = min(o.started for o in load.outcomes)
    per_second = Counter(int(o.finished - start) for o in load.ok())
    before = [per_second[s] for s in range(2, int(at - start))]
    baseline = statistics.median(before)
    back = next(
        (s for s in range(int(at - start) + 1, seconds) if per_second[s] >= 0.9 * baseline), None
    )
    loaded_at = None
    for record in replacement:
        stamp = dt.datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if stamp > killed["wall"]:
            loaded_at = stamp - killed["wall"]
    return Result(
        "worker-kill",
        True,  # reported, not a pass/fail target: requests in flight on the killed worker are lost
        {
            "requests": len(load.outcomes),
            "lost (in flight on the killed worker)": len(lost),
            "lost by kind": dict(load.failures()) or "-",
            "throughput before kill": f"{baseline:.0f} req/s",
            "replacement worker loaded its model after": f"{loaded_at:.1f} s"
            if loaded_at
            else "not seen",
            "throughput back to 90% after": f"{back + start - at:.1f} s"
            if back is not None
            else "not within the run",
            "answers 200 per second, from 2 s before the kill": " ".join(
                str(per_second[s]) for s in range(int(at - start) - 2, seconds)
            ),
        },
        "Reported, not a pass/fail target: SIGKILL gives a worker no chance to finish, so the "
        "requests in flight on it are lost (50 clients, upstream 200 ms, 2 workers). Clients "
        "keep their connections, so load moves back to the new worker only as they reconnect.",
    )
