"""What the routes depend on: the server's state, the scoring handler, the bearer token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from ..errors import ServingError
from ..handler import ScoringHandler
from ..lifecycle import ServerState

__all__ = ["Scorer", "State", "authorize", "scoring_handler", "server_state"]


async def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(server_state)]


# The dependencies are async on purpose: FastAPI runs a sync dependency in its thread pool,
# a thread hop (and up to 40 threads) per request for a few microseconds of work.


async def scoring_handler(state: State) -> ScoringHandler:
    """The handler, or 503 while there is none. While draining, requests that still arrive
    are answered (with Connection: close): refusing them would lose work this worker can do."""
    if state.handler is None:
        raise ServingError(
            503,
            "NOT_READY",
            "The model is not loaded (starting, or it failed to load).",
            headers={"Retry-After": "1"},
        )
    return state.handler


Scorer = Annotated[ScoringHandler, Depends(scoring_handler)]


async def authorize(request: Request, state: State) -> None:
    """``Authorization: Bearer <PHARMACY_API_TOKEN>`` when a token is configured."""
    token = state.settings.api_token
    if token is None:
        return
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode(), expected
    ):
        raise ServingError(
            401,
            "UNAUTHORIZED",
            "A valid bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
