"""Run the saved model in a fresh Python process: ``python -m tests.support.predict_in_process
MODEL`` reads rows as JSON on stdin and writes the predictions as JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def predict_in_fresh_process(
    model: Path, rows: list[dict[str, Any]], env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    environment = {**os.environ, "PHARMACY_LLM_BACKEND": "template", **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.predict_in_process", str(model)],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"predict process failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def main() -> None:
    import mlflow.pyfunc
    import pandas as pd

    rows = json.load(sys.stdin)
    model = mlflow.pyfunc.load_model(sys.argv[1])
    predictions = model.predict(pd.DataFrame(rows)).to_dict("records")
    sys.stdout.write(json.dumps(predictions, sort_keys=True))


if __name__ == "__main__":
    main()
