"""The server's state and its life: load the model at startup (per worker, after gunicorn
forks), drain on SIGTERM, close the model's clients and the executor at shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from modelhub.serving import AsyncExecutor, ExecutorConfig

from ..model import tracing
from ..model.build import MODEL_NAME
from . import metrics
from .handler import ScoringHandler
from .settings import Settings

__all__ = ["ServerState", "lifespan", "load_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """The served model's name and version, as the Open Inference Protocol shows them."""

    name: str
    version: str | None = None
    """The registry's version when served from a registry (``models:/name/3`` or an alias
    resolved at load), else none."""


def model_identity(settings: Settings) -> ModelIdentity:
    """The name and version of ``settings.model_uri`` (the registry is asked for an alias's
    version; if it cannot say, there is no version)."""
    uri = settings.model_uri
    name, version = MODEL_NAME, None
    if uri.startswith("models:/"):
        rest = uri.removeprefix("models:/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            try:
                from mlflow import MlflowClient

                version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
            except Exception:
                logger.warning("model_version_unknown alias=%s", alias, exc_info=True)
        else:
            name, _, version_part = rest.partition("/")
            version = version_part if version_part.isdigit() else None
    return ModelIdentity(settings.model_name or name, version)


class ServerState:
    """What the routes need (``request.app.state.server``): the handler once the model is
    loaded, the executor, the model's description, and whether this worker is draining."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.handler: ScoringHandler | None = None
        self.executor: AsyncExecutor | None = None
        self.model_info: dict[str, Any] = {"uri": settings.model_uri}
        self.model_identity = ModelIdentity(settings.model_name or MODEL_NAME)
        self.draining = False
        self.load_error: str | None = None
        self.executor_metrics = metrics.ExecutorMetrics()


def load_model(settings: Settings) -> Any:
    import mlflow.pyfunc

    config: dict[str, Any] = {
        "llm_backend": settings.llm_backend,
        "llm_strict": settings.llm_strict,
        "inject_loop_errors": settings.fault_loop_errors,
        "inject_loop_block": settings.fault_block_loop_seconds,
    }
    return mlflow.pyfunc.load_model(settings.model_uri, model_config=config)


def lifespan(state: ServerState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: start the executor, load the model, serve, then close both."""

    @asynccontextmanager
    async def serve(app: FastAPI) -> AsyncIterator[None]:
        settings = state.settings
        executor = AsyncExecutor(ExecutorConfig.from_env(), hooks=state.executor_metrics)
        AsyncExecutor.set_default(executor)  # what the model's predict uses via run_async
        state.executor = executor
        drain_on_sigterm(state)
        try:
            model = await asyncio.to_thread(load_model, settings)
        except Exception as exc:
            state.load_error = f"{type(exc).__name__}: {exc}"
            logger.exception(
                "model_load_failed uri=%s", settings.model_uri, extra={"event": "model_load_failed"}
            )
            raise
        python_model = model.unwrap_python_model()
        pipeline = getattr(python_model, "pipeline", None)
        if pipeline is not None:
            pipeline.observer = metrics.LLMMetrics()
        state.handler = handler = ScoringHandler(model, settings, executor)
        state.model_identity = await asyncio.to_thread(model_identity, settings)
        meta = model.metadata
        state.model_info = {
            "uri": settings.model_uri,
            "model_uuid": getattr(meta, "model_uuid", None),
            "run_id": getattr(meta, "run_id", None),
            "mlflow_version": getattr(meta, "mlflow_version", None),
            "llm_backend": settings.llm_backend,
            "predict": "apredict on the executor loop"
            if handler.uses_apredict
            else "predict in a thread pool",
        }
        logger.info(
            "model_loaded uri=%s predict=%s",
            settings.model_uri,
            state.model_info["predict"],
            extra={"event": "model_loaded"},
        )
        try:
            yield
        finally:
            state.draining = True
            handler.close()
            aclose = getattr(python_model, "aclose", None)
            if aclose is not None:
                try:  # the LLM client's connections live on the executor's loop: close there
                    await executor.arun(aclose, timeout=5)
                except Exception:
                    logger.warning("closing the model's LLM client failed", exc_info=True)
            AsyncExecutor.shutdown()
            await flush_traces()

    return serve


async def flush_traces(seconds: float = 5.0) -> None:
    """Export the traces still queued, for at most ``seconds`` (the tracking server may be
    gone); what is left then is lost, and said so."""
    if not tracing.enabled():
        return
    try:
        await asyncio.wait_for(asyncio.to_thread(tracing.flush), seconds)
    except Exception:
        logger.warning(
            "traces_not_flushed: the tracking store did not take the last traces in %.0f s",
            seconds,
            exc_info=True,
            extra={"event": "traces_not_flushed"},
        )


def drain_on_sigterm(state: ServerState) -> None:
    """On SIGTERM: readiness turns 503, the worker stops accepting connections (the other
    workers, or pods, take the new ones), and every answer carries ``Connection: close`` so that
    clients leave the connections they have; ``drain_delay`` seconds later the server's own
    handler (uvicorn's) finishes what is in flight and exits. Closing a connection at the moment
    its client sends a request is what loses requests on restarts; this leaves none to close.
    The worker recycles (``MAX_REQUESTS``) through the same path."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # not the main thread (in-process tests): nothing to chain
        return
    loop = asyncio.get_running_loop()
    delay = state.settings.drain_delay

    def on_sigterm(signum: int, frame: Any) -> None:
        again = state.draining
        state.draining = True
        metrics.DRAINING.set(1)
        if not callable(previous):
            return
        if again or delay <= 0:  # a second SIGTERM: stop now
            previous(signum, frame)
            return
        logger.info(
            "draining: readiness is now 503, no new connections, answers close theirs; "
            "stopping in %.1f s",
            delay,
            extra={"event": "draining"},
        )
        loop.call_soon_threadsafe(_stop_accepting, previous)
        loop.call_soon_threadsafe(loop.call_later, delay, previous, signum, frame)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:
        return


def _stop_accepting(handle_exit: Any) -> None:
    """Close this worker's listening servers; the socket stays open in gunicorn's other
    processes. ``handle_exit`` is uvicorn's ``Server.handle_exit``; its server lists them."""
    for listener in getattr(getattr(handle_exit, "__self__", None), "servers", None) or []:
        listener.close()
