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
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness import free_port
from pharmacy_service.model.build import MODEL_NAME, build
from serving import BIN, UPSTREAM_MS, start

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
_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def run_wrk(url: str, connections: int, duration: int, script: Path) -> dict[str, float]:
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    latency = {p: float(v) * scale[u] for p, v, u in _LATENCY.findall(output)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": rps,
        "p50_ms": latency.get("50", 0.0),
        "p99_ms": latency.get("99", 0.0),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
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
    stub_port = free_port()
    stub = subprocess.Popen(
        [
            str(BIN / "pharmacy-gemini-stub"),
            "--port",
            str(stub_port),
            "--latency-ms",
            str(UPSTREAM_MS),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stub_url = f"http://127.0.0.1:{stub_port}"
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for _ in range(100):
            try:
                httpx.get(f"{stub_url}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        with start("ours", model, 1, stub_url, work, (work / "mlruns").as_uri()) as server:
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
                        measured = run_wrk(
                            server.base_url + path, connections, args.duration, script
                        )
                        results.setdefault((path, connections), []).append(measured)
    finally:
        stub.terminate()
        stub.wait(10)
    lines = [
        "| endpoint | connections | req/s (median) | p50 ms | p99 ms | non-2xx | req/s each round |",
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
