"""Real HTTP servers on 127.0.0.1 for tests, each on its own event loop in its own thread.

Connections are counted at the protocol factory, so a test can see whether a client reused its
keep-alive connections or opened one per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ServerStats:
    connections: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class RunningServer:
    base_url: str
    stats: ServerStats


STATS = web.AppKey("stats", ServerStats)


@contextmanager
def serve_app(app: web.Application) -> Iterator[RunningServer]:
    """Serve ``app`` on a free 127.0.0.1 port until the block exits."""
    stats = ServerStats()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        protocol_factory = runner.server
        assert protocol_factory is not None

        def counting_factory() -> asyncio.BaseProtocol:
            with stats.lock:
                stats.connections += 1
            return protocol_factory()

        server = await loop.create_server(counting_factory, "127.0.0.1", 0)
        state["runner"], state["server"] = runner, server
        state["port"] = server.sockets[0].getsockname()[1]

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    app[STATS] = stats
    thread = threading.Thread(target=main, name="test-http-server", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield RunningServer(f"http://127.0.0.1:{state['port']}", stats)
    finally:

        async def stop() -> None:
            state["server"].close()
            await state["runner"].cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def echo_app(delay: float = 0.0) -> web.Application:
    """``GET /echo?value=...`` answers ``{"value": ...}`` after ``delay`` seconds."""

    async def echo(request: web.Request) -> web.Response:
        stats = request.app[STATS]
        with stats.lock:
            stats.requests += 1
        if delay:
            await asyncio.sleep(delay)
        return web.json_response({"value": request.query.get("value", "")})

    app = web.Application()
    app.router.add_get("/echo", echo)
    return app
