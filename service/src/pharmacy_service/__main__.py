"""`pharmacy-serve`: run the pharmacy-model server on its embedded defaults."""

from __future__ import annotations

import sys

MISSING = """\
The pharmacy-model server is not built yet. What exists today:
  - modelhub-sdk (modelhub.serving.AsyncExecutor): see README.md, "The SDK";
  - `make test` runs its test suite, `make bench` its overhead benchmark.
Still to come: the pharmacy model and its Gemini-compatible stub (issue 3), the server (issue 4).
"""


def main() -> int:
    sys.stderr.write(MISSING)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
