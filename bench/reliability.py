"""Reliability under load, faults and restarts: the real server (gunicorn + uvicorn workers) on
127.0.0.1 with the Gemini-compatible stub as a separate process, driven by bounded asyncio
clients that account for every request (a closed or reset connection is a failed request).

Scenarios (each bounded in time and count):
  rolling-restart  50 clients for 30 s; SIGHUP to the master twice, SIGTERM to one worker
  drain            SIGTERM to the master under load: readiness, in-flight requests, exit
  recycle          MAX_REQUESTS under load: workers replaced through the drain, nothing lost
  worker-kill      SIGKILL one worker under load: requests lost, time until capacity is back
  overload         10x the configured capacity: 503 + Retry-After, bounded p99 and memory, recovery
  soak             20,000 requests: RSS, threads and open files per worker (slopes)
  upstream-faults  stub faults at 10%, 30%, 100%: findings in every row, fallbacks counted; strict
  loop-faults      loop errors on the first, two, every attempt: retried or a clear error
  blocked-loop     a coroutine blocks the executor loop: lag metric, WARNING, /health/live, 504

Writes bench/results/reliability.md and exits 1 when a target is missed.

    python bench/reliability.py [--only NAME ...] [--quick] [--output PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from harness import children, free_port, launched, process_stats, wait_for_workers

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROW = {"patient_id": "r1", "medications": ["Coumadin", "Advil"]}
BODY = json.dumps({"dataframe_records": [ROW]}).encode()
JSON = {"Content-Type": "application/json"}


# -- processes -------------------------------------------------------------------------------


@dataclass
class Stub:
    url: str
    process: subprocess.Popen[bytes]

    def configure(self, **values: Any) -> None:
        httpx.post(f"{self.url}/config", json=values, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/stats", timeout=5).json()
        return result


@contextlib.contextmanager
def stub_process(latency_ms: float, logs: Path) -> Iterator[Stub]:
    port = free_port()
    command = [
        str(BIN / "pharmacy-gemini-stub"),
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
    ]
    url = f"http://127.0.0.1:{port}"
    with launched(command, dict(os.environ), logs / "stub.log", f"{url}/health", "stub", 30) as (
        process,
        _,
    ):
        yield Stub(url, process)


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return records

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples (matching labels) from /metrics."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            match = re.match(r"^([a-z_:]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if not match or match.group(1) != name:
                continue
            sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total


@contextlib.contextmanager
def server(
    model: Path, stub: Stub, logs: Path, name: str, workers: int = 2, **env: str
) -> Iterator[Server]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
    full_env.update(
        PATH=f"{BIN}{os.pathsep}{full_env.get('PATH', '')}",
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY=str(workers),
        PHARMACY_MODEL_URI=str(model),
        PHARMACY_LLM_BACKEND="gemini",
        PHARMACY_LOG_FORMAT="json",
        GEMINI_BASE_URL=stub.url,
        PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="reliability-metrics-"),
        MAX_REQUESTS="0",  # no recycling but in the recycle scenario: it would blur the figures
    )
    full_env.update(env)
    log = logs / f"{name}.log"
    command = [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.gunicorn_conf"]
    base = f"http://127.0.0.1:{port}"
    with launched(command, full_env, log, f"{base}/health/ready", name) as (process, _):
        wait_for_workers(base, process.pid, workers, 30)  # every worker has loaded its model
        yield Server(base, process, log, full_env)


# -- load --------------------------------------------------------------------------------------


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


def run(coro: Coroutine[Any, Any, Load]) -> Load:
    return asyncio.run(coro)


# -- scenarios ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    passed: bool
    figures: dict[str, Any]
    notes: str = ""


def rolling_restart(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    seconds = 15 if quick else 30
    stub.configure(latency_ms=100, fault_rate=0)
    with server(model, stub, logs, "rolling-restart", GRACEFUL_TIMEOUT="20") as srv:
        events = [
            (seconds * 0.2, lambda: srv.process.send_signal(signal.SIGHUP)),
            (seconds * 0.47, lambda: srv.process.send_signal(signal.SIGHUP)),
            (seconds * 0.73, lambda: os.kill(srv.workers()[0], signal.SIGTERM)),
        ]
        before = srv.workers()
        load = run(drive(srv.base, 50, seconds=seconds, events=events))
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


def recycle(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    seconds = 15 if quick else 30
    stub.configure(latency_ms=50, fault_rate=0)
    with server(model, stub, logs, "recycle", MAX_REQUESTS="300") as srv:
        before = srv.workers()
        load = run(drive(srv.base, 50, seconds=seconds))
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


def drain(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
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

        load = run(both())
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


def worker_kill(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    stub.configure(latency_ms=200, fault_rate=0)
    seconds = 20
    with server(model, stub, logs, "worker-kill") as srv:
        killed: dict[str, Any] = {}

        def kill() -> None:
            killed["pid"] = srv.workers()[0]
            killed["at"] = time.monotonic()
            killed["wall"] = time.time()
            os.kill(killed["pid"], signal.SIGKILL)

        load = run(drive(srv.base, 50, seconds=seconds, events=[(6.0, kill)]))
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


def overload(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    stub.configure(latency_ms=200, fault_rate=0)
    env = {"PHARMACY_PREDICT_THREADS": "8", "PHARMACY_MAX_QUEUE": "8"}
    capacity = 16
    with server(model, stub, logs, "overload", workers=1, **env) as srv:
        worker = srv.workers()[0]
        rss_before = process_stats(worker)["rss_mib"]
        peak = {"rss": rss_before}

        def sample(_: int) -> None:
            peak["rss"] = max(peak["rss"], process_stats(worker)["rss_mib"])

        burst = run(drive(srv.base, capacity * 10, seconds=10, sample=sample))
        after = run(drive(srv.base, capacity // 2, seconds=5))
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


def slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3 or len(set(xs)) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope


def soak(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    total = 5_000 if quick else 20_000
    stub.configure(latency_ms=5, fault_rate=0)
    with server(model, stub, logs, "soak") as srv:
        workers = srv.workers()
        samples: dict[int, list[tuple[int, dict[str, float]]]] = {w: [] for w in workers}

        def sample(done: int) -> None:
            for w in workers:
                with contextlib.suppress(FileNotFoundError):
                    samples[w].append((done, process_stats(w)))

        load = run(drive(srv.base, 50, seconds=600, max_requests=total, sample=sample))
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


def upstream_faults(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    per_rate = 100 if quick else 200
    faults = ["429", "500", "503", "slow", "reset"]
    figures: dict[str, Any] = {}
    passed = True
    env = {"PHARMACY_LLM_TIMEOUT": "1"}
    with server(model, stub, logs, "upstream-faults", **env) as srv:
        workers = srv.workers()
        stub.configure(latency_ms=20, fault_rate=0)
        run(drive(srv.base, 50, seconds=30, max_requests=300))  # warm-up: pools, connections
        threads: dict[int, list[float]] = {w: [process_stats(w)["threads"]] for w in workers}
        for rate in (0.1, 0.3, 1.0):
            stub.configure(latency_ms=20, fault_rate=rate, faults=faults, slow_seconds=2)
            httpx.post(f"{stub.url}/stats/reset", timeout=5)
            fallbacks_before = srv.metric("pharmacy_llm_fallbacks_total")
            load = run(drive(srv.base, 20, seconds=120, max_requests=per_rate))
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
        # main, uvloop's executor, the executor loop and its default pool (at most 6 threads
        # on 2 cores, for DNS lookups): bounded, and no growth once the faults are on
        passed = passed and all(max(c) <= 12 and c[-1] <= c[1] + 1 for c in threads.values())
    stub.configure(fault_rate=0.3, faults=faults, slow_seconds=2, latency_ms=20)
    with server(
        model, stub, logs, "upstream-faults-strict", PHARMACY_LLM_STRICT="true", **env
    ) as srv:
        load = run(drive(srv.base, 20, seconds=120, max_requests=per_rate))
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


def sequential(base: str, count: int, path: str = "/invocations") -> list[httpx.Response]:
    with httpx.Client(timeout=30) as client:
        return [client.post(base + path, content=BODY, headers=JSON) for _ in range(count)]


def loop_faults(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
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
            answers = sequential(srv.base, 3)
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


def blocked_loop(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
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
            response = httpx.post(f"{srv.base}/invocations", content=BODY, headers=JSON, timeout=30)
            results["blocked"] = (response.status_code, time.monotonic() - t0, response.json())

        def second_request() -> None:
            t0 = time.monotonic()
            response = httpx.post(f"{srv.base}/invocations", content=BODY, headers=JSON, timeout=30)
            results["second"] = (response.status_code, time.monotonic() - t0)

        first = asyncio.run(_run_blocked(srv, blocked_request, second_request, results))
        lag_while_blocked = results["lag while blocked"]
        time.sleep(block)  # let the loop come back
        lag = srv.metric("modelhub_executor_loop_lag_seconds")
        after = httpx.post(
            f"{srv.base}/invocations", content=BODY, headers=JSON, timeout=30
        ).status_code
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


def bad_input(model: Path, stub: Stub, logs: Path, quick: bool) -> Result:
    """Runs tests/service/test_bad_input.py (real gunicorn) and reports what it tried."""
    report = logs / "bad-input.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/service/test_bad_input.py",
        ],
        cwd=ROOT,
        env={**os.environ, "BAD_INPUT_REPORT": str(report)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    tried = json.loads(report.read_text()) if report.exists() else {}
    summary = (
        result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    )
    return Result(
        "bad-input",
        result.returncode == 0,
        {
            "hand-written /invocations cases": tried.get("invocations corpus", 0),
            "generated /v1/screen bodies (hypothesis)": tried.get("screen generated", 0),
            "oversized headers": tried.get("headers", 0),
            "pytest": summary,
        },
        "Every answer a 4xx with a JSON body (error_code, message, request_id) or a 200 for odd "
        "but valid input; no 5xx; the server healthy afterwards with no ERROR line in its log.",
    )


SCENARIOS: dict[str, Callable[[Path, Stub, Path, bool], Result]] = {
    "rolling-restart": rolling_restart,
    "drain": drain,
    "recycle": recycle,
    "worker-kill": worker_kill,
    "overload": overload,
    "soak": soak,
    "upstream-faults": upstream_faults,
    "loop-faults": loop_faults,
    "blocked-loop": blocked_loop,
    "bad-input": bad_input,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="shorter runs (CI smoke)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/reliability.md")
    args = parser.parse_args()
    from pharmacy_service.model.build import build

    work = Path(tempfile.mkdtemp(prefix="reliability-"))
    model = work / "model"
    build(model)
    logs = work / "logs"
    logs.mkdir()
    results: list[Result] = []
    started = time.monotonic()
    with stub_process(latency_ms=100, logs=logs) as stub:
        for name in args.only or list(SCENARIOS):
            t0 = time.monotonic()
            result = SCENARIOS[name](model, stub, logs, args.quick)
            results.append(result)
            print(
                f"{name:16} {'PASS' if result.passed else 'MISS'} ({time.monotonic() - t0:.0f} s) {result.figures}",
                file=sys.stderr,
            )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report(results, args, time.monotonic() - started))
    print(f"wrote {args.output}; server logs in {logs}", file=sys.stderr)
    return 0 if all(r.passed for r in results) else 1


def report(results: list[Result], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# Reliability: load, restarts, faults",
        "",
        f"`python bench/reliability.py{' --quick' if args.quick else ''}"
        f"{' --only ' + ' '.join(args.only) if args.only else ''}`, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} cores), Python {platform.python_version()}; whole run {seconds:.0f} s. "
        "All traffic on 127.0.0.1: gunicorn with uvicorn workers (2 unless noted), the gemini "
        "backend against the Gemini-compatible stub in its own process, asyncio clients with "
        "one kept-alive connection each; a closed or reset connection is a failed request.",
        "",
        "| scenario | result |",
        "|---|---|",
    ]
    lines += [
        f"| {r.name} | {'target met' if r.passed else '**target missed**'} |" for r in results
    ]
    for r in results:
        lines += ["", f"## {r.name}", ""]
        if r.notes:
            lines += [r.notes, ""]
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in r.figures.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
