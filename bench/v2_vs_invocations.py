"""Open Inference Protocol inference against ``/invocations``, on one server, in one run (#20).

The same saved model, the gemini backend against the project's stub (200 ms per answer), one
gunicorn worker; wrk posts one row (Coumadin + Advil) to each endpoint in turn, at 50 and 100
connections, for a fixed time, over several rounds; the medians are recorded. V2 must be within
10% of ``/invocations``: both go through the same handler and ``apredict``.

    python bench/v2_vs_invocations.py [--rounds 3] [--duration 10] [--output bench/results/v2.md]

MLServer-MLflow is not in this run yet (its venv is not built here; see the issue's note).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from pharmacy_service.model.build import MODEL_NAME, build
from serving import gemini_stub, start, wrk

ROW = {"patient_id": "w1", "medications": ["Coumadin", "Advil"]}
BODIES = {
    "/invocations": json.dumps({"dataframe_records": [ROW]}),
    f"/v2/models/{MODEL_NAME}/infer": json.dumps(
        {
            "inputs": [
                {"name": "patient_id", "shape": [1], "datatype": "BYTES", "data": ["w1"]},
                {
                    "name": "medications",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [json.dumps(ROW["medications"])],
                },
            ]
        }
    ),
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
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with (
        gemini_stub() as (_, stub_url),
        start("ours", model, 1, stub_url, work, (work / "mlruns").as_uri()) as server,
    ):
        for path in BODIES:  # warm both, and check they answer 200
            httpx.post(
                server.base_url + path,
                content=BODIES[path],
                headers={"content-type": "application/json"},
                timeout=30,
            ).raise_for_status()
        for _ in range(args.rounds):
            for connections in args.connections:
                for path, script in scripts.items():
                    measured = wrk(
                        server.base_url, connections, args.duration, script, server, path
                    )
                    results.setdefault((path, connections), []).append(measured)
    lines = [
        "| endpoint | connections | req/s (median) | p50 ms | p99 ms | errors | req/s each round |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for (path, connections), runs in results.items():
        label = "V2 infer" if path.startswith("/v2") else "/invocations"
        lines.append(
            f"| {label} | {connections} | {statistics.median(r['rps'] for r in runs):.1f} | "
            f"{statistics.median(r['p50_ms'] for r in runs):.0f} | "
            f"{statistics.median(r['p99_ms'] for r in runs):.0f} | "
            f"{sum(r['errors'] for r in runs):.0f} | "
            f"{', '.join(format(r['rps'], '.0f') for r in runs)} |"
        )
    for connections in args.connections:
        v2 = statistics.median(
            r["rps"] for r in results[(f"/v2/models/{MODEL_NAME}/infer", connections)]
        )
        mlflow = statistics.median(r["rps"] for r in results[("/invocations", connections)])
        lines.append("")
        lines.append(
            f"At {connections} connections V2 serves {v2 / mlflow:.2f}x what /invocations does."
        )
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
