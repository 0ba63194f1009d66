"""A scenario's result and the Markdown report of a run: a summary table of verdicts, then
each scenario's notes (its targets) and figures."""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    name: str
    passed: bool
    figures: dict[str, Any]
    notes: str = ""


def render(results: list[Result], command: str, seconds: float) -> str:
    lines = [
        "# Reliability: load, restarts, faults",
        "",
        f"`{command}`, "
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
