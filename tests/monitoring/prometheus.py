"""The real Prometheus binary (Debian's ``prometheus`` package), started on 127.0.0.1 with a
temporary data directory for one test run, and a small client for its HTTP API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from bench.harness import free_port, launched

from tests.deploy.kustomize import prometheus_tool

__all__ = ["RunningPrometheus", "Target", "prometheus_config", "run_prometheus"]


@dataclass(frozen=True)
class Target:
    """A server to scrape, with the labels Kubernetes service discovery would have given it
    (the ServiceMonitor's namespace, pod and relabelled pod-template hash)."""

    address: str
    pod: str
    pod_template_hash: str
    namespace: str = "pharmacy"

    def labels(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "rollouts_pod_template_hash": self.pod_template_hash,
        }


def prometheus_config(targets: list[Target], interval: str) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {
                "job_name": "pharmacy-model",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [t.address], "labels": t.labels()} for t in targets],
            }
        ],
    }


@dataclass
class RunningPrometheus:
    base_url: str
    directory: Path
    interval: str

    def get(self, path: str, **params: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.base_url}{path}", params=params, timeout=10)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    def query(self, promql: str) -> dict[str, Any]:
        """The raw ``/api/v1/query`` answer (what Argo's Prometheus provider reads)."""
        return self.get("/api/v1/query", query=promql)

    def value(self, promql: str) -> float | None:
        """The first series' value, or None when the answer is empty."""
        result = self.query(promql)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (resolved ones are not listed)."""
        alerts: list[dict[str, Any]] = self.get("/api/v1/alerts")["data"]["alerts"]
        return alerts

    def scrape(self, targets: list[Target]) -> None:
        """Scrape these targets from now on (rewrites the config and reloads it), and wait
        until each has been scraped successfully."""
        config = prometheus_config(targets, self.interval)
        (self.directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        httpx.post(f"{self.base_url}/-/reload", timeout=30).raise_for_status()
        wanted = {t.address for t in targets}
        deadline = time.monotonic() + 30
        while True:
            active = self.get("/api/v1/targets")["data"]["activeTargets"]
            up = {t["labels"]["instance"] for t in active if t["health"] == "up"}
            if wanted <= up:
                return
            assert time.monotonic() < deadline, f"targets not up within 30 s: {active}"
            time.sleep(0.2)


@contextmanager
def run_prometheus(
    directory: Path, rule_groups: list[dict[str, Any]], *, interval: str = "1s"
) -> Iterator[RunningPrometheus]:
    """Prometheus on a free 127.0.0.1 port with ``rule_groups``, scraping and evaluating every
    ``interval``; no targets until :meth:`RunningPrometheus.scrape`. Stopped (and its data
    directory left to the caller's temporary directory) when the block exits."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
    (directory / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config([], interval), sort_keys=False)
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        prometheus_tool("prometheus"),
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",  # POST /-/reload
        "--log.level=warn",
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(directory)}
    with launched(command, env, directory / "prometheus.log", f"{base}/-/ready", "prometheus"):
        yield RunningPrometheus(base, directory, interval)
