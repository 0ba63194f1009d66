"""``pharmacy-gemini-stub``: an LLM server for tests, benchmarks and docker compose that speaks the
three wire formats the model's backends use, with configurable latency and fault injection.

It answers, over HTTP/1.1 keep-alive with ``Content-Length``, in the shapes the official SDKs
parse: Gemini's ``POST /{version}/models/{model}:generateContent`` (google-genai), OpenAI's
``POST /v1/chat/completions`` (openai; also without ``/v1``, for any OpenAI-compatible client)
and Anthropic's ``POST /v1/messages`` (anthropic). Errors use each provider's error body, so
each SDK raises its own exception types. The answer is derived from the prompt: when
the prompt has a ``Summary:`` line and facts (the pharmacy model's prompts do), the note repeats
the summary and each finding's effect and advice, as a faithful LLM note would.

Faults, drawn per request with probability ``fault_rate`` from the enabled ``faults``:
``429``/``500``/``503`` (a Gemini error body), ``slow`` (answers after ``slow_seconds``, past
any sensible client timeout) and ``reset`` (the TCP connection is reset, no answer).

``GET /stats`` reports requests, connections accepted, answers by status and faults injected;
``POST /stats/reset`` zeroes them; ``POST /config`` changes latency and faults at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from aiohttp import web

from .wire import ANTHROPIC, GEMINI, OPENAI, NotSupportedError, WireFormat

__all__ = ["FAULT_KINDS", "StubConfig", "StubServer", "main", "run_in_thread"]

logger = logging.getLogger(__name__)

FAULT_KINDS = ("429", "500", "503", "slow", "reset")


@dataclass(frozen=True)
class StubConfig:
    latency_ms: float = 0.0
    """Delay before every answer, in milliseconds."""
    fault_rate: float = 0.0
    """Fraction of requests (0..1) that get a fault instead of an answer."""
    faults: tuple[str, ...] = FAULT_KINDS
    """Which faults to draw from."""
    slow_seconds: float = 30.0
    """How long a ``slow`` fault waits before answering."""
    seed: int | None = None
    """Seed for the fault draws (reproducible runs)."""
    echo_api_key: bool = False
    """Error answers quote the API key the request carried, as a careless upstream might: for
    tests that the server never logs or returns it."""
    echo_prompt: bool = False
    """Error answers quote the prompt they were sent, as an upstream's validation error can:
    for tests that the patient data in it reaches neither the logs nor the traces."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, not {self.fault_rate}")
        if self.latency_ms < 0 or self.slow_seconds < 0:
            raise ValueError("latency_ms and slow_seconds must not be negative")
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown or not self.faults:
            raise ValueError(f"faults must be a non-empty subset of {', '.join(FAULT_KINDS)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: StubConfig | None = None) -> StubConfig:
        base = base or cls()
        faults = values.get("faults", base.faults)
        if isinstance(faults, str):
            faults = tuple(f.strip() for f in faults.split(",") if f.strip())
        return replace(
            base,
            latency_ms=float(values.get("latency_ms", base.latency_ms)),
            fault_rate=float(values.get("fault_rate", base.fault_rate)),
            faults=tuple(faults),
            slow_seconds=float(values.get("slow_seconds", base.slow_seconds)),
            seed=values.get("seed", base.seed),
            echo_api_key=str(values.get("echo_api_key", base.echo_api_key)).lower()
            in ("1", "true", "yes"),
            echo_prompt=str(values.get("echo_prompt", base.echo_prompt)).lower()
            in ("1", "true", "yes"),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StubConfig:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key, variable in (
            ("latency_ms", "STUB_LATENCY_MS"),
            ("fault_rate", "STUB_FAULT_RATE"),
            ("faults", "STUB_FAULTS"),
            ("slow_seconds", "STUB_SLOW_SECONDS"),
            ("echo_api_key", "STUB_ECHO_API_KEY"),
            ("echo_prompt", "STUB_ECHO_PROMPT"),
        ):
            if env.get(variable):
                values[key] = env[variable]
        if env.get("STUB_SEED"):
            values["seed"] = int(env["STUB_SEED"])
        return cls.from_mapping(values)


@dataclass
class StubStats:
    requests: int = 0
    connections: int = 0
    in_flight: int = 0
    responses: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    apis: Counter[str] = field(default_factory=Counter)
    """Requests by wire format: ``gemini``, ``openai``, ``anthropic``."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "apis": dict(self.apis),
            "connections": self.connections,
            "in_flight": self.in_flight,
            "responses": dict(self.responses),
            "faults": dict(self.faults),
        }


class StubServer:
    """The stub's state and handlers; :meth:`start` serves it on a host and port."""

    def __init__(self, config: StubConfig | None = None) -> None:
        self.config = config or StubConfig()
        self.stats = StubStats()
        self._random = random.Random(self.config.seed)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None

    @property
    def open_connections(self) -> int:
        """Connections open now (a snapshot; readable from another thread): a client that
        leaves its session unclosed leaves its keep-alive connections here."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/{version}/models/{model}", self._generate)
        for path in (
            "/v1/chat/completions",
            "/chat/completions",
        ):  # with or without /v1 in the base URL
            app.router.add_post(path, self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/stats", self._get_stats)
        app.router.add_post("/stats/reset", self._reset_stats)
        app.router.add_get("/config", self._get_config)
        app.router.add_post("/config", self._set_config)
        app.router.add_get("/health", self._health)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0 picks a free port); returns the port."""
        # In-flight answers (a 30 s "slow" fault) get 1 s to finish when the stub stops.
        self._runner = web.AppRunner(
            self.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        protocol_factory = self._runner.server
        assert protocol_factory is not None

        def counting_factory() -> asyncio.BaseProtocol:
            self.stats.connections += 1  # runs on the loop: no lock needed
            return protocol_factory()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(counting_factory, host, port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _draw_fault(self) -> str | None:
        config = self.config
        if config.fault_rate and self._random.random() < config.fault_rate:
            return self._random.choice(config.faults)
        return None

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, GEMINI)

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, OPENAI)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, ANTHROPIC)

    async def _serve(self, request: web.Request, api: WireFormat) -> web.StreamResponse:
        self.stats.requests += 1
        self.stats.apis[api.name] += 1
        self.stats.in_flight += 1
        try:
            return await self._answer(request, api)
        finally:
            self.stats.in_flight -= 1

    async def _answer(self, request: web.Request, api: WireFormat) -> web.StreamResponse:
        try:
            prompt, model = api.parse(request, await request.json())
        except NotSupportedError as exc:
            return self._error(api, 404, str(exc))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return self._error(api, 400, f"invalid {api.name} request: {exc}")
        fault = self._draw_fault()
        if fault is not None:
            self.stats.faults[fault] += 1
        if fault == "reset":
            self._reset(request)
            self.stats.responses["reset"] += 1
            return web.Response(status=500)  # never sent: the connection is gone
        delay = self.config.slow_seconds if fault == "slow" else self.config.latency_ms / 1000
        if delay:
            await asyncio.sleep(delay)
        if fault in ("429", "500", "503"):
            key = api.api_key(request)
            echo = f" (API key {key})" if self.config.echo_api_key and key else ""
            if self.config.echo_prompt:
                echo += f" for the prompt: {prompt}"
            return self._error(api, int(fault), f"injected fault {fault}{echo}")
        text = answer_for(prompt, model)
        self.stats.responses["200"] += 1
        return web.json_response(api.success(text, prompt, model))

    def _error(self, api: WireFormat, status: int, message: str) -> web.Response:
        self.stats.responses[str(status)] += 1
        return web.json_response(api.error(status, message), status=status)

    @staticmethod
    def _reset(request: web.Request) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0), as a crashed upstream would."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _reset_stats(self, request: web.Request) -> web.Response:
        self.stats = StubStats()
        return web.json_response(self.stats.as_dict())

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.config))

    async def _set_config(self, request: web.Request) -> web.Response:
        try:
            values = await request.json()
            if not isinstance(values, dict):
                raise TypeError("the body must be a JSON object")
            self.config = StubConfig.from_mapping(values, self.config)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if "seed" in values:
            self._random = random.Random(self.config.seed)
        return web.json_response(asdict(self.config))

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def answer_for(prompt: str, model: str) -> str:
    """The deterministic answer for a prompt. For the pharmacy model's prompts (a ``Summary:``
    line, then the facts as JSON) it is a faithful note: the summary, then each finding's own
    effect and advice, as a careful LLM would write it."""
    lines = prompt.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("Summary:"):
            summary = line.removeprefix("Summary:").strip()
            parts = [f"Counselling note: {summary}."]
            facts = lines[n + 2] if len(lines) > n + 2 else ""
            with suppress(ValueError, AttributeError, TypeError, KeyError):
                for finding in json.loads(facts).get("findings", []):
                    parts.append(
                        f"{finding['drug_a']} with {finding['drug_b']}: "
                        f"{finding['clinical_effect']} {finding['advice']}"
                    )
            parts.append("Please talk to your pharmacist before you change or stop any medicine.")
            return " ".join(parts)
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return f"Stub answer {digest} from {model}."


@contextmanager
def run_in_thread(
    config: StubConfig | None = None, host: str = "127.0.0.1"
) -> Iterator[StubServer]:
    """Run a stub on its own loop in a daemon thread until the block exits (for tests)."""
    stub = StubServer(config)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(stub.start(host))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="gemini-stub", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        loop.close()
        raise failure[0]

    async def shutdown() -> None:
        await stub.stop()
        # Answers still sleeping (slow faults) are cancelled, not left pending on a closed loop.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    try:
        yield stub
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


async def _serve_forever(stub: StubServer, host: str, port: int) -> None:
    await stub.start(host, port)
    logger.info("gemini stub listening on http://%s:%s (%s)", host, stub.port, stub.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await stub.stop()


def main(argv: Sequence[str] | None = None) -> int:
    env = StubConfig.from_env()
    parser = argparse.ArgumentParser(
        prog="pharmacy-gemini-stub", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default=os.environ.get("STUB_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUB_PORT", "8090")))
    parser.add_argument("--latency-ms", type=float, default=env.latency_ms)
    parser.add_argument("--fault-rate", type=float, default=env.fault_rate)
    parser.add_argument(
        "--faults", default=",".join(env.faults), help=f"subset of {','.join(FAULT_KINDS)}"
    )
    parser.add_argument("--slow-seconds", type=float, default=env.slow_seconds)
    parser.add_argument("--seed", type=int, default=env.seed)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = StubConfig.from_mapping(
            {
                "latency_ms": args.latency_ms,
                "fault_rate": args.fault_rate,
                "faults": args.faults,
                "slow_seconds": args.slow_seconds,
                "seed": args.seed,
            },
            base=env,  # keeps what only the environment sets (STUB_ECHO_API_KEY, STUB_ECHO_PROMPT)
        )
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(_serve_forever(StubServer(config), args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
