"""`pharmacy-serve`: run the pharmacy-model server on its embedded defaults."""

from __future__ import annotations

import sys

MISSING = """\
The pharmacy-model HTTP server is not built yet (issue 4). What exists today:
  - modelhub-sdk (modelhub.serving.AsyncExecutor): see README.md, "The SDK";
  - the pharmacy model: `.venv/bin/pharmacy-build-model --output build/pharmacy-model`,
    then `mlflow models serve -m build/pharmacy-model --env-manager local` serves it;
  - the Gemini-compatible stub: `.venv/bin/pharmacy-gemini-stub --port 8090`;
  - `make test` runs the test suite, `make bench` the benchmarks.
"""


def main() -> int:
    sys.stderr.write(MISSING)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
