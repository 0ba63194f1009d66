"""The load generator and clients: bounded asyncio clients that account for every request
(a closed or reset connection is a failed request), and a plain client for single requests."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

ROW = {"patient_id": "r1", "medications": ["Coumadin", "Advil"]}
BODY = json.dumps({"dataframe_records": [ROW]}).encode()
JSON = {"Content-Type": "application/json"}


@dataclass
class Outcome:
    started: float
    finished: float
    status: int | None  # None: no HTTP answer
    error: str | None = None
    retry_after: str | None = None
    body: bytes = b""


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)

    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == 200]

    def failures(self) -> Counter[str]:
        return Counter(o.error or f"HTTP {o.status}" for o in self.outcomes if o.status != 200)

    def figures(self, clients: int, seconds: float) -> dict[str, Any]:
        """The figures every load scenario reports."""
        failures = self.failures()
        return {
            "clients": clients,
            "seconds": seconds,
            "requests": len(self.outcomes),
            "answered 200": len(self.ok()),
            "failed": sum(failures.values()),
            "failures by kind": dict(failures) or "-",
        }

    def latency_ms(self, outcomes: list[Outcome] | None = None) -> dict[str, float]:
        values = sorted(
            (o.finished - o.started) * 1000
            for o in (outcomes if outcomes is not None else self.ok())
        )
        if not values:
            return {"p50": 0.0, "p99": 0.0}
        return {
            "p50": values[len(values) // 2],
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))],
        }


async def drive(
    base: str,
    clients: int,
    *,
    seconds: float,
    max_requests: int | None = None,
    path: str = "/invocations",
    body: bytes = BODY,
    stop_on_refused: bool = False,
    events: Sequence[tuple[float, Callable[[], Any]]] = (),
    sample: Callable[[int], None] | None = None,
) -> Load:
    """``clients`` keep-alive clients (one connection each) posting until ``seconds`` pass or
    ``max_requests`` are sent; ``events`` run at their offsets (seconds) from the start."""
    load = Load()
    started = time.monotonic()
    until = started + seconds
    sent = 0

    async def client() -> None:
        nonlocal sent
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while time.monotonic() < until and (max_requests is None or sent < max_requests):
                sent += 1
                t0 = time.monotonic()
                try:
                    async with session.post(base + path, data=body, headers=JSON) as response:
                        data = await response.read()
                        load.outcomes.append(
                            Outcome(
                                t0,
                                time.monotonic(),
                                response.status,
                                None,
                                response.headers.get("Retry-After"),
                                data,
                            )
                        )
                        if response.status == 503:
                            await asyncio.sleep(0.05)  # a polite client backs off a little
                except (aiohttp.ClientError, TimeoutError) as exc:
                    kind = type(exc).__name__
                    load.outcomes.append(
                        Outcome(t0, time.monotonic(), None, kind, body=str(exc).encode())
                    )
                    if stop_on_refused and isinstance(exc, aiohttp.ClientConnectorError):
                        return

    async def timeline() -> None:
        for offset, action in sorted(events, key=lambda e: e[0]):
            await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            await asyncio.to_thread(action)

    async def sampler() -> None:
        while time.monotonic() < until and (max_requests is None or sent < max_requests):
            if sample is not None:
                await asyncio.to_thread(sample, len(load.outcomes))
            await asyncio.sleep(1.0)

    await asyncio.gather(timeline(), sampler(), *(client() for _ in range(clients)))
    return load


def invoke(base: str, client: httpx.Client | None = None) -> httpx.Response:
    """One POST of ``BODY`` to ``/invocations``, on ``client`` or a fresh connection."""
    url = f"{base}/invocations"
    if client is None:
        return httpx.post(url, content=BODY, headers=JSON, timeout=30)
    return client.post(url, content=BODY, headers=JSON)
