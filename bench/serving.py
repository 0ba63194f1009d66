"""This server against MLflow's scoring server on the same saved model, measured with wrk.

The model uses the gemini backend against the Gemini-compatible stub (200 ms per answer, a
separate process on this machine). For 1 and 2 workers, each server is started (start-up time
to ready is measured), then wrk runs at 20, 100 and 200 connections for a fixed duration, the
servers interleaved at each level. Beside `ours`, the same server with MLflow Tracing on for every
request and for one in ten, exporting to an `mlflow server` started here (``--mlflow-server``)
or to a file store. Writes bench/results/serving.md.

    python bench/serving.py [--duration 10] [--rounds 1] [--workers 1 2] [--output PATH]
                            [--mlflow-server PATH/TO/mlflow]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from harness import cpu_seconds, extra_venv, free_port, launched, mlserver_command, tree_pids

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UPSTREAM_MS = 200
KINDS = (
    "mlflow",
    "ours",
    "ours (traced)",
    "ours (traced 10%)",
    "ours (threads)",
    "ours (template)",
)
BODY = json.dumps(
    {"dataframe_records": [{"patient_id": "w1", "medications": ["Coumadin", "Advil"]}]}
)


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process: PSS shares each page among the processes that map it, so the
    preloaded master's pages are not counted again in every worker."""
    values = {"Rss:": 0.0, "Pss:": 0.0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split()[0] if line else ""
            if key in values:
                values[key] = int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return values["Rss:"], values["Pss:"]


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree_pids(pid):
        try:
            total += cpu_seconds(p)
        except FileNotFoundError:
            continue
    return total


@dataclass
class Server:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    startup_seconds: float
    peak_rss: dict[int, float] = field(default_factory=dict)


@contextmanager
def start(
    kind: str, model: Path, workers: int, stub_url: str, logs: Path, tracking_uri: str
) -> Iterator[Server]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PHARMACY_LLM_BACKEND="template" if kind == "ours (template)" else "gemini",
        GEMINI_BASE_URL=stub_url,
        PHARMACY_LLM_TIMEOUT="10",
        PHARMACY_LOG_LEVEL="WARNING",
        MLFLOW_DISABLE_TELEMETRY="true",  # no events to MLflow's servers, from either server
    )
    if kind == "mlflow":
        command = [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(workers),
        ]
        ready_path = "/ping"
    elif kind == "mlserver":  # MLServer + mlserver-mlflow, in its own venv; default settings
        from pharmacy_service.model.build import MODEL_NAME

        mlserver = extra_venv("mlserver").with_name("mlserver")
        settings = Path(tempfile.mkdtemp(prefix="bench-mlserver-")) / "settings"
        command = mlserver_command(mlserver, model, settings, MODEL_NAME, port, workers)
        ready_path = f"/v2/models/{MODEL_NAME}/ready"
    else:
        env.update(
            HOST="127.0.0.1",
            PORT=str(port),
            WEB_CONCURRENCY=str(workers),
            PHARMACY_MODEL_URI=str(model),
            PHARMACY_ASYNC_PREDICT="false" if kind == "ours (threads)" else "true",
            PHARMACY_TRACING="true" if kind.startswith("ours (traced") else "false",
            PHARMACY_REQUEST_TIMEOUT="60",
            MAX_REQUESTS="0",  # no recycling: a recycled worker's CPU would leave the measurement
            PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="bench-metrics-"),
        )
        command = [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.server.gunicorn_conf"]
        ready_path = "/health/ready"
        if kind.startswith("ours (traced"):  # each request a trace (or one in ten), exported
            env.update(
                MLFLOW_TRACKING_URI=tracking_uri,
                MLFLOW_ALLOW_FILE_STORE="true",
                MLFLOW_EXPERIMENT_NAME="bench-serving",
                MLFLOW_TRACE_SAMPLING_RATIO="0.1" if kind == "ours (traced 10%)" else "1.0",
            )
    log = logs / f"{kind.replace(' ', '_').strip('()')}-{workers}.log"
    base = f"http://127.0.0.1:{port}"
    with launched(command, env, log, base + ready_path, kind) as (process, startup):
        yield Server(kind, base, process, startup)


@contextmanager
def gemini_stub(latency_ms: float = UPSTREAM_MS) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The project's Gemini-compatible stub on 127.0.0.1, answering after ``latency_ms``: its
    process and URL once it answers; stopped afterwards."""
    port = free_port()
    stub = subprocess.Popen(
        [str(BIN / "pharmacy-gemini-stub"), "--port", str(port), "--latency-ms", str(latency_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield stub, url
    finally:
        stub.terminate()
        stub.wait(10)


@contextmanager
def tracking_server(mlflow: Path, work: Path) -> Iterator[str]:
    """An MLflow tracking server on 127.0.0.1 (SQLite store), as the compose registry runs it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    command = [
        str(mlflow),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--artifacts-destination",
        str(work / "mlflow-artifacts"),
    ]
    base = f"http://127.0.0.1:{port}"
    with launched(command, env, work / "mlflow-server.log", f"{base}/health", "mlflow server", 180):
        yield base


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk(
    base: str,
    connections: int,
    duration: int,
    script: Path,
    server: Server,
    path: str = "/invocations",
) -> dict[str, Any]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"{base}{path}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0.0  # the largest single process of the server (a worker)
    while process.poll() is None:
        for pid in tree_pids(server.process.pid):
            rss, pss = memory_mib(pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.5)
    output = process.stdout.read() if process.stdout else ""
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    latency = {p: float(v) * scale[u] for p, v, u in _LATENCY.findall(output)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    )
    return {
        "rps": rps,
        "p50_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "requests": requests,
        "errors": errors,
        "peak_rss_mib": round(peak_rss, 1),
        "peak_pss_mib": round(peak_pss, 1),
        "raw": output,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, nargs="+", default=[20, 100, 200])
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "serving.md")
    parser.add_argument(
        "--mlflow-server",
        type=Path,
        help="an `mlflow` executable from a full MLflow install (the image's registry stage: "
        "pip install -r requirements/runtime.txt -r requirements/registry.txt): the traced "
        "server exports to this tracking server on 127.0.0.1; without it, to a file store",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.stderr.write("wrk is needed: apt-get install -y wrk\n")
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    from pharmacy_service.model.build import build

    model = work / "model"
    build(model)
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    results: list[dict[str, Any]] = []
    kinds = list(KINDS)
    outer = ExitStack()
    stub, stub_url = outer.enter_context(gemini_stub())
    tracking_uri = (work / "mlruns").as_uri()
    if args.mlflow_server:
        tracking_uri = outer.enter_context(tracking_server(args.mlflow_server, work))
    try:
        for round_index in range(args.rounds):
            for workers in args.workers:
                with ExitStack() as stack:
                    servers = {
                        k: stack.enter_context(
                            start(k, model, workers, stub_url, work, tracking_uri)
                        )
                        for k in kinds
                    }
                    for connections in args.connections:
                        for kind in kinds:
                            server = servers[kind]
                            stub_cpu = cpu_seconds(stub.pid)
                            server_cpu = tree_cpu_seconds(server.process.pid)
                            result = wrk(
                                server.base_url, connections, args.duration, script, server
                            )
                            result.update(
                                server=kind,
                                workers=workers,
                                connections=connections,
                                round=round_index + 1,
                                startup_s=round(server.startup_seconds, 2),
                                stub_cpu_s=round(cpu_seconds(stub.pid) - stub_cpu, 2),
                                server_cpu_ms=round(
                                    1000
                                    * (tree_cpu_seconds(server.process.pid) - server_cpu)
                                    / max(1, result["requests"]),
                                    2,
                                ),
                            )
                            results.append(result)
                            print(
                                f"{kind:15} w={workers} c={connections:3}: {result['rps']:8.1f} req/s "
                                f"p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms "
                                f"errors {result['errors']}",
                                file=sys.stderr,
                            )
    finally:
        outer.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.output.with_suffix(".png"))
    args.output.write_text(report(results, args))
    print(args.output.read_text().split("## Raw")[0])
    return 0


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Throughput and p99 against connections, one line per server and worker count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = sorted({(r["server"], r["workers"]) for r in results})
    for server, workers in series:
        rows = [r for r in results if r["server"] == server and r["workers"] == workers]
        levels = sorted({r["connections"] for r in rows})
        rps = [statistics.median(r["rps"] for r in rows if r["connections"] == c) for c in levels]
        p99 = [
            statistics.median(r["p99_ms"] for r in rows if r["connections"] == c) for c in levels
        ]
        style = "-" if workers == 1 else "--"
        label = f"{server}, {workers} worker{'s' if workers > 1 else ''}"
        left.plot(levels, rps, style, marker="o", label=label)
        right.plot(levels, p99, style, marker="o", label=label)
    left.set(xlabel="concurrent connections", ylabel="requests/s", title="Throughput")
    right.set(xlabel="concurrent connections", ylabel="p99 latency (ms)", title="p99 latency")
    right.axhline(3 * UPSTREAM_MS, color="grey", linewidth=0.8, linestyle=":")
    right.annotate("3x upstream", (min(r["connections"] for r in results), 3 * UPSTREAM_MS))
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle(f"gemini backend against the stub ({UPSTREAM_MS} ms); wrk; 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    lines = [
        "# Serving: this server against `mlflow models serve`",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; CPU: {cpu} "
        f"({os.cpu_count()} cores); Python {platform.python_version()}",
        f"- mlflow-skinny {version('mlflow-skinny')}, gunicorn {version('gunicorn')}, "
        f"uvicorn {version('uvicorn')}, google-genai {version('google-genai')}",
        f"- Command: `python bench/serving.py --duration {args.duration} --rounds {args.rounds}"
        f"{' --mlflow-server PATH' if args.mlflow_server else ''}`",
        f"- Load: `wrk -t1 -cN -d{args.duration}s --latency --timeout 10s` POSTing one row "
        "(warfarin + ibuprofen) to /invocations; the model's gemini backend calls the stub "
        f"(real google-genai SDK), which answers after {UPSTREAM_MS} ms. Servers interleaved "
        "at each level; medians over rounds.",
        "- `ours` awaits the model's `apredict` on the executor loop; `ours (threads)` runs the "
        "sync `predict` in its 64-thread pool; `mlflow` runs `predict` via `asyncio.to_thread`; "
        "`ours (template)` is `ours` with the template backend (no LLM call): the server's own "
        "floor; `ours (traced)` is `ours` with MLflow Tracing on, every request a trace of 6 "
        "spans (`ours (traced 10%)`: one request in ten, MLFLOW_TRACE_SAMPLING_RATIO=0.1) exported (asynchronously, from the worker) to "
        + (
            "an MLflow tracking server (`mlflow server`, SQLite store, one worker) on the same "
            "two cores: its own CPU is not in the server CPU column."
            if args.mlflow_server
            else "an MLflow file store."
        ),
        "- Server CPU: all of the server's processes (master and workers), per request answered. "
        "Peak RSS and PSS: the largest single process of the server while wrk runs (PSS shares "
        "the preloaded master's pages among the processes that map them).",
        f"- Little's law ceiling: connections / {UPSTREAM_MS} ms (100 connections: 500 req/s).",
        "",
        "![throughput and p99 against connections](serving.png)",
        "",
        "| workers | connections | server | req/s | % of ceiling | p50 ms | p99 ms | errors | peak RSS MiB | peak PSS MiB | start-up s | stub CPU s | server CPU ms/request |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted(
        {(r["workers"], r["connections"], r["server"]) for r in results},
        key=lambda k: (k[0], k[1], KINDS.index(k[2])),
    )
    medians: dict[tuple[int, int, str], dict[str, float]] = {}
    for key in keys:
        rows = [r for r in results if (r["workers"], r["connections"], r["server"]) == key]
        m = {
            f: statistics.median(r[f] for r in rows)
            for f in (
                "rps",
                "p50_ms",
                "p99_ms",
                "errors",
                "peak_rss_mib",
                "peak_pss_mib",
                "startup_s",
                "stub_cpu_s",
                "server_cpu_ms",
            )
        }
        medians[key] = m
        ceiling = key[1] / (UPSTREAM_MS / 1000)
        share = "n/a" if key[2] == "ours (template)" else f"{100 * m['rps'] / ceiling:.0f}%"
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {m['rps']:.1f} | {share} | "
            f"{m['p50_ms']:.0f} | {m['p99_ms']:.0f} | {m['errors']:.0f} | {m['peak_rss_mib']:.0f} | "
            f"{m['peak_pss_mib']:.0f} | "
            f"{m['startup_s']:.1f} | {m['stub_cpu_s']:.1f} | {m['server_cpu_ms']:.1f} |"
        )
    lines += ["", "## Targets (100 connections, one worker each)", ""]
    ours, theirs = medians.get((1, 100, "ours")), medians.get((1, 100, "mlflow"))
    if ours and theirs:
        ratio = ours["rps"] / theirs["rps"]

        def verdict(ok: bool) -> str:
            return "met" if ok else "MISSED"

        lines += [
            f"- Server CPU per request: {ours['server_cpu_ms']:.1f} ms (target <= 4.3 ms: "
            f"{verdict(ours['server_cpu_ms'] <= 4.3)}); MLflow: {theirs['server_cpu_ms']:.1f} ms",
            f"- Throughput: {ours['rps']:.0f} req/s (target >= 230: {verdict(ours['rps'] >= 230)}; "
            f"stretch 250: {verdict(ours['rps'] >= 250)}), {ratio:.1f}x MLflow's "
            f"(target >= 10x: {verdict(ratio >= 10)})",
            f"- p99: {ours['p99_ms']:.0f} ms (target <= 700 ms: {verdict(ours['p99_ms'] <= 700)})",
            f"- Errors: {ours['errors']:.0f} (target 0: {verdict(ours['errors'] == 0)})",
            f"- Start-up to ready: {ours['startup_s']:.1f} s (target < 5 s: "
            f"{verdict(ours['startup_s'] < 5)}); MLflow: {theirs['startup_s']:.1f} s",
        ]
    two, two_theirs = medians.get((2, 100, "ours")), medians.get((2, 100, "mlflow"))
    if two and two_theirs:
        lines.append(
            f"- Two workers, 100 connections: {two['rps']:.0f} req/s against MLflow's "
            f"{two_theirs['rps']:.0f} ({two['rps'] / two_theirs['rps']:.1f}x; aim 400 req/s, "
            f"{100 * two['rps'] / 500:.0f}% of the ceiling; wrk and the stub share the two cores)"
        )
    for label in ("ours (traced)", "ours (traced 10%)"):
        traced = medians.get((1, 100, label))
        if ours and traced:
            lines.append(
                f"- {label} (one worker, 100 connections): {traced['server_cpu_ms']:.1f} ms of "
                f"CPU per request against {ours['server_cpu_ms']:.1f} ms untraced "
                f"(+{traced['server_cpu_ms'] - ours['server_cpu_ms']:.1f} ms, "
                f"{traced['server_cpu_ms'] / ours['server_cpu_ms']:.2f}x); {traced['rps']:.0f} "
                f"req/s against {ours['rps']:.0f}; p99 {traced['p99_ms']:.0f} ms against "
                f"{ours['p99_ms']:.0f} ms; errors {traced['errors']:.0f}"
            )
    floor = medians.get((1, 100, "ours (template)"))
    if floor:
        lines.append(
            f"- The server's own floor (template backend, no LLM call): {floor['rps']:.0f} req/s "
            f"at {floor['server_cpu_ms']:.1f} ms of CPU per request"
        )
    lines += ["", "## Raw wrk output", ""]
    for r in results:
        lines += [
            f"### {r['server']}, {r['workers']} worker(s), {r['connections']} connections, "
            f"round {r['round']}",
            "",
            "```",
            r["raw"].strip(),
            "```",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
