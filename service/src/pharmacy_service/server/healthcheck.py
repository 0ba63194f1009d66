"""``pharmacy-healthcheck [URL]``: exit 0 when URL answers 2xx within 3 seconds, else 1.

For container health checks without curl in the image. The default URL is this server's
readiness route on ``PORT`` (8080): ``http://127.0.0.1:$PORT/health/ready``.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from .settings import ServerSettings


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    url = args[0] if args else f"http://127.0.0.1:{ServerSettings().port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:  # refused, reset, timed out
        sys.stderr.write(f"pharmacy-healthcheck: {url}: {exc}\n")
        return 1
    if 200 <= status < 300:
        return 0
    sys.stderr.write(f"pharmacy-healthcheck: {url}: HTTP {status}\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
