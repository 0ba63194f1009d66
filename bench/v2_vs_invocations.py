"""Open Inference Protocol inference against ``/invocations``, and against MLServer-MLflow, in
one run (#20).

The same saved model, the gemini backend against the project's stub (200 ms per answer). This
server with one gunicorn worker answers both ``/invocations`` and V2 infer; MLServer 1.7.1 +
mlserver-mlflow (its own venv, default settings: one inference worker) answers V2 infer. wrk
posts one row (Coumadin + Advil) to each endpoint in turn, at 50 and 100 connections, for a fixed
time, over several rounds; the medians are recorded. V2 must be within 10% of ``/invocations``:
both go through the same handler and ``apredict``. The V2 body names each input's content type,
because MLServer does not read the ones the model's metadata declares (this server does).

    python bench/v2_vs_invocations.py [--rounds 3] [--duration 10] [--output bench/results/v2.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from pharmacy_service.model.build import MODEL_NAME, build
from serving import Server, gemini_stub, start, wrk

ROW = {"patient_id": "w1", "medications": ["Coumadin", "Advil"]}
V2 = f"/v2/models/{MODEL_NAME}/infer"
BODIES = {
    "/invocations": json.dumps({"dataframe_records": [ROW]}),
    V2: json.dumps(
        {
            "parameters": {"content_type": "pd"},
            "inputs": [
                {
                    "name": "patient_id",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "data": ["w1"],
                    "parameters": {"content_type": "str"},
                },
                {
                    "name": "medications",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "data": [json.dumps(ROW["medications"])],
                    "parameters": {"content_type": "pd_json"},
                },
            ],
        }
    ),
}
_MLSERVER_NOTE = (
    "MLServer-MLflow answers one prediction at a time (its MLflow runtime calls the synchronous "
    "`predict`, which waits 200 ms for the stub): about 5 req/s at any concurrency. Requests "
    "still queued when wrk stops are neither answered nor errors, so its latencies understate "
    "its queue (p99 reaches wrk's 10 s timeout)."
)
ENDPOINTS = (("ours", "/invocations"), ("ours", V2), ("mlserver", V2))
LABELS = {
    ("ours", "/invocations"): "ours /invocations",
    ("ours", V2): "ours V2 infer",
    ("mlserver", V2): "MLServer-MLflow V2 infer",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-v2-"))
    model = work / "model"
    build(model)
    scripts = {}
    for path, body in BODIES.items():
        script = work / f"{len(scripts)}.lua"
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        scripts[path] = script
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    tracking = (work / "mlruns").as_uri()
    with (
        gemini_stub() as (_, stub_url),
        start("ours", model, 1, stub_url, work, tracking) as ours,
        start("mlserver", model, 1, stub_url, work, tracking) as mlserver,
    ):
        servers: dict[str, Server] = {"ours": ours, "mlserver": mlserver}
        for kind, path in ENDPOINTS:  # warm each, and check it answers 200
            httpx.post(
                servers[kind].base_url + path,
                content=BODIES[path],
                headers={"content-type": "application/json"},
                timeout=60,
            ).raise_for_status()
        for _ in range(args.rounds):
            for connections in args.connections:
                for kind, path in ENDPOINTS:
                    server = servers[kind]
                    measured = wrk(
                        server.base_url, connections, args.duration, scripts[path], server, path
                    )
                    results.setdefault((kind, path, connections), []).append(measured)
    text = report(results, args)
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text)


def report(results: dict[tuple[str, str, int], list[dict[str, Any]]], args: Any) -> str:
    def median(kind: str, path: str, connections: int, key: str = "rps") -> float:
        return statistics.median(r[key] for r in results[(kind, path, connections)])

    lines = [
        "# Open Inference Protocol: V2 against /invocations and MLServer-MLflow (#20)",
        "",
        f"`python bench/v2_vs_invocations.py --rounds {args.rounds} --duration {args.duration}`, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, one run on this machine (2 cores). "
        "The same saved model, the gemini backend against the project's stub (200 ms per "
        "answer). Ours: one gunicorn worker, log level WARNING, no tracing. MLServer 1.7.1 + "
        "mlserver-mlflow 1.7.1: default settings (one inference worker). wrk `-t1 --latency "
        f"--timeout 10s`, one row (Coumadin + Advil), {args.duration} s per endpoint in turn, "
        f"{args.rounds} rounds; medians. Errors: non-2xx answers and socket errors (a request "
        "unanswered after 10 s is a timeout), summed over the rounds.",
        "",
        "| endpoint | connections | req/s (median) | p50 ms | p99 ms | errors | req/s each round |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for (kind, path, connections), runs in results.items():
        p50 = [r["p50_ms"] for r in runs if r["p50_ms"] is not None]
        p99 = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
        lines.append(
            f"| {LABELS[(kind, path)]} | {connections} | {median(kind, path, connections):.1f} | "
            f"{statistics.median(p50) if p50 else float('nan'):.0f} | "
            f"{statistics.median(p99) if p99 else float('nan'):.0f} | "
            f"{sum(r['errors'] for r in runs):.0f} | "
            f"{', '.join(format(r['rps'], '.1f') for r in runs)} |"
        )
    lines += ["", _MLSERVER_NOTE, ""]
    for connections in args.connections:
        v2 = median("ours", V2, connections)
        mlflow = median("ours", "/invocations", connections)
        theirs = median("mlserver", V2, connections)
        lines.append(
            f"- At {connections} connections our V2 serves {v2 / mlflow:.2f}x what our "
            f"/invocations does, and {v2 / theirs:.1f}x what MLServer-MLflow's V2 does."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
