"""Loop faults: event-loop errors on the first, two and every attempt; retried and answered 200,
or a clear EVENT_LOOP_ERROR once the attempts are spent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from bench.reliability.load import invoke
from bench.reliability.processes import Stub, server
from bench.reliability.report import Result


def run(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    stub.configure(latency_ms=20, fault_rate=0)
    figures: dict[str, Any] = {}
    passed = True
    for injected, label in (
        (1, "the first attempt"),
        (2, "two attempts"),
        (3, "every attempt (3 of 3)"),
    ):
        with server(
            model,
            stub,
            logs,
            f"loop-faults-{injected}",
            workers=1,
            PHARMACY_FAULT_LOOP_ERRORS=str(injected),
            MODELHUB_ASYNC_MAX_ATTEMPTS="3",
        ) as srv:
            started = time.monotonic()
            with httpx.Client(timeout=30) as client:
                answers = [invoke(srv.base, client) for _ in range(3)]
            seconds = time.monotonic() - started
            records = srv.log_records()
        retries = [r for r in records if r.get("event") == "async_retry"]
        failed = [r for r in records if r.get("event") == "async_failed"]
        statuses = [a.status_code for a in answers]
        first = answers[0]
        if injected < 3:
            ok = statuses == [200, 200, 200] and len(retries) == injected and not failed
        else:
            ok = (
                statuses[0] >= 500
                and statuses[1:] == [200, 200]
                and len(retries) == 2
                and len(failed) == 1
                and first.json()["error_code"] == "EVENT_LOOP_ERROR"
            )
        passed = passed and ok and seconds < 10
        detail = (
            ""
            if first.status_code == 200
            else f" ({first.json().get('error_code')}: {first.json().get('message', '')[:60]})"
        )
        figures[f"loop error on {label}"] = (
            f"answers {statuses}{detail}, {len(retries)} async_retry, {len(failed)} async_failed, "
            f"3 requests in {seconds:.1f} s"
        )
    return Result(
        "loop-faults",
        passed,
        figures,
        "One worker, MODELHUB_ASYNC_MAX_ATTEMPTS=3, three sequential requests.",
    )
