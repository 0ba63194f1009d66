"""Fair share on one worker: one-drug requests while a maximum-size body of junk names is screened
(issue #19). Before, screening ran in one piece on the worker's shared event loop: a 919 KiB body
of random strings held it for 30 s and every other request on the worker waited.

Starts the real server (gunicorn, one uvicorn worker, the template backend) on 127.0.0.1, sends
one junk body as large as the tree's limits allow, and meanwhile one-drug requests at a fixed
rate (open loop: each is sent on schedule whether or not the previous one has answered) for a
fixed time; records their latency (median, p99, max) and the junk request's status and time.

    python bench/fairness.py --label after [--seconds 12] [--rate 20]
    PYTHONPATH=<older tree>/service/src python bench/fairness.py --label before --rows 300 --per-row 200

Rows of the results table go to stdout (bench/results/fairness.md keeps the recorded run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench.harness import free_port, launched, wait_for_workers

from pharmacy_service.model.build import build

ONE_DRUG = {"dataframe_records": [{"patient_id": "small", "medications": ["warfarin"]}]}


def junk_body(rows: int, per_row: int) -> bytes:
    rng = random.Random(1)

    def word() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(9, 14)))

    records = [
        {"patient_id": f"j{i}", "medications": [word() for _ in range(per_row)]}
        for i in range(rows)
    ]
    return json.dumps({"dataframe_records": records}).encode()


async def measure(base: str, body: bytes, seconds: float, rate: float) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:  # the small requests
        (await client.post("/invocations", json=ONE_DRUG)).raise_for_status()  # warm

        async def big() -> tuple[int, float]:
            """Sent by curl, in its own process: reading a 20 MB answer in this process would
            stall the small requests' client, not the server."""
            with tempfile.NamedTemporaryFile(suffix=".json") as file:
                file.write(body)
                file.flush()
                curl = await asyncio.create_subprocess_exec(
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{time_total}",
                    "-H",
                    "content-type: application/json",
                    "--data-binary",
                    f"@{file.name}",
                    f"{base}/invocations",
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await curl.communicate()
            status, seconds = out.decode().split()
            return int(status), float(seconds)

        async def small() -> tuple[float, int]:
            started = time.perf_counter()
            response = await client.post("/invocations", json=ONE_DRUG)
            return time.perf_counter() - started, response.status_code

        junk = asyncio.create_task(big())
        await asyncio.sleep(0.3)  # the big body has arrived and is being screened
        smalls = []
        for _ in range(int(seconds * rate)):
            smalls.append(asyncio.create_task(small()))
            await asyncio.sleep(1 / rate)
        answers = await asyncio.gather(*smalls)
        status, junk_seconds = await junk
    latencies = sorted(seconds for seconds, _ in answers)
    failed = sum(code != 200 for _, code in answers)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "junk_status": status,
        "junk_seconds": junk_seconds,
        "count": len(latencies),
        "failed": failed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--per-row", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--keep-log", help="copy the server's log here")
    args = parser.parse_args()
    body = junk_body(args.rows, args.per_row)
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model"
        build(model)
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PHARMACY_")},
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
            "PHARMACY_MODEL_URI": str(model),
            "PHARMACY_LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(Path(scratch) / "metrics"),
        }
        base = f"http://127.0.0.1:{port}"
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            "python:pharmacy_service.server.gunicorn_conf",
        ]
        log = Path(scratch) / "gunicorn.log"
        with launched(command, env, log, f"{base}/health/ready", "gunicorn") as (process, _):
            wait_for_workers(base, process.pid, 1, 60)
            result = asyncio.run(measure(base, body, args.seconds, args.rate))
        if args.keep_log:
            Path(args.keep_log).write_bytes(log.read_bytes())
    print(
        f"| {args.label} | {len(body) / 1024:,.0f} KiB ({args.rows} x {args.per_row}) | "
        f"{result['junk_status']} in {result['junk_seconds']:.1f} s | {result['count']} | "
        f"{result['failed']} | "
        f"{result['p50_ms']:.0f} | {result['p99_ms']:.0f} | {result['max_ms']:.0f} |"
    )


if __name__ == "__main__":
    main()
