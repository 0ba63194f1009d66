"""Run the reliability scenarios against one stub and a freshly built model, then write the report.

Writes bench/results/reliability.md (or --output) and exits 1 when a target is missed."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.reliability import (
    bad_input,
    blocked_loop,
    drain,
    loop_faults,
    overload,
    recycle,
    rolling_restart,
    soak,
    upstream_faults,
    worker_kill,
)
from bench.reliability.processes import ROOT, Stub, stub_process
from bench.reliability.report import Result, render

Scenario = Callable[[Path, Stub, Path, bool], Result]
"""``(model, stub, logs, quick) -> Result``: a scenario starts its own server(s)."""

SCENARIOS: dict[str, Scenario] = {
    "rolling-restart": rolling_restart.run,
    "drain": drain.run,
    "recycle": recycle.run,
    "worker-kill": worker_kill.run,
    "overload": overload.run,
    "soak": soak.run,
    "upstream-faults": upstream_faults.run,
    "loop-faults": loop_faults.run,
    "blocked-loop": blocked_loop.run,
    "bad-input": bad_input.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reliability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="shorter runs (CI smoke)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/reliability.md")
    args = parser.parse_args(argv)
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
    command = (
        f"python -m bench.reliability{' --quick' if args.quick else ''}"
        f"{' --only ' + ' '.join(args.only) if args.only else ''}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results, command, time.monotonic() - started))
    print(f"wrote {args.output}; server logs in {logs}", file=sys.stderr)
    return 0 if all(r.passed for r in results) else 1
