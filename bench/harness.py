"""Process measurements shared by the benchmarks (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def tree_pids(pid: int) -> list[int]:
    pids = [pid]
    for child in children(pid):
        pids += tree_pids(child)
    return pids


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, MiB."""
    total = 0
    for p in tree_pids(pid):
        try:
            total += _status(p, "VmRSS:")
        except FileNotFoundError:
            continue
    return total / 1024


def process_stats(pid: int) -> dict[str, float]:
    """RSS (MiB), threads and open files of one process."""
    return {
        "rss_mib": _status(pid, "VmRSS:") / 1024,
        "threads": _status(pid, "Threads:"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def cpu_seconds(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def launched(
    command: list[str],
    env: dict[str, str],
    log: Path,
    ready_url: str,
    name: str,
    seconds: float = 60,
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Start ``command`` in its own process group, logging to ``log``; yield it with its
    start-up time once ``ready_url`` answers 200; stop the whole group afterwards."""
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() - started > seconds:
                raise RuntimeError(f"{name} not ready after {seconds} s")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield process, time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
