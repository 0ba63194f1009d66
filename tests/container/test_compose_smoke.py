"""The container smoke test: the real image, built and run by docker compose (`make compose-smoke`),
with the profile `monitoring` (Prometheus scraping the server with the alert rules).

Needs a Docker engine: `scripts/with-docker.sh` provides one (and the base image) on machines
that have none running. Not part of `make test`; CI runs it through `make compose-smoke`.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.deploy.kustomize import rule_groups
from tests.support.compose import RETRY_TAIL, ROOT, WARFARIN_ADVIL, compose_command
from tests.support.gunicorn import free_port

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

PROJECT = "pharmacy-smoke"
API_KEY = "AIzaSmoke" + secrets.token_hex(16)


@dataclass
class Stack:
    base: str
    stub: str
    env: dict[str, str]
    prometheus: str = ""

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose_command(), "-p", PROJECT, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=900,
        )

    def container_id(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str) -> dict[str, Any]:
        out = subprocess.run(
            ["docker", "inspect", self.container_id(service)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        result: dict[str, Any] = json.loads(out)[0]
        return result

    def log_lines(self, service: str) -> list[str]:
        out = self.compose("logs", "--no-color", "--no-log-prefix", service).stdout
        return [line for line in out.splitlines() if line.strip()]


def timed(label: str, started: float) -> None:
    sys.stderr.write(f"[compose-smoke] {label}: {time.monotonic() - started:.1f} s\n")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    port, stub_port, prometheus_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "COMPOSE_PROFILES": "monitoring",  # every compose command: up, logs, down -v
        "PROMETHEUS_PORT": str(prometheus_port),
        # A key in the environment of the build and of the server: it must end up in no image
        # layer, no log line and no answer (the stub ignores it).
        "GEMINI_API_KEY": API_KEY,
        "PHARMACY_PORT": str(port),
        "STUB_PORT": str(stub_port),
        "STUB_LATENCY_MS": "50",
        # Each worker's first prediction fails once with "Event loop is closed": the SDK retries.
        "PHARMACY_FAULT_LOOP_ERRORS": "1",
    }
    running = Stack(
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{stub_port}",
        env,
        f"http://127.0.0.1:{prometheus_port}",
    )
    started = time.monotonic()
    running.compose("config", "-q")
    running.compose("build")
    timed("compose build", started)
    started = time.monotonic()
    try:
        up = running.compose("up", "-d", "--wait", "--wait-timeout", "180", check=False)
        timed("compose up --wait (healthy)", started)
        assert up.returncode == 0, (
            f"compose up failed:\n{up.stderr}\n{running.compose('logs').stdout}"
        )
        yield running
    finally:
        logs = running.compose("logs", "--no-color", check=False).stdout
        sys.stderr.write(f"[compose-smoke] last log lines:\n{logs[-3000:]}\n")
        started = time.monotonic()
        running.compose("down", "-v", "-t", "5", check=False)
        timed("compose down -v", started)


def test_ready_and_both_services_healthy(stack: Stack) -> None:
    ready = httpx.get(f"{stack.base}/health/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    for service in ("pharmacy-model", "gemini-stub", "prometheus"):
        state = stack.inspect(service)["State"]
        assert state["Health"]["Status"] == "healthy", (service, state["Health"])


def test_invocations_answers_through_the_stub(stack: Stack) -> None:
    httpx.post(f"{stack.stub}/stats/reset", timeout=10).raise_for_status()
    payload = {
        "dataframe_split": {
            "columns": ["patient_id", "medications"],
            "data": [
                ["p1", ["Coumadin", "Advil"]],
                ["p2", "Zoloft, tramadol"],
                ["p3", ["Tylenol"]],
            ],
        }
    }
    response = httpx.post(f"{stack.base}/invocations", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [row["patient_id"] for row in rows] == ["p1", "p2", "p3"]
    pairs = [{(i["drug_a"], i["drug_b"]) for i in row["interactions"]} for row in rows]
    assert pairs[0] == {("warfarin", "ibuprofen")}
    assert pairs[1] == {("sertraline", "tramadol")}
    assert pairs[2] == set()
    assert {row["note_source"] for row in rows} == {"llm"}, rows
    stats = httpx.get(f"{stack.stub}/stats", timeout=10).json()
    assert stats["responses"].get("200", 0) >= 3, stats  # the real SDK really called the stub


def test_screen_answers_and_echoes_the_request_id(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.base}/v1/screen",
        json={"patients": [WARFARIN_ADVIL]},
        headers={"X-Request-ID": "smoke-screen-1"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "smoke-screen-1"
    (result,) = response.json()["results"]
    assert result["highest_severity"] == "major"
    assert result["medications_normalized"] == ["warfarin", "ibuprofen"]


def test_bad_input_is_a_4xx_with_a_json_body(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.base}/invocations",
        content=b'{"dataframe_split": ',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "BAD_REQUEST", response.text


def test_runs_as_non_root_on_a_read_only_root_filesystem(stack: Stack) -> None:
    for service in ("pharmacy-model", "gemini-stub"):
        info = stack.inspect(service)
        config, host = info["Config"], info["HostConfig"]
        assert config["User"] == "10001:10001", service
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"], service
    uid = stack.compose("exec", "-T", "pharmacy-model", "id", "-u").stdout.strip()
    assert uid == "10001"
    write = stack.compose(
        "exec", "-T", "pharmacy-model", "sh", "-c", "touch /opt/venv/x", check=False
    )
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr, write.stderr
    scratch = stack.compose("exec", "-T", "pharmacy-model", "sh", "-c", "touch /tmp/x", check=False)
    assert scratch.returncode == 0, scratch.stderr


def test_metrics_are_exported(stack: Stack) -> None:
    httpx.post(f"{stack.base}/v1/screen", json={"patients": [WARFARIN_ADVIL]}, timeout=60)
    text = httpx.get(f"{stack.base}/metrics", timeout=10).text
    assert 'pharmacy_http_requests_total{method="POST",route="/v1/screen",status="200"}' in text
    assert "modelhub_executor_retries_total" in text  # the injected loop errors
    assert 'pharmacy_llm_calls_total{backend="gemini"' in text


def test_logs_are_json_lines_and_retries_carry_the_request_id(stack: Stack) -> None:
    request_ids = [f"smoke-retry-{n}" for n in range(6)]
    for request_id in request_ids:  # sequential: spreads over both workers in practice
        response = httpx.post(
            f"{stack.base}/v1/screen",
            json={"patients": [WARFARIN_ADVIL]},
            headers={"X-Request-ID": request_id},
            timeout=60,
        )
        assert response.status_code == 200, response.text
    # The access line is written as the answer leaves: the last one can reach the container's
    # log a moment after the client has its answer.
    deadline = time.monotonic() + 15
    while True:
        lines = stack.log_lines("pharmacy-model")
        if all(f'"request_id": "{r}"' in "".join(lines) for r in request_ids):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    retries = [r for r in records if r.get("event") == "async_retry"]
    # One injected loop error per worker that served a prediction (2 workers), each retried once.
    assert 1 <= len(retries) <= 2, retries
    assert all(r["level"] == "WARNING" and r["request_id"] for r in retries), retries
    logged = {r.get("request_id") for r in records if r.get("event") == "request"}
    assert set(request_ids) <= logged


def test_the_retry_tail_one_liner_shows_each_retry(stack: Stack) -> None:
    """The README's one-liner on the real compose logs (without -f, so that it ends)."""
    command, jq = RETRY_TAIL.split(" | ", 1)
    assert command == "docker compose logs -f --no-log-prefix pharmacy-model"
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "pharmacy-model").stdout
    rows = subprocess.run(
        ["bash", "-c", jq], input=logs, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    retries = [json.loads(line) for line in logs.splitlines() if '"async_retry"' in line]
    assert rows, logs[-2000:]
    assert len(rows) == len(retries)
    for row, record in zip(rows, retries, strict=True):
        assert row.split("\t") == [
            record["time"],
            str(record["process"]),
            record["function"],
            f"attempt {record['attempt']}/{record['max_attempts']}",
            record["request_id"],
        ]
        assert record["request_id"]


def test_prometheus_scrapes_the_server_with_the_alert_rules(stack: Stack) -> None:
    """The monitoring profile: the target is up, the Kubernetes alert rules are loaded, the
    retries the fault injected are in Prometheus, and the UI answers on 127.0.0.1."""
    prometheus = stack.inspect("prometheus")
    assert prometheus["State"]["Health"]["Status"] == "healthy", prometheus["State"]
    assert prometheus["Config"]["User"] == "10001:10001"
    assert prometheus["HostConfig"]["ReadonlyRootfs"] is True
    with httpx.Client(base_url=stack.prometheus, timeout=10) as api:
        groups = api.get("/api/v1/rules").json()["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        expected = [r for g in rule_groups() for r in g["rules"]]
        alerts = {r["name"] for r in loaded if r["type"] == "alerting"}
        assert alerts == {r["alert"] for r in expected if "alert" in r}
        recorded = {r["name"] for r in loaded if r["type"] == "recording"}
        assert recorded == {r["record"] for r in expected if "record" in r}  # in-flight per pod
        assert {r["health"] for r in loaded} <= {"ok", "unknown"}  # unknown until first evaluated
        deadline = time.monotonic() + 90  # scraped every 15 s
        while True:
            targets = api.get("/api/v1/targets").json()["data"]["activeTargets"]
            up = [
                t for t in targets if t["labels"]["job"] == "pharmacy-model" and t["health"] == "up"
            ]
            answer = api.get("/api/v1/query", params={"query": "modelhub_executor_retries_total"})
            series = answer.json()["data"]["result"]
            if up and series:
                break
            assert time.monotonic() < deadline, (targets, series)
            time.sleep(2)
        assert up[0]["labels"]["pod"] == "pharmacy-model"
        assert {s["metric"]["reason"] for s in series} == {"loop_closed"}
        # Debian's build serves the classic UI under /classic (/ redirects to its graph page)
        for page in ("/", "/classic/alerts", "/classic/targets", "/classic/rules"):
            answer = api.get(page, follow_redirects=True)
            assert answer.status_code == 200, (page, answer.text[:500])
            assert "Prometheus" in answer.text, page


def test_no_secret_in_the_image_logs_or_answers(stack: Stack) -> None:
    container = stack.inspect("pharmacy-model")
    env = dict(e.split("=", 1) for e in container["Config"]["Env"])
    assert env["GEMINI_API_KEY"] == API_KEY  # given at run time, so the checks below can fail
    image = container["Config"]["Image"]
    image_env = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{json .Config.Env}}", image],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "GEMINI_API_KEY" not in image_env
    history = subprocess.run(
        ["docker", "history", "--no-trunc", image],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert API_KEY not in history
    # Every file of every layer (docker save), searched for the key's value.
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=600)
    needle = API_KEY.encode()
    files = 0
    with tarfile.open(fileobj=io.BytesIO(saved.stdout)) as outer:
        for member in outer:
            blob = outer.extractfile(member) if member.isfile() else None
            if blob is None:
                continue
            data = blob.read()
            assert needle not in data, member.name
            if data[257:262] == b"ustar":  # a layer: look inside it too
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for item in layer:
                        inner = layer.extractfile(item) if item.isfile() else None
                        if inner is not None:
                            files += 1
                            assert needle not in inner.read(), item.name
    assert files > 1000  # the layers were really read
    httpx.post(f"{stack.base}/v1/screen", json={"patients": [WARFARIN_ADVIL]}, timeout=60)
    for path in ("/version", "/metrics", "/health/ready", "/openapi.json"):
        assert API_KEY not in httpx.get(f"{stack.base}{path}", timeout=10).text, path
    assert not [line for line in stack.log_lines("pharmacy-model") if API_KEY in line]


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_one_request_per_llm_backend(stack: Stack, backend: str) -> None:
    """The server recreated with another backend: the real SDK in the image, through the
    stub's wire format for it (runs last: it replaces the gemini server the tests above use)."""
    env = {**stack.env, "PHARMACY_LLM_BACKEND": backend}
    recreated = Stack(stack.base, stack.stub, env)
    up = recreated.compose(
        "up", "-d", "--wait", "--wait-timeout", "180", "--no-deps", "pharmacy-model", check=False
    )
    assert up.returncode == 0, f"{up.stderr}\n{recreated.compose('logs').stdout[-3000:]}"
    before = httpx.get(f"{stack.stub}/stats", timeout=10).json()["apis"].get(backend, 0)
    response = httpx.post(
        f"{stack.base}/v1/screen", json={"patients": [WARFARIN_ADVIL]}, timeout=60
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert (result["backend"], result["note_source"]) == (backend, "llm"), result
    assert result["highest_severity"] == "major"
    after = httpx.get(f"{stack.stub}/stats", timeout=10).json()["apis"].get(backend, 0)
    assert after >= before + 1
