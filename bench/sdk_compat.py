"""SDK-compatibility matrix: which LLM SDK versions break with a fresh event loop per call, and
that the shared loop holds on every one of them.

For each client (openai, anthropic and google-genai at the pinned versions and at an older
release a model may still pin; a plain aiohttp.ClientSession and httpx.AsyncClient; and the
pharmacy pipeline on google-genai 1.67.0) it runs bench/sdk_compat_driver.py, ONE module-level
client per process, in three executor settings, interleaved: ``isolated`` with one attempt (the
seed: ``asyncio.run`` per call, no retry), ``isolated`` (3 attempts) and ``shared`` (3
attempts), against the stub started here on 127.0.0.1 (each SDK on its own wire format).
The pinned versions run in this venv; each older one in its own venv under
.cache/sdk-compat/, created once and reused, with the shared dependencies pinned from
requirements/constraints.txt where they are compatible.

Writes bench/results/sdk_compat.md, prints the JSON, and exits 1 unless shared mode had zero
failures (every call succeeded, no fallback, no loop error) in every cell.

    python bench/sdk_compat.py [--pinned-only] [--sequential 30] [--threads 10] [--calls 5]
        [--output PATH]

``--pinned-only`` (the CI test) creates no venv and needs no network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pharmacy_service.stub import StubConfig, StubStats, run_in_thread

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "sdk-compat"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
SDK_DISTRIBUTIONS = ("openai", "anthropic", "google-genai")
MODES = (("isolated", 1), ("isolated", 3), ("shared", 3))
"""(mode, the executor's max_attempts): the seed, the seed with retries, the fix."""


@dataclass(frozen=True)
class Venv:
    """A cached venv with an older SDK release (and ``tenacity`` for modelhub)."""

    name: str
    requirements: tuple[str, ...]

    @property
    def path(self) -> Path:
        return CACHE / self.name


@dataclass(frozen=True)
class Cell:
    client: str
    """The driver's client: openai, anthropic, genai, aiohttp, httpx or pipeline."""
    venv: Venv | None = None
    """None: the project venv (the pinned versions)."""


GENAI_OLD = Venv("genai-1.67.0", ("google-genai==1.67.0", "tenacity", "rapidfuzz"))
GENAI_OLD_AIOHTTP = Venv("genai-1.67.0-aiohttp", ("google-genai==1.67.0", "tenacity", "aiohttp"))
OLDER = (
    Cell("openai", Venv("openai-1.109.1", ("openai==1.109.1", "tenacity"))),
    Cell("anthropic", Venv("anthropic-0.69.0", ("anthropic==0.69.0", "tenacity"))),
    Cell("genai", GENAI_OLD),
    Cell("genai", GENAI_OLD_AIOHTTP),
    Cell("pipeline", GENAI_OLD),
)
PINNED = tuple(Cell(client) for client in ("openai", "anthropic", "genai", "aiohttp", "httpx"))


_CONFLICT = re.compile(r"The user requested \(constraint\) ([A-Za-z0-9_.-]+)==")


def shared_pins(drop: set[str]) -> Path:
    """constraints.txt without the three SDKs (each venv pins its own release of one) and
    without the pins in ``drop``."""
    lines = [
        line
        for line in CONSTRAINTS.read_text().splitlines()
        if _name(line.split("==")[0]) not in {*SDK_DISTRIBUTIONS, *drop}
    ]
    path = CACHE / "constraints-shared.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _name(distribution: str) -> str:
    return distribution.strip().lower().replace("_", "-")


def ensure_venv(venv: Venv) -> Path:
    """The venv's python, creating the venv on first use (or when its requirements change).

    Shared dependencies are pinned from constraints.txt; a pin the older SDK cannot use (pip
    names it in its conflict report) is dropped, and the marker file says which."""
    python = venv.path / "bin" / "python"
    marker = venv.path / "installed.txt"
    wanted = "\n".join([*venv.requirements, f"constraints: {CONSTRAINTS.read_text()}"])
    if python.exists() and marker.exists() and marker.read_text().startswith(wanted):
        return python
    print(f"creating {venv.path} ({' '.join(venv.requirements)})", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv.path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    dropped: set[str] = set()
    for _ in range(10):
        done = subprocess.run(
            [*pip, "-c", str(shared_pins(dropped)), *venv.requirements],
            capture_output=True,
            text=True,
            check=False,
        )
        conflicts = {_name(n) for n in _CONFLICT.findall(done.stdout + done.stderr)}
        if done.returncode == 0 or not conflicts - dropped:
            break
        dropped |= conflicts
    if done.returncode != 0:
        raise SystemExit(f"{venv.name}: pip install failed:\n{done.stderr[-3000:]}")
    if "aiohttp" not in venv.requirements:
        probe = subprocess.run([str(python), "-c", "import aiohttp"], capture_output=True)
        if probe.returncode == 0:
            raise SystemExit(f"{venv.path} has aiohttp installed; this cell needs httpx only")
    marker.write_text(f"{wanted}\nunpinned (conflicts): {' '.join(sorted(dropped)) or '-'}")
    return python


def venv_note(venv: Venv | None) -> str:
    """Where a cell ran, and which shared pins its older SDK could not use."""
    if venv is None:
        return "project .venv"
    marker = (venv.path / "installed.txt").read_text().splitlines()
    dropped = next((m.split(":", 1)[1].strip() for m in marker if m.startswith("unpinned")), "-")
    return venv.name + ("" if dropped == "-" else f"; not pinned (conflict): {dropped}")


def run_cell(
    python: Path, client: str, base_url: str, mode: str, attempts: int, args: argparse.Namespace
) -> dict[str, Any]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("modelhub_sdk/src", "service/src")),
    )
    command = [
        str(python),
        str(ROOT / "bench" / "sdk_compat_driver.py"),
        client,
        base_url,
        mode,
        f"--attempts={attempts}",
        f"--sequential={args.sequential}",
        f"--threads={args.threads}",
        f"--calls={args.calls}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def succeeded(run: dict[str, Any]) -> int:
    return int(run["sequential"].get("ok", 0) + run["concurrent"].get("ok", 0))


def failed(run: dict[str, Any]) -> int:
    return int(run["sequential"].get("failed", 0) + run["concurrent"].get("failed", 0))


def fallbacks(run: dict[str, Any]) -> int:
    return int(run["sequential"].get("fallback", 0) + run["concurrent"].get("fallback", 0))


def loop_errors(run: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in run["attempt_errors"].items() if not k.startswith("other: ")}


def shared_clean(run: dict[str, Any]) -> bool:
    return succeeded(run) == run["calls"] and not run["attempt_errors"] and not run["retries"]


def verdict(runs: list[dict[str, Any]]) -> tuple[bool, str]:
    shared = [r for r in runs if r["mode"] == "shared"]
    dirty = [f"{r['client']} {r['version']}" for r in shared if not shared_clean(r)]
    broken = sorted(
        {
            f"{r['client']} {r['version']}"
            for r in runs
            if r["mode"] == "isolated" and (failed(r) or fallbacks(r) or r["attempt_errors"])
        }
    )
    ok = bool(shared) and not dirty
    summary = (
        f"shared mode: {len(shared) - len(dirty)} of {len(shared)} cells with every call "
        f"succeeded and no loop error{'; not clean: ' + ', '.join(dirty) if dirty else ''}; "
        f"isolated mode failed, fell back or retried in: {', '.join(broken) or 'none'}"
    )
    return ok, summary


def _counts(counts: dict[str, int]) -> str:
    return "; ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "0"


def mode_label(run: dict[str, Any]) -> str:
    return run["mode"] if run["attempts"] > 1 else f"{run['mode']}, 1 attempt"


def table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| client | version | transport | mode | succeeded | loop errors seen (per attempt) "
        "| other errors | retries | recovered | failed | of which hung | fallbacks | requests "
        "| connections "
        "| s |",
        "|---|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        other = {
            k[len("other: ") :]: v
            for k, v in r["attempt_errors"].items()
            if k not in loop_errors(r)
        }
        mode = mode_label(r)
        client = "pipeline (gemini)" if r["client"] == "pipeline" else r["client"]
        lines.append(
            f"| {client} | {r['version']} | {r['transport']} | {mode} | "
            f"{succeeded(r)}/{r['calls']} | {_counts(loop_errors(r))} | {_counts(other)} | "
            f"{sum(r['retries'].values())} | {r['recovered']} | {failed(r)} | {r['timeouts']} | {fallbacks(r)} | "
            f"{r['stub']['requests']} | {r['stub']['connections']} | {r['seconds']} |"
        )
    return lines


def reading(runs: list[dict[str, Any]]) -> list[str]:
    """The matrix in a few sentences, from the numbers."""

    def name(r: dict[str, Any]) -> str:
        extra = (
            " over aiohttp"
            if r["client"] in ("genai", "pipeline") and r["transport"] == "aiohttp"
            else ""
        )
        return f"{'pipeline on google-genai' if r['client'] == 'pipeline' else r['client']} {r['version']}{extra}"

    def of(mode: str, attempts: int) -> list[dict[str, Any]]:
        return [r for r in runs if (r["mode"], r["attempts"]) == (mode, attempts)]

    def listed(cells: list[dict[str, Any]]) -> str:
        return ", ".join(f"{name(r)} {succeeded(r)}/{r['calls']}" for r in cells) or "none"

    seed, retried, shared = of("isolated", 1), of("isolated", 3), of("shared", 3)
    unretried = sorted(
        {
            k
            for r in retried
            for k in r["attempt_errors"]
            if "(not retried)" in k or k.startswith("other")
        }
    )
    hung = sum(r["timeouts"] for r in retried)
    clean_seed = [name(r) for r in seed if succeeded(r) == r["calls"]]
    return [
        f"- The seed (`asyncio.run` per call, no retry) with one module-level client: "
        f"{listed([r for r in seed if succeeded(r) < r['calls']])}. A warm call finds the "
        "client's pooled connection bound to the previous, closed loop; about every other "
        "sequential call fails, and more under concurrency. Unaffected: "
        f"{', '.join(clean_seed) or 'none'}.",
        f"- Isolated mode's retries (3 attempts) bring them to "
        f"{listed([r for r in retried if succeeded(r) < r['calls']])}: most calls recover "
        "(each on a new connection), not all; a client that never gets a working connection "
        f"(aiohttp's session) recovers none. {hung} calls hung until their deadline. Errors a "
        "retry does not cover (not among the executor's loop errors, or not raised `from` "
        f"one): {', '.join(f'`{k}`' for k in unretried) or 'none'}.",
        f"- Shared mode: {sum(shared_clean(r) for r in shared)} of {len(shared)} cells with "
        "every call succeeded, no loop error and no retry, on every SDK version and transport, "
        f"over {connections(shared)} connections per cell (keep-alive: one per calling thread); "
        f"isolated mode opened {connections(retried)} (one per successful call).",
    ]


def connections(runs: list[dict[str, Any]]) -> str:
    counts = sorted(r["stub"]["connections"] for r in runs)
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"


def versions(runs: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, str] = {}
    for r in runs:
        deps = ", ".join(f"{k} {v}" for k, v in r["deps"].items() if v)
        seen.setdefault(f"{r['client']} {r['version']} ({r['venv']})", deps)
    return [f"- {cell}: {deps}" for cell, deps in seen.items()]


def report(runs: list[dict[str, Any]], ok: bool, summary: str, command: str, seconds: float) -> str:
    lines = [
        "# SDK-compatibility matrix: loop-bound LLM clients under each executor mode",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"Python {platform.python_version()}; CPU: {cpu_model()}",
        f"- Command: `{command}` ({seconds:.0f} s, venvs already created)",
        f"- Each cell: ONE module-level client per process; {runs[0]['calls']} calls through "
        "AsyncExecutor.run: sequential from one thread, then threads x calls started together "
        "(see the raw JSON); HTTP timeout 2 s, SDK retries off, 6 s deadline per call; the stub on 127.0.0.1 with "
        "20 ms latency, its wire format per client (OpenAI for aiohttp/httpx). Modes "
        "interleaved per client: `isolated, 1 attempt` is the seed (asyncio.run per call, no "
        "retry), `isolated` and `shared` retry loop errors up to 3 attempts.",
        "- Columns: loop errors seen = failed attempts by kind (`X <- ...` the SDK raised X "
        "from the loop error; the executor follows `__cause__` and retries it); retries, "
        "recovered and hung (past the deadline) are the executor's hooks; fallbacks = template "
        "notes (pipeline); requests and connections = the stub's counters for the cell.",
        f"- Verdict: **{'PASS' if ok else 'FAIL'}** ({summary})",
        "",
        *table(runs),
        "",
        "## Reading",
        "",
        *reading(runs),
        "",
        "## Versions (the venv each cell ran in, and its HTTP libraries)",
        "",
        *versions(runs),
        "",
        "## Errors that reached the caller",
        "",
    ]
    for r in runs:
        for error, count in sorted(r["caller_errors"].items()):
            lines.append(f"- {r['client']} {r['version']} {mode_label(r)}: {count} x `{error}`")
    lines += ["", "## Raw", "", "```json", json.dumps(runs, indent=1), "```", ""]
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return platform.processor() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pinned-only", action="store_true", help="this venv only (CI)")
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5, help="calls per thread")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "sdk_compat.md")
    args = parser.parse_args()
    cells = PINNED if args.pinned_only else PINNED + OLDER
    pythons = {
        cell: ensure_venv(cell.venv) if cell.venv else Path(sys.executable) for cell in cells
    }
    started = time.monotonic()
    runs = []
    with run_in_thread(StubConfig(latency_ms=20)) as stub:
        base_url = f"http://127.0.0.1:{stub.port}"
        for cell in cells:
            for mode, attempts in MODES:
                stub.stats = StubStats()
                result = run_cell(pythons[cell], cell.client, base_url, mode, attempts, args)
                result["stub"] = stub.stats.as_dict()
                result["venv"] = venv_note(cell.venv)
                runs.append(result)
                print(
                    f"{cell.client} {result['version']} {mode}/{attempts}: "
                    f"{succeeded(result)}/{result['calls']} ok",
                    file=sys.stderr,
                )
    seconds = time.monotonic() - started
    ok, summary = verdict(runs)
    command = " ".join(["python bench/sdk_compat.py", *sys.argv[1:]])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report(runs, ok, summary, command, seconds))
    print(json.dumps({"ok": ok, "summary": summary, "seconds": round(seconds, 1), "runs": runs}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
