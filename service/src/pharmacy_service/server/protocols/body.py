"""Reading a request's body, for every protocol: bounded in size and in time, before the
request is admitted."""

from __future__ import annotations

import asyncio

from fastapi import Request

from ..errors import ServingError
from ..settings import Settings

__all__ = ["read_body"]


async def read_body(request: Request, settings: Settings) -> bytes:
    """The body, read before the request is admitted, so that an upload that stalls holds no
    predict slot: 413 as soon as it is known to be larger than ``max_body_bytes``, 408 when it
    has not all arrived within ``body_read_timeout`` seconds (uvicorn has no such timeout).
    The 408 closes the connection, since the rest of the body may still be on its way."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServingError(413, "PAYLOAD_TOO_LARGE", f"The body is larger than {limit} bytes.")
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_read_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServingError(
                        413, "PAYLOAD_TOO_LARGE", f"The body is larger than {limit} bytes."
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise ServingError(
            408,
            "REQUEST_TIMEOUT",
            f"The request body did not all arrive within {settings.body_read_timeout:g} "
            "seconds; send the request again.",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)
