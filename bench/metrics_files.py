"""Metrics files under worker recycling: how many files PROMETHEUS_MULTIPROC_DIR holds and how
long a /metrics scrape takes, at the start and after N worker recycles (MAX_REQUESTS).

Runs the server on whatever ``pharmacy_service`` the interpreter imports (so the same script
measures two versions of it, with PYTHONPATH) and records one row under ``--label`` in
bench/results/metrics_files.md.

    python bench/metrics_files.py --label after [--recycles 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness import free_port, launched, wait_for_workers

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench/results/metrics_files.md"
HEADER = [
    "# Metrics files under worker recycling",
    "",
    "`python bench/metrics_files.py --label LABEL`: gunicorn with 2 workers, `MAX_REQUESTS=20` "
    "(jitter 2), `PHARMACY_DRAIN_DELAY=0.1`, one client sending `GET /health/live` until the "
    "workers were replaced N times; then the `*.db` files in `PROMETHEUS_MULTIPROC_DIR` and "
    "the median of 20 `/metrics` scrapes. `before`: the server before dead workers' counters "
    "were folded into an archive; `after`: with it.",
    "",
    "| label | recycles | files at start | files after | KiB after | scrape ms at start | "
    "scrape ms after | requests counted after | date, machine |",
    "|---|---|---|---|---|---|---|---|---|",
]


def scrape_ms(client: httpx.Client, times: int = 20) -> float:
    durations = []
    for _ in range(times):
        started = time.perf_counter()
        client.get("/metrics").raise_for_status()
        durations.append((time.perf_counter() - started) * 1000)
    return statistics.median(durations)


def counted(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pharmacy_http_requests_total{")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--recycles", type=int, default=100)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    from pharmacy_service.model.build import build

    work = Path(tempfile.mkdtemp(prefix="metrics-files-"))
    build(work / "model")
    directory = work / "metrics"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        MAX_REQUESTS="20",
        PHARMACY_DRAIN_DELAY="0.1",
        PHARMACY_MODEL_URI=str(work / "model"),
        PHARMACY_LOG_FORMAT="json",
        PROMETHEUS_MULTIPROC_DIR=str(directory),
    )
    base = f"http://127.0.0.1:{port}"
    command = [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.server.gunicorn_conf"]
    log = work / "server.log"
    with (
        launched(command, env, log, f"{base}/health/ready", "gunicorn") as (process, _),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        wait_for_workers(base, process.pid, 2, 60)
        files_start = len(list(directory.glob("*.db")))
        scrape_start = scrape_ms(client)

        def booted() -> int:
            return log.read_text(errors="replace").count("Booting worker with pid") - 2

        deadline = time.monotonic() + 1800
        while booted() < args.recycles and time.monotonic() < deadline:
            client.get("/health/live")
        recycles = booted()
        time.sleep(1.0)  # the last replaced worker has exited and been folded
        files = list(directory.glob("*.db"))
        size_kib = sum(f.stat().st_size for f in files) / 1024
        scrape_after = scrape_ms(client)
        total = counted(client.get("/metrics").text)
    row = (
        f"| {args.label} | {recycles} | {files_start} | {len(files)} | {size_kib:.0f} | "
        f"{scrape_start:.1f} | {scrape_after:.1f} | {total:.0f} | "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d}, {platform.machine()} ({os.cpu_count()} cores) |"
    )
    lines = args.output.read_text().splitlines() if args.output.exists() else HEADER
    lines = [line for line in lines if not line.startswith(f"| {args.label} |")] + [row]
    args.output.write_text("\n".join(lines) + "\n")
    print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
