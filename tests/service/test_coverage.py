"""The coverage table in ``knowledge/README.md``: regenerated from ``knowledge/top300.tsv`` and
the knowledge base, it must be the committed one, and its counts must add up."""

from __future__ import annotations

from collections import Counter

import pytest

from pharmacy_service.clinical import KnowledgeBase
from pharmacy_service.clinical.coverage import (
    BEGIN,
    BUCKETS,
    END,
    LISTED,
    README,
    Coverage,
    main,
    measure,
    read_list,
    render,
    updated_readme,
)


@pytest.fixture(scope="module")
def coverage(knowledge: KnowledgeBase) -> Coverage:
    return measure(knowledge)


def test_the_committed_readme_has_the_current_table(coverage: Coverage) -> None:
    current = README.read_text(encoding="utf-8")
    assert current.count(BEGIN) == 1
    assert current.count(END) == 1
    assert updated_readme(current, render(coverage)) == current, (
        "knowledge/README.md is not current: run python -m pharmacy_service.clinical.coverage"
    )
    assert main(["--check"]) == 0


def test_the_list_names_its_source_and_has_300_distinct_drugs() -> None:
    source, rows = read_list(LISTED)
    assert "ClinCalc DrugStats Top 300 of 2022" in source
    assert "not checked against the published list" in source.lower()
    assert [rank for rank, _ in rows] == list(range(1, 301))
    names = [name for _, name in rows]
    assert not [name for name, n in Counter(names).items() if n > 1]
    for name in names:
        assert name, name
        assert name == name.strip().lower(), name
        parts = name.split("; ")
        assert parts == sorted(parts), name
        assert len(set(parts)) == len(parts), name


def test_every_listed_drug_is_in_exactly_one_bucket(coverage: Coverage) -> None:
    assert len(coverage.rows) == 300
    assert len({row.name for row in coverage.rows}) == 300
    counts = {bucket: len(coverage.in_bucket(bucket)) for bucket in BUCKETS}
    assert sum(counts.values()) == 300
    for row in coverage.rows:
        assert row.bucket in BUCKETS
        if row.bucket == "formulary":
            assert row.screened, row
            assert not row.not_covered, row
            assert not row.unread, row
        elif row.bucket == "recognised, not covered":
            assert row.not_covered, row
            assert not row.unread, row
        else:
            assert row.unread, row
        if not row.screened:
            assert row.rules == 0, row


def test_the_table_states_the_totals_and_the_gap_by_name(coverage: Coverage) -> None:
    section = render(coverage)
    formulary = len(coverage.in_bucket("formulary"))
    assert f"**{formulary} of 300 in the formulary**" in section
    for row in coverage.rows:
        assert f"| {row.rank} | {row.name} | {row.bucket}" in section
        if row.bucket != "formulary":
            assert f"`{row.name}`" in section.split("| rank |")[0], row.name
    assert "not measured yet" in section


def test_formulary_drugs_are_screened_as_themselves(
    coverage: Coverage, knowledge: KnowledgeBase
) -> None:
    for row in coverage.in_bucket("formulary"):
        assert set(row.screened) <= set(knowledge.drugs), row
    warfarin = next(row for row in coverage.rows if row.name == "warfarin")
    assert warfarin.bucket == "formulary"
    assert warfarin.rules >= 10


def test_updating_keeps_the_rest_of_the_readme() -> None:
    text = "# Title\n\nintro\n"
    first = updated_readme(text, f"{BEGIN}\nold\n{END}")
    assert first.startswith("# Title\n\nintro\n")
    assert first.endswith(f"{END}\n")
    second = updated_readme(first + "\n## After\n", f"{BEGIN}\nnew\n{END}")
    assert "old" not in second
    assert "new" in second
    assert second.endswith("## After\n")
    assert second.startswith("# Title\n\nintro\n")
