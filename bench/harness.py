"""Helpers shared by the benchmarks and the tests' real servers: free ports, readiness waits,
process launching and Linux /proc readers. The benchmark scripts import it as ``harness`` (their
own directory is on ``sys.path``); the tests and the ``bench.reliability`` package as
``bench.harness``."""

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


def wait_until_ready(
    process: subprocess.Popen[bytes], url: str, log: Path, name: str, seconds: float
) -> float:
    """Poll ``url`` until it answers 200 and return the seconds it took; fail with the end of
    the server's log if the process exits or ``seconds`` pass first."""
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > seconds:
            raise RuntimeError(
                f"{name} not ready in {seconds:.0f} s:\n{log.read_text(errors='replace')[-4000:]}"
            )
        time.sleep(0.05)


def wait_for_workers(base_url: str, master: int, count: int, seconds: float) -> list[int]:
    """Wait until ``count`` workers of ``master`` have each answered ``/version`` (which names
    the pid that answered), on fresh connections; return their pids. Forked is not enough: a
    worker serves only once its model is loaded."""
    deadline = time.monotonic() + seconds
    answered: set[int] = set()
    while True:
        workers = set(children(master))
        try:
            answer = httpx.get(f"{base_url}/version", timeout=2)
            if answer.status_code == 200:
                answered.add(int(answer.json()["pid"]))
        except httpx.TransportError:
            pass
        answered &= workers  # a worker that was replaced meanwhile does not count
        if len(workers) == count and answered == workers:
            return sorted(workers)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(answered)} of {count} workers answered within {seconds:.0f} s "
                f"(pids {sorted(workers)}, answered {sorted(answered)})"
            )
        time.sleep(0.02)


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
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield process, wait_until_ready(process, ready_url, log, name, seconds)
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes], grace: float = 40) -> None:
    """SIGTERM the process's group, SIGKILL it after ``grace`` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def mlserver_command(
    mlserver: Path, model: Path, work: Path, name: str, port: int, parallel_workers: int = 1
) -> list[str]:
    """MLServer (Seldon's Open Inference Protocol server, with its MLflow runtime) serving the
    saved ``model`` as ``name`` on 127.0.0.1:``port``: writes its ``settings.json`` and
    ``model-settings.json`` into ``work`` (a new folder) and returns the command. Its gRPC and
    metrics servers get free ports of their own; ``parallel_workers`` is MLServer's default
    (1: one inference process beside the HTTP server)."""
    import json

    work.mkdir(parents=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": parallel_workers,
    }
    (work / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": name,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(model)},
    }
    (work / "model-settings.json").write_text(json.dumps(model_settings))
    return [str(mlserver), "start", str(work)]


def extra_venv(name: str) -> Path:
    """The python of ``.venv-<name>``, made from ``requirements/<name>.txt`` on first use by
    scripts/extra_venv.sh (tools whose pins conflict with ours: the V2 clients, MLServer)."""
    root = Path(__file__).resolve().parents[1]
    made = subprocess.run(
        ["scripts/extra_venv.sh", name],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return Path(made.stdout.strip().splitlines()[-1])
