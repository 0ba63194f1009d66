"""Where one server worker's time goes under load: py-spy samples of one worker (gemini backend,
the stub at 200 ms, wrk at 100 connections), summarised as a table.

    python bench/profile_worker.py --label after [--seconds 12] [--output bench/results/serving_profile.md]
    python bench/profile_worker.py --label before --from-raw stacks.txt   # an earlier capture

Needs wrk (apt-get install -y wrk) and py-spy (pip install py-spy; root or ptrace rights).
Each run appends one section to the output: the share of busy samples by component (the
innermost frame of a sample that belongs to a component names it) and the frames with the most
samples of their own.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import free_port, launched, wait_for_workers

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY_SPY = shutil.which("py-spy") or (str(BIN / "py-spy") if (BIN / "py-spy").exists() else "")
BODY = json.dumps(
    {"dataframe_records": [{"patient_id": "w1", "medications": ["Coumadin", "Advil"]}]}
)
# (path fragment, component): the first that matches a frame's file names its component.
COMPONENTS = [
    ("genai/", "google-genai (request and response conversion)"),
    ("pydantic", "pydantic (models, validation)"),
    ("aiohttp", "aiohttp (the HTTP client)"),
    ("uvicorn", "uvicorn (HTTP server)"),
    ("starlette", "starlette"),
    ("fastapi", "fastapi (routing, dependencies)"),
    ("pharmacy_service/model", "the pharmacy model (parse, screen, notes)"),
    ("pharmacy_service", "the server (handler, middleware)"),
    ("modelhub/serving", "modelhub executor"),
    ("tenacity", "tenacity"),
    ("netrc", "netrc lookups"),
    ("logging", "logging"),
    ("json/", "json"),
    ("prometheus_client", "prometheus_client"),
    ("concurrent/futures", "thread-pool hops"),
    ("threading", "threads (hand-offs, locks)"),
    ("asyncio/runners", "uvloop (native: I/O, parsing, callbacks)"),
    ("asyncio/", "asyncio (the executor's loop, futures)"),
    ("selectors", "asyncio (the executor's loop, futures)"),
]
IDLE = (
    "Condition.wait (",
    "wait (threading",
    "EpollSelector.select (",
    "_worker (concurrent/futures/thread.py:81)",
)


def capture(seconds: int, raw: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    from pharmacy_service.model.build import build

    model = work / "model"
    build(model)
    script = work / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY)}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    stub_port, port = free_port(), free_port()
    stub_env = {
        **os.environ,
        "STUB_HOST": "127.0.0.1",
        "STUB_PORT": str(stub_port),
        "STUB_LATENCY_MS": "200",
    }
    stub_url = f"http://127.0.0.1:{stub_port}"
    with launched(
        [str(BIN / "pharmacy-gemini-stub")],
        stub_env,
        work / "stub.log",
        f"{stub_url}/health",
        "stub",
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PHARMACY_", "GEMINI_"))}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PHARMACY_LLM_BACKEND="gemini",
            GEMINI_BASE_URL=stub_url,
            PHARMACY_LOG_LEVEL="WARNING",
            HOST="127.0.0.1",
            PORT=str(port),
            WEB_CONCURRENCY="1",
            PHARMACY_MODEL_URI=str(model),
            PROMETHEUS_MULTIPROC_DIR=str(work / "metrics"),
        )
        base = f"http://127.0.0.1:{port}"
        command = [str(BIN / "gunicorn"), "-c", "python:pharmacy_service.server.gunicorn_conf"]
        with launched(command, env, work / "server.log", f"{base}/health/ready", "server") as (
            process,
            _,
        ):
            (worker,) = wait_for_workers(base, process.pid, 1, 60)
            load = ["wrk", "-t1", "-c100", "-s", str(script), f"{base}/invocations"]
            subprocess.run([*load, "-d3s"], capture_output=True, check=True)  # warm up
            wrk = subprocess.Popen([*load, f"-d{seconds + 2}s"], stdout=subprocess.DEVNULL)
            spy = [PY_SPY, "record", "-p", str(worker), "-d", str(seconds), "-r", "200"]
            subprocess.run(
                [*spy, "-f", "raw", "-o", str(raw), "--nonblocking"],
                capture_output=True,
                check=True,
            )
            wrk.wait(seconds + 30)


def summarise(raw: Path, top: int = 15) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Busy samples, samples by component (the innermost frame that belongs to a component
    names it: where the CPU went), and the frames with the most samples of their own."""
    total = 0
    by_component: collections.Counter[str] = collections.Counter()
    by_frame: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE):
            continue  # an idle thread or loop: waiting, not working
        total += samples
        component = next(
            (
                name
                for frame in reversed(frames)
                for fragment, name in COMPONENTS
                if fragment in frame.partition(" (")[2]
            ),
            "other",
        )
        by_component[component] += samples
        name, _, where = frames[-1].partition(" (")
        by_frame[f"{name} ({where.split('site-packages/')[-1].rstrip(')')})"] += samples
    return total, by_component.most_common(), by_frame.most_common(top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="the section's title, e.g. before, after")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--from-raw", type=Path, help="summarise this py-spy raw capture instead")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "serving_profile.md"
    )
    args = parser.parse_args()
    raw = args.from_raw
    if raw is None:
        if shutil.which("wrk") is None or not PY_SPY:
            sys.stderr.write(
                "wrk and py-spy are needed: apt-get install -y wrk; pip install py-spy\n"
            )
            return 2
        raw = Path(tempfile.mkdtemp(prefix="bench-profile-")) / "stacks.txt"
        capture(args.seconds, raw)
    total, components, frames = summarise(raw)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    lines = [
        f"## {args.label}",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit or 'unknown'}"
        f"{' (capture from ' + str(args.from_raw.name) + ')' if args.from_raw else ''}; "
        f"{total} busy samples of one worker at 200 Hz (idle waits left out).",
        "",
        "| component (the innermost frame of each sample that belongs to one) | share |",
        "|---|---:|",
        *(f"| {name} | {100 * n / total:.1f}% |" for name, n in components),
        "",
        "| frame (own samples) | share |",
        "|---|---:|",
        *(f"| `{name}` | {100 * n / total:.1f}% |" for name, n in frames),
        "",
    ]
    if not args.output.exists():
        args.output.write_text(
            "# Where one worker's time goes\n\n`bench/profile_worker.py`: py-spy on one worker "
            "(gemini backend, stub at 200 ms, wrk at 100 connections). Sections in the order "
            "they were recorded.\n\n"
        )
    with args.output.open("a") as out:
        out.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
