"""Screening cost per row: parse, resolve and screen 1, 10 and 30 medication strings as written.

    .venv/bin/python bench/screening.py [--output bench/results/screening.md]

Times ``Screener.screen`` (what every request runs per row, before any note), in one process,
interleaving the list sizes round by round; reports p50 and p99 in microseconds. The lists are
realistic strings with strengths and sigs, brands and combination products; one round also
includes a misspelt name (a typo search) and a name outside the formulary (a lexicon hit).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from pharmacy_service.clinical import KnowledgeBase
from pharmacy_service.clinical.screening import Screener

STRINGS = [
    "warfarin 5 mg PO nightly",
    "Norco 5/325 1 tab q6h prn pain",
    "metoprolol succinate ER 50 mg daily",
    "lisinopril-hydrochlorothiazide 20-12.5 mg",
    "atorvastatin 40mg qhs",
    "sertraline 100 mg daily",
    "omeprazole 20 mg DR qam",
    "Xarelto 20",
    "asa 81",
    "levothyroxine 88 mcg",
    "metformin 1000 mg bid",
    "amlodipine 10 mg",
    "gabapentin 300 mg tid",
    "Vigamox eye drops 1 gtt OU tid",
    "potassium chloride 20 mEq ER daily",
    "furosemide 40 mg",
    "clopidogrel 75 mg",
    "tramadol 50 mg q6h prn",
    "Eliquis 5 mg bid",
    "fluconazole 150 mg once",
    "prednisone 10 mg daily",
    "alprazolam 0.5 mg tid prn anxiety",
    "simvastatin 20 mg",
    "digoxin 0.125 mg",
    "amiodarone 200 mg",
    "insulin glargine 20 units qhs",
    "Zestoretic 20-25",
    "tamsulosin 0.4 mg qhs",
    "cetirizine 10 mg",
    "montelukast 10 mg",
]
HARD = ["warfarn 5 mg", "etodolac 400 mg bid"]  # a typo search and a lexicon hit


def measure(
    screener: Screener, lists: dict[str, list[str]], rounds: int, per_round: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in lists}
    for _ in range(rounds):
        for name, medications in lists.items():
            for _ in range(per_round):
                start = time.perf_counter_ns()
                screener.screen(medications)
                samples[name].append((time.perf_counter_ns() - start) / 1000)
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/screening.md"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=300)
    args = parser.parse_args()
    start = time.perf_counter()
    knowledge = KnowledgeBase.load()
    screener = Screener(knowledge)
    load_seconds = time.perf_counter() - start
    lists = {
        "1 medication": STRINGS[:1],
        "10 medications": STRINGS[:10],
        "30 medications": STRINGS[:30],
        "10 with a typo and an uncovered drug": STRINGS[:8] + HARD,
    }
    measure(screener, lists, 1, 50)  # warm up: the pair memo and the typo cache fill here
    samples = measure(screener, lists, args.rounds, args.per_round)
    cold = Screener(knowledge)
    start = time.perf_counter_ns()
    cold.screen(STRINGS[:8] + HARD)
    cold_us = (time.perf_counter_ns() - start) / 1000
    lines = [
        "# Screening cost per row",
        "",
        f"`bench/screening.py`, {args.rounds} rounds x {args.per_round} calls per list size,"
        " interleaved; one process, warm caches (the pair memo and the typo cache fill on first"
        f" use). Python {platform.python_version()}, {platform.machine()}.",
        f"Knowledge base: {len(knowledge.drugs)} generics, {len(knowledge.rule_file.rules)} rules,"
        f" {len(knowledge.lexicon)} lexicon names; loading it and building the resolver took"
        f" {load_seconds * 1000:.0f} ms.",
        "",
        "| list | p50 µs | p99 µs | median of round medians µs |",
        "|---|---:|---:|---:|",
    ]
    for name, values in samples.items():
        per_round = [
            statistics.median(values[i : i + args.per_round])
            for i in range(0, len(values), args.per_round)
        ]
        lines.append(
            f"| {name} | {percentile(values, 0.5):.0f} | {percentile(values, 0.99):.0f} |"
            f" {statistics.median(per_round):.0f} |"
        )
    lines += [
        "",
        f"Cold (a new resolver: empty pair memo and typo cache), the 10-string list with a typo"
        f" and an uncovered drug: {cold_us:.0f} µs (one typo search over the lexicon).",
        "",
        "Target (issue: the model on real prescriptions): under 1 ms for 10 medications.",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
