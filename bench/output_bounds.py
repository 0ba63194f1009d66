"""The answer's size against the request's: the worst rows a request may carry (issue #24, 3).

Before the bounds, a row could list 200 drugs and the answer gave every interacting pair in full,
twice (the interactions and a template note repeating each finding's text): a 2 KB row answered
1.48 MB. This builds the worst rows from the knowledge base itself (the drugs with the most
interaction partners), screens them through the model's pipeline in this process, and records
the answer's size, the CPU it took and the memory it held.

    python bench/output_bounds.py [--drugs 200] [--rows 40] [--output bench/results/output_bounds.md]

Run it on an older tree with PYTHONPATH=<tree>/service/src to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from itertools import combinations
from typing import Any

from pharmacy_service.clinical.knowledge import KnowledgeBase
from pharmacy_service.model.pipeline import Pipeline, parse_rows


def ranked_drugs(knowledge: KnowledgeBase) -> list[str]:
    """Every generic, the one with the most interaction partners first."""
    generics = sorted(knowledge.drugs)
    partners: dict[str, int] = dict.fromkeys(generics, 0)
    for a, b in combinations(generics, 2):
        if knowledge.best_rule(a, b, frozenset()) is not None:
            partners[a] += 1
            partners[b] += 1
    return sorted(generics, key=lambda g: (-partners[g], g))


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(pipeline: Pipeline, rows: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps({"dataframe_records": rows})
    gc.collect()
    before = rss_mib()
    started = time.process_time()
    try:
        parsed = parse_rows(rows)
        answer = json.dumps({"predictions": asyncio.run(pipeline.run(parsed))})
        outcome = "200"
    except Exception as exc:  # noqa: BLE001 - a refusal (413) is the answer being measured
        answer = json.dumps({"error": str(exc)})
        outcome = f"refused ({type(exc).__name__})"
    cpu = time.process_time() - started
    held = rss_mib() - before
    return {
        "request_bytes": len(body),
        "answer_bytes": len(answer),
        "ratio": len(answer) / len(body),
        "cpu_ms": cpu * 1000,
        "rss_mib": held,
        "outcome": outcome,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drugs", type=int, default=200)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--label", default="this tree")
    args = parser.parse_args()
    knowledge = KnowledgeBase.load()
    pipeline = Pipeline(knowledge)
    ranked = ranked_drugs(knowledge)
    drugs, quiet = ranked[: args.drugs], ranked[-50:]
    cases = [
        (f"1 row x {args.drugs} drugs", [{"patient_id": "p0", "medications": drugs}]),
        ("1 row x 50 drugs", [{"patient_id": "p0", "medications": drugs[:50]}]),
        (
            f"{args.rows} rows x 50 drugs",
            [{"patient_id": f"p{i}", "medications": drugs[:50]} for i in range(args.rows)],
        ),
        (
            f"{args.rows} rows x {args.drugs} drugs",
            [{"patient_id": f"p{i}", "medications": drugs} for i in range(args.rows)],
        ),
        (
            "100 rows x 50 drugs",
            [{"patient_id": f"p{i}", "medications": drugs[:50]} for i in range(100)],
        ),
        (
            "1000 rows x 50 drugs with few interactions",
            [{"patient_id": f"p{i}", "medications": quiet} for i in range(1000)],
        ),
    ]
    print(
        "| tree | request | request bytes | answer bytes | answer / request | CPU ms | RSS held MiB | outcome |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, rows in cases:
        m = measure(pipeline, rows)
        print(
            f"| {args.label} | {name} | {m['request_bytes']:,} | {m['answer_bytes']:,} | "
            f"x{m['ratio']:.0f} | {m['cpu_ms']:.0f} | {m['rss_mib']:.0f} | {m['outcome']} |"
        )


if __name__ == "__main__":
    main()
