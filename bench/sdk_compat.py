"""SDK-version robustness: the pharmacy pipeline on google-genai 1.67.0 (httpx, no aiohttp).

Creates (once, cached in .cache/sdk-compat/) a venv with google-genai 1.67.0 and no aiohttp,
starts the Gemini-compatible stub here, and runs bench/sdk_compat_driver.py in that venv in
each executor mode, interleaved. Writes bench/results/sdk_compat.md and prints the JSON.
Exits 1 unless shared mode has zero failures, fallbacks and retries while isolated mode
fails or retries: the claim this project rests on.

    python bench/sdk_compat.py [--rounds 2] [--output PATH] [--venv DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from pharmacy_service.gemini_stub import StubConfig, StubStats, run_in_thread

ROOT = Path(__file__).resolve().parents[1]
GENAI = "google-genai==1.67.0"
PINNED_FROM_LOCK = ("tenacity", "pydantic", "pydantic-core", "rapidfuzz", "annotated-types")


def pins() -> list[str]:
    lock = (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
    wanted = {name.replace("_", "-").lower() for name in PINNED_FROM_LOCK}
    return [
        line.strip()
        for line in lock
        if "==" in line and line.split("==")[0].replace("_", "-").lower() in wanted
    ]


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    wanted = "\n".join([GENAI, *pins()])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            GENAI,
            *pins(),
        ],
        check=True,
    )
    probe = subprocess.run([str(python), "-c", "import aiohttp"], capture_output=True, check=False)
    if probe.returncode == 0:
        raise SystemExit(f"{venv} has aiohttp installed; this check needs the httpx transport")
    marker.write_text(wanted)
    return python


def run_mode(python: Path, base_url: str, mode: str) -> dict[str, Any]:
    env = dict(
        os.environ,
        PYTHONPATH=f"{ROOT / 'modelhub_sdk' / 'src'}{os.pathsep}{ROOT / 'service' / 'src'}",
    )
    done = subprocess.run(
        [str(python), str(ROOT / "bench" / "sdk_compat_driver.py"), base_url, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def verdict(runs: list[dict[str, Any]]) -> tuple[bool, str]:
    shared = [r for r in runs if r["mode"] == "shared"]
    isolated = [r for r in runs if r["mode"] == "isolated"]
    shared_clean = all(
        not r["errors"]
        and not r["events"]
        and set(r["sequential"]) == {"llm"}
        and set(r["concurrent"]) == {"llm"}
        for r in shared
    )
    isolated_hurt = all(r["events"].get("async_retry", 0) > 0 or r["errors"] for r in isolated)
    ok = shared_clean and isolated_hurt
    return ok, (
        f"shared mode clean: {shared_clean}; isolated mode failed or retried: {isolated_hurt}"
    )


def report(runs: list[dict[str, Any]], ok: bool, summary: str, command: str) -> str:
    lines = [
        "# SDK-version robustness: google-genai 1.67.0 over httpx",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Python {platform.python_version()}, {runs[0]['google_genai'] if runs else '?'} "
        "(no aiohttp installed: the SDK uses httpx), one module-level genai.Client",
        f"- Command: `{command}`",
        "- Each run: the pharmacy pipeline (1 row, 1 LLM call) via AsyncExecutor.run, 50 "
        "sequential calls from one thread, then 20 threads x 10 calls; LLM timeout 2 s; "
        "executor timeout 10 s, 3 attempts. Modes interleaved.",
        f"- Verdict: **{'PASS' if ok else 'FAIL'}** ({summary})",
        "",
        "| run | mode | sequential (50) | concurrent (200) | async_retry | recovered | failed after retries | LLM fallbacks | stub requests | connections | seconds |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in enumerate(runs, 1):
        ev = r["events"]
        fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items()))  # noqa: E731
        lines.append(
            f"| {n} | {r['mode']} | {fmt(r['sequential'])} | {fmt(r['concurrent'])} | "
            f"{ev.get('async_retry', 0)} | {ev.get('async_recovered', 0)} | "
            f"{ev.get('async_failed', 0)} | {ev.get('llm_fallback', 0)} | "
            f"{r['stub']['requests']} | {r['stub']['connections']} | {r['seconds']} |"
        )
    lines += ["", "Errors that reached the caller:", ""]
    for n, r in enumerate(runs, 1):
        for error, count in sorted(r["errors"].items()):
            lines.append(f"- run {n} ({r['mode']}): {count} x `{error}`")
    lines += ["", "## Raw", "", "```json", json.dumps(runs, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "sdk_compat.md")
    parser.add_argument(
        "--venv", type=Path, default=ROOT / ".cache" / "sdk-compat" / "genai-1.67.0"
    )
    args = parser.parse_args()
    python = ensure_venv(args.venv)
    runs = []
    with run_in_thread(StubConfig(latency_ms=20)) as stub:
        base_url = f"http://127.0.0.1:{stub.port}"
        for _ in range(args.rounds):
            for mode in ("isolated", "shared"):
                stub.stats = StubStats()
                result = run_mode(python, base_url, mode)
                result["stub"] = stub.stats.as_dict()
                runs.append(result)
    ok, summary = verdict(runs)
    command = "python bench/sdk_compat.py " + " ".join(sys.argv[1:])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report(runs, ok, summary, command.strip()))
    print(json.dumps({"ok": ok, "summary": summary, "runs": runs}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
