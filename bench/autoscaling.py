"""Autoscaling replayed on real metrics (#21): which replica count a CPU HPA and the KEDA
ScaledObject would ask for while the LLM's latency steps 200 ms -> 5 s -> 200 ms.

One pod's worth of the real server (the base Deployment's settings: 2 gunicorn workers, 64
predict threads + 256 queued per worker, the gemini backend against the project's stub) takes a
fixed offered load from an open-loop generator (requests start at a fixed rate whatever the
answers do, as users' requests arrive; wrk's closed loop would slow down with the server). The
stub's latency changes through its ``/config``. Every 5 s the bench scrapes the server's real
``/metrics`` (in-flight, shed) and reads the pod's CPU from /proc (what the kubelet reports),
then replays the samples through the HPA algorithm (bench/autoscaler.py) with each autoscaler's
metrics, targets and behavior from k8s/. This simulates the control loop on real metrics; it is
not a cluster: the load is assumed to divide evenly among pods, and each signal to scale with
the load a pod carries (Little's law for in-flight, a constant CPU cost per request).

    python -m bench.autoscaling [--rate 100] [--phases 60,150,90] [--output bench/results/autoscaling.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import re
import statistics
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from bench.autoscaler import Behavior, Policy, Scaler, desired_replicas
from bench.harness import cpu_seconds, tree_pids
from bench.reliability.processes import server, stub_process

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"dataframe_records": [{"patient_id": "a1", "medications": ["Coumadin", "Advil"]}]}'
SAMPLE_SECONDS = 5
SYNC_SECONDS = 15  # the HPA controller's sync period
CPU_REQUEST = 0.5  # cores: the base Deployment's request
CPU_TARGET = 0.70  # the base HPA: 70% of the request
WORKERS = 2
ADMITTED_PER_WORKER = 64 + 256  # PHARMACY_PREDICT_THREADS + PHARMACY_MAX_QUEUE
LLM_CONNECTIONS_PER_WORKER = 100  # PHARMACY_LLM_MAX_CONNECTIONS' default
BOUND = WORKERS * min(ADMITTED_PER_WORKER, LLM_CONNECTIONS_PER_WORKER)
IN_FLIGHT_TARGET = 0.7 * BOUND  # KEDA's in-flight trigger, per pod
# The whole offered load lands on the one pod measured, so the replay starts from one replica
# (the prod overlay's minimum is 3, its maximum 12).
MIN_REPLICAS, MAX_REPLICAS = 1, 12
CPU_SCALE_DOWN = Behavior(300, (Policy("Pods", 1, 60),))  # k8s/base/hpa.yaml


@dataclass
class Sample:
    t: float
    latency_ms: float
    offered: float  # requests started per second in the interval
    served: float  # 200s per second
    llm_notes: float  # of those, answered with the LLM's note (the rest: the template's)
    shed: float  # 503s per second
    other: float  # any other answer or error per second
    p50_ms: float
    p99_ms: float
    cpu_cores: float
    in_flight: float  # from /metrics
    shed_total: float  # from /metrics


@dataclass
class Load:
    """The open-loop generator's record, read by the sampler."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0
    answers: list[tuple[int, float, bool]] = field(default_factory=list)  # status, s, LLM note

    def take(self) -> tuple[int, list[tuple[int, float, bool]]]:
        with self.lock:
            started, answers = self.started, self.answers
            self.started, self.answers = 0, []
        return started, answers


async def generate(url: str, rate: float, seconds: float, load: Load) -> None:
    """Start ``rate`` requests a second for ``seconds``, each on its own, whatever the answers."""
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one() -> None:
            begun = time.monotonic()
            try:
                async with session.post(
                    url, data=BODY, headers={"content-type": "application/json"}
                ) as answer:
                    text = await answer.read()
                    status = answer.status
            except (TimeoutError, aiohttp.ClientError):
                status, text = 0, b""
            with load.lock:
                load.answers.append(
                    (status, time.monotonic() - begun, b'"note_source": "llm"' in text)
                )

        tasks = set()
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            with load.lock:
                load.started += 1
        await asyncio.gather(*tasks)


def metric(text: str, name: str) -> float:
    values = [float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)]
    return sum(values)


def pod_cpu_seconds(pid: int) -> float:
    """CPU seconds of the server's process tree (the master and its workers)."""
    total = 0.0
    for p in tree_pids(pid):
        with suppress(FileNotFoundError):  # a process that just exited
            total += cpu_seconds(p)
    return total


def measure(rate: float, phases: list[tuple[float, float]]) -> list[Sample]:
    work = Path(tempfile.mkdtemp(prefix="bench-autoscaling-"))
    from pharmacy_service.model.build import build

    build(work / "model")
    samples: list[Sample] = []
    # The base Deployment's ConfigMap (k8s/base/kustomization.yaml), log level INFO included.
    settings = {
        "PHARMACY_PREDICT_THREADS": "64",
        "PHARMACY_MAX_QUEUE": "256",
        "PHARMACY_REQUEST_TIMEOUT": "30",
        "PHARMACY_LOG_LEVEL": "INFO",
    }
    with (
        stub_process(phases[0][1], work) as stub,
        server(work / "model", stub, work, "pod", WORKERS, **settings) as pod,
    ):
        base, pid = pod.base, pod.process.pid
        httpx.post(
            f"{base}/invocations",
            content=BODY,
            headers={"content-type": "application/json"},
            timeout=30,
        ).raise_for_status()
        load = Load()
        total = sum(seconds for seconds, _ in phases)
        thread = threading.Thread(
            target=asyncio.run, args=(generate(f"{base}/invocations", rate, total, load),)
        )
        started = time.monotonic()
        thread.start()
        changes = []
        at = 0.0
        for seconds, latency in phases:
            changes.append((at, latency))
            at += seconds
        latency_now = phases[0][1]
        cpu_before, t_before = pod_cpu_seconds(pid), time.monotonic()
        while thread.is_alive() or time.monotonic() - started < total:
            time.sleep(SAMPLE_SECONDS - (time.monotonic() - started) % SAMPLE_SECONDS)
            elapsed = time.monotonic() - started
            for change_at, latency in changes:
                if change_at <= elapsed and latency != latency_now:
                    stub.configure(latency_ms=latency)
                    latency_now = latency
            cpu_now, t_now = pod_cpu_seconds(pid), time.monotonic()
            text = httpx.get(f"{base}/metrics", timeout=5).text
            started_n, answers = load.take()
            span = t_now - t_before
            seconds_ok = sorted(s for status, s, _ in answers if status == 200)
            samples.append(
                Sample(
                    t=round(elapsed, 1),
                    latency_ms=latency_now,
                    offered=started_n / span,
                    served=len(seconds_ok) / span,
                    llm_notes=sum(1 for status, _, llm in answers if status == 200 and llm) / span,
                    shed=sum(1 for status, _, _ in answers if status == 503) / span,
                    other=sum(1 for status, _, _ in answers if status not in (200, 503)) / span,
                    p50_ms=1000 * _quantile(seconds_ok, 0.5),
                    p99_ms=1000 * _quantile(seconds_ok, 0.99),
                    cpu_cores=(cpu_now - cpu_before) / span,
                    in_flight=metric(text, "pharmacy_http_requests_in_flight"),
                    shed_total=metric(text, "pharmacy_http_requests_shed_total"),
                )
            )
            cpu_before, t_before = cpu_now, t_now
            if elapsed >= total - 1:
                break
        thread.join()
    return samples


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


def replay(samples: list[Sample]) -> dict[str, list[int]]:
    """The replica count each autoscaler holds at each sample (it syncs every 15 s on the
    signals of the last 15 s), starting from the prod overlay's minimum."""
    cpu = Scaler(MIN_REPLICAS, MIN_REPLICAS, MAX_REPLICAS, scale_down=CPU_SCALE_DOWN)
    keda = Scaler(MIN_REPLICAS, MIN_REPLICAS, MAX_REPLICAS, scale_down=CPU_SCALE_DOWN)
    counts: dict[str, list[int]] = {"cpu": [], "keda": []}
    for i, sample in enumerate(samples):
        if i % (SYNC_SECONDS // SAMPLE_SECONDS) == 0:
            window = samples[max(0, i - 2) : i + 1]
            load_cpu = statistics.mean(s.cpu_cores for s in window)
            # The one pod measured carries the whole load: n pods carry 1/n of it each.
            n = cpu.replicas
            cpu.sync(sample.t, desired_replicas(n, load_cpu / n / CPU_REQUEST, CPU_TARGET))
            n = keda.replicas
            in_flight = desired_replicas(n, sample.in_flight / n, IN_FLIGHT_TARGET)
            # The shed trigger (one pod more while the pods shed, over a 1-minute rate): the
            # measured pod sheds what it cannot serve; n pods would serve n times its rate.
            recent = samples[max(0, i - 11) : i + 1]
            shed_at_n = statistics.mean(
                max(0.0, s.offered - n * s.served) if s.shed > 0.1 else 0.0 for s in recent
            )
            sheds = n + 1 if shed_at_n > 0.1 else 0
            cpu_k = desired_replicas(n, load_cpu / n / CPU_REQUEST, CPU_TARGET)
            keda.sync(sample.t, max(in_flight, sheds, cpu_k))
        counts["cpu"].append(cpu.replicas)
        counts["keda"].append(keda.replicas)
    return counts


def needed(sample: Sample, rate: float) -> int:
    """Pods that absorb ``rate`` at this latency by Little's law: rate x latency in flight,
    at most IN_FLIGHT_TARGET per pod (and no fewer than the minimum)."""
    return max(MIN_REPLICAS, math.ceil(rate * (sample.latency_ms / 1000 + 0.05) / IN_FLIGHT_TARGET))


def plot(samples: list[Sample], counts: dict[str, list[int]], rate: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in samples]
    fig, axes = plt.subplots(5, 1, figsize=(9, 13), sharex=True)
    axes[0].plot(t, [s.offered for s in samples], label="offered")
    axes[0].plot(t, [s.served for s in samples], label="served (200)")
    axes[0].plot(t, [s.llm_notes for s in samples], label="of which with the LLM's note")
    axes[0].plot(t, [s.shed for s in samples], label="shed (503)")
    axes[0].set_ylabel("requests/s")
    axes[1].plot(t, [s.p50_ms / 1000 for s in samples], label="p50")
    axes[1].plot(t, [s.p99_ms / 1000 for s in samples], label="p99")
    axes[1].plot(t, [s.latency_ms / 1000 for s in samples], "--", label="LLM latency")
    axes[1].set_ylabel("seconds")
    axes[2].plot(t, [100 * s.cpu_cores / CPU_REQUEST for s in samples], label="CPU, % of request")
    axes[2].axhline(100 * CPU_TARGET, linestyle=":", label="HPA target 70%")
    axes[2].set_ylabel("% of 500m")
    axes[3].plot(t, [s.in_flight for s in samples], label="in flight (/metrics)")
    axes[3].axhline(IN_FLIGHT_TARGET, linestyle=":", label=f"KEDA target {IN_FLIGHT_TARGET:.0f}")
    axes[3].axhline(WORKERS * ADMITTED_PER_WORKER, linestyle="--", label="admission limit")
    axes[3].set_ylabel("requests")
    axes[4].step(t, counts["cpu"], where="post", label="CPU HPA")
    axes[4].step(t, counts["keda"], where="post", label="KEDA (in flight, shed, CPU)")
    axes[4].step(
        t,
        [needed(s, rate) for s in samples],
        where="post",
        linestyle=":",
        label="needed by in flight (Little's law)",
    )
    axes[4].set_ylabel("replicas")
    axes[4].set_xlabel("seconds")
    for axis in axes:
        axis.legend(loc="upper right", fontsize=8)
        axis.grid(alpha=0.3)
    fig.suptitle(f"One pod at {rate:.0f} req/s offered; LLM latency 200 ms -> 5 s -> 200 ms")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def report(samples: list[Sample], counts: dict[str, list[int]], args: argparse.Namespace) -> str:
    def phase(latency: float, skip: float = 20) -> list[Sample]:
        """The first run of samples at this latency, after its first ``skip`` seconds."""
        first = next(i for i, s in enumerate(samples) if s.latency_ms == latency)
        run = []
        for s in samples[first:]:
            if s.latency_ms != latency:
                break
            run.append(s)
        return [s for s in run if s.t >= run[0].t + skip] or run

    rows = []
    for name, latency in (("200 ms", 200.0), ("5 s", 5000.0)):
        chosen = phase(latency)
        rows.append(
            f"| {name} | {statistics.mean(s.offered for s in chosen):.1f} | "
            f"{statistics.mean(s.served for s in chosen):.1f} | "
            f"{statistics.mean(s.llm_notes for s in chosen):.1f} | "
            f"{statistics.mean(s.shed for s in chosen):.1f} | "
            f"{statistics.median(s.p50_ms for s in chosen) / 1000:.2f} | "
            f"{statistics.median(s.p99_ms for s in chosen) / 1000:.2f} | "
            f"{100 * statistics.mean(s.cpu_cores for s in chosen) / CPU_REQUEST:.0f}% | "
            f"{statistics.mean(s.in_flight for s in chosen):.0f} |"
        )
    slow = [i for i, s in enumerate(samples) if s.latency_ms == 5000.0]
    step_at = samples[slow[0]].t
    target = needed(samples[slow[-1]], args.rate)
    reached = next((samples[i].t - step_at for i in slow if counts["keda"][i] >= target), None)
    cpu_peak = max(counts["cpu"][i] for i in slow)
    keda_peak = max(counts["keda"][i] for i in slow)
    lines = [
        "# Autoscaling replayed on real metrics (#21)",
        "",
        f"`python -m bench.autoscaling --rate {args.rate:g} --phases {args.phases}`, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, one run on this machine (2 cores, "
        "shared). One pod's worth of the real server with the base Deployment's settings "
        f"(2 workers, 64 + 256 admitted per worker, log level INFO: an access line per request; "
        "the gemini backend against the project's "
        f"stub), {args.rate:g} requests/s offered open-loop (one row each); the stub's latency "
        "steps 200 ms -> 5 s -> 200 ms. Every 5 s: the server's /metrics (in flight, shed) and "
        "the pod's CPU from /proc. The replica counts are a **simulation** of the HPA control "
        "loop (bench/autoscaler.py, Kubernetes' documented algorithm; tested against the "
        "documentation's worked examples) fed with these measurements, not a cluster: the load "
        "is assumed to divide evenly among pods, each signal to scale with a pod's share.",
        "",
        "| LLM latency | offered/s | served/s | with the LLM's note/s | shed (503)/s | p50 s | p99 s | CPU (of 500m) | in flight |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "(means over each phase after its first 20 s; p50/p99 medians of the 5 s samples)",
        "",
        f"- CPU HPA (70% of 500m, k8s/base/hpa.yaml): at most **{cpu_peak}** replicas while the "
        "LLM is slow.",
        f"- KEDA (in flight {IN_FLIGHT_TARGET:.0f} per pod = 70% of {BOUND}, one pod more while "
        f"shedding, CPU 70%): up to **{keda_peak}**; the count that absorbs the load at 5 s by "
        f"Little's law ({args.rate:g}/s x 5.05 s / {IN_FLIGHT_TARGET:.0f}) is {target}, reached "
        + (
            f"**{reached:.0f} s** after the step."
            if reached is not None
            else "**never** in the run."
        )
        + " Pods take their start-up time on top (about 10 s to ready here).",
        "",
        "![autoscaling](autoscaling.png)",
        "",
        "| t s | LLM ms | offered | served | LLM notes | shed | p50 s | CPU % | in flight | CPU HPA | KEDA |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, c, k in zip(samples, counts["cpu"], counts["keda"], strict=True):
        lines.append(
            f"| {s.t:.0f} | {s.latency_ms:.0f} | {s.offered:.0f} | {s.served:.0f} "
            f"| {s.llm_notes:.0f} | {s.shed:.0f} "
            f"| {s.p50_ms / 1000:.2f} | {100 * s.cpu_cores / CPU_REQUEST:.0f} | {s.in_flight:.0f} "
            f"| {c} | {k} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--phases", default="60,150,90", help="seconds at 200 ms, 5 s, 200 ms")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    seconds = [float(x) for x in args.phases.split(",")]
    phases = list(zip(seconds, (200.0, 5000.0, 200.0), strict=True))
    samples = measure(args.rate, phases)
    counts = replay(samples)
    text = report(samples, counts, args)
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text)
        plot(samples, counts, args.rate, args.output.with_suffix(".png"))


if __name__ == "__main__":
    main()
