"""Stalled uploads against admission: how many well-formed requests are served while N uploads
that announce a body (``Content-Length``) and never send it hold their connections open, and
what the stalled uploads are answered.

Runs the server on whatever ``pharmacy_service`` the interpreter imports (so the same script
measures two versions of it, with PYTHONPATH) and records one row per N under ``--label`` in
bench/results/stalled_uploads.md.

    python bench/stalled_uploads.py --label after
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import platform
import select
import socket
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness import free_port, launched, wait_for_workers

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench/results/stalled_uploads.md"
BODY = {"dataframe_records": [{"patient_id": "b1", "medications": ["Coumadin", "Advil"]}]}
BODY_READ_TIMEOUT = 5.0
HEADER = [
    "# Stalled uploads and admission",
    "",
    "`python bench/stalled_uploads.py --label LABEL`: gunicorn with 1 worker, capacity 2 "
    "(`PHARMACY_PREDICT_THREADS=1`, `PHARMACY_MAX_QUEUE=1`), `PHARMACY_BODY_READ_TIMEOUT=5` "
    "(ignored by a server without it). N connections send a `POST /invocations` head with "
    "`Content-Length: 100` and no body; once the worker counts them in flight, one client "
    "sends 20 well-formed requests, one after another, then `/health/ready`; then the stalled "
    "uploads are given 10 s to be answered.",
    "",
    "| label | stalled uploads | well-formed served (200) | shed (503) | readiness | "
    "stalled answered | seconds to the last answer | date, machine |",
    "|---|---|---|---|---|---|---|---|",
]


def in_flight(client: httpx.Client) -> float:
    """Requests the worker is answering, this scrape excluded."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "pharmacy_http_requests_in_flight":
                return sample.value - 1
    return 0.0


def stalled_upload(port: int) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    return raw


def measure(client: httpx.Client, port: int, stalled_count: int) -> dict[str, object]:
    with ExitStack() as stack:
        stalled = [stack.enter_context(stalled_upload(port)) for _ in range(stalled_count)]
        deadline = time.monotonic() + 10
        while in_flight(client) < stalled_count and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        statuses = Counter(client.post("/invocations", json=BODY).status_code for _ in range(20))
        ready = client.get("/health/ready").status_code
        answers: Counter[str] = Counter()
        waited = 0.0
        pending = list(stalled)
        while pending and time.monotonic() - started < 10:
            readable, _, _ = select.select(pending, [], [], 0.1)
            for raw in readable:
                answer = http.client.HTTPResponse(raw)
                answer.begin()
                answers[str(answer.status)] += 1
                waited = time.monotonic() - started
                pending.remove(raw)
        if pending:
            answers["none in 10 s"] += len(pending)
    return {
        "served": statuses[200],
        "shed": statuses[503],
        "ready": ready,
        "answered": ", ".join(f"{n} x {status}" for status, n in sorted(answers.items())) or "-",
        "seconds": f"{waited:.1f}" if waited else "-",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--stalled", type=int, nargs="+", default=[0, 2, 8])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    from pharmacy_service.model.build import build

    work = Path(tempfile.mkdtemp(prefix="stalled-uploads-"))
    build(work / "model")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        PHARMACY_PREDICT_THREADS="1",
        PHARMACY_MAX_QUEUE="1",
        PHARMACY_BODY_READ_TIMEOUT=str(BODY_READ_TIMEOUT),
        PHARMACY_MODEL_URI=str(work / "model"),
        PHARMACY_LOG_FORMAT="json",
        PROMETHEUS_MULTIPROC_DIR=str(work / "metrics"),
    )
    base = f"http://127.0.0.1:{port}"
    command = [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.server.gunicorn_conf"]
    rows = []
    with (
        launched(command, env, work / "server.log", f"{base}/health/ready", "gunicorn") as (
            process,
            _,
        ),
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        wait_for_workers(base, process.pid, 1, 60)
        for count in args.stalled:
            result = measure(client, port, count)
            rows.append(
                f"| {args.label} | {count} | {result['served']} of 20 | {result['shed']} | "
                f"{result['ready']} | {result['answered']} | {result['seconds']} | "
                f"{dt.datetime.now(dt.UTC):%Y-%m-%d}, {platform.machine()} "
                f"({os.cpu_count()} cores) |"
            )
    lines = args.output.read_text().splitlines() if args.output.exists() else HEADER
    lines = [line for line in lines if not line.startswith(f"| {args.label} |")] + rows
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
