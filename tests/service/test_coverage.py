"""The coverage table in ``knowledge/README.md``: regenerated from ``knowledge/top300.tsv`` and
the knowledge base, it must be the committed one, and its counts must add up."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from pharmacy_service.clinical import KnowledgeBase, Screener
from pharmacy_service.clinical.coverage import (
    BEGIN,
    BUCKETS,
    END,
    LISTED,
    README,
    Coverage,
    Statement,
    main,
    measure,
    measure_beers,
    measure_combinations,
    measure_statements,
    read_beers,
    read_list,
    read_statements,
    render,
    updated_readme,
)
from pharmacy_service.clinical.knowledge import RuleFile


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
    for group in (
        [s for s in coverage.statements if s.statement.section != "7"],
        [s for s in coverage.statements if s.statement.section == "7"],
    ):
        if group:
            covered = sum(item.covered for item in group)
            assert f"**{covered} of {len(group)} covered**" in section
    statements = coverage.statements
    entries = coverage.beers
    beers = sum(item.covered for item in entries)
    assert f"**{beers} of {len(entries)} pairwise entries covered**" in section
    for item in statements:
        if not item.covered:
            assert item.statement.text in section, item.name


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


def _without(knowledge: KnowledgeBase, *rule_ids: str) -> KnowledgeBase:
    """The knowledge base with these rules taken out (the measure must notice)."""
    rules = [r for r in knowledge.rule_file.rules if r.id not in rule_ids]
    assert len(rules) == len(knowledge.rule_file.rules) - len(rule_ids)
    rule_file = RuleFile(
        version=knowledge.rule_file.version,
        description=knowledge.rule_file.description,
        rules=rules,
    )
    return KnowledgeBase(knowledge.drug_file, knowledge.class_file, rule_file, knowledge.lexicon)


def test_every_listed_drug_has_its_label_statements_recorded() -> None:
    statements = read_statements()
    _, rows = read_list(LISTED)
    assert [(d.rank, d.name) for d in statements.drugs] == rows
    for drug in statements.drugs:
        assert drug.label, drug.name
        for statement in drug.statements:
            if statement.checked is not None:
                assert statement.checked.url.startswith("http"), statement
                assert statement.checked.quote.strip(), statement


def test_a_statement_is_covered_only_by_a_finding_as_severe_as_the_label(
    coverage: Coverage, knowledge: KnowledgeBase
) -> None:
    tamoxifen = [s for s in coverage.statements if s.name == "tamoxifen"]
    assert tamoxifen
    assert all(s.covered for s in tamoxifen)
    without = measure_statements(
        Screener(_without(knowledge, "tamoxifen-vitamin-k-antagonist")), read_statements()
    )
    warfarin = next(
        s for s in without if s.name == "tamoxifen" and "warfarin" in s.statement.partners
    )
    assert not warfarin.covered
    assert next(p.why for p in warfarin.pairs if p.partner == "warfarin") == "no rule"
    weaker = [
        r.model_copy(update={"severity": "major"})
        if r.id == "tamoxifen-vitamin-k-antagonist"
        else r
        for r in knowledge.rule_file.rules
    ]
    rule_file = knowledge.rule_file.model_copy(update={"rules": weaker})
    downgraded = KnowledgeBase(
        knowledge.drug_file, knowledge.class_file, rule_file, knowledge.lexicon
    )
    again = measure_statements(Screener(downgraded), read_statements())
    warfarin = next(
        s for s in again if s.name == "tamoxifen" and "warfarin" in s.statement.partners
    )
    assert not warfarin.covered
    why = next(p.why for p in warfarin.pairs if p.partner == "warfarin")
    assert why == "tamoxifen-vitamin-k-antagonist is major, the label says contraindicated"


def test_a_partner_outside_the_formulary_is_a_gap_by_name(knowledge: KnowledgeBase) -> None:
    statements = read_statements()
    edited = statements.model_copy(
        update={
            "drugs": [
                drug.model_copy(
                    update={
                        "statements": [
                            Statement(
                                section="4",
                                text="Contraindicated with unobtainium.",
                                partners=["unobtainium"],
                                severity="contraindicated",
                            )
                        ]
                    }
                )
                for drug in statements.drugs[:1]
            ]
        }
    )
    (item,) = measure_statements(Screener(knowledge), edited)
    assert not item.covered
    assert item.pairs[0].why == "unobtainium is not in the formulary"


def test_a_statement_below_its_section_must_say_why() -> None:
    with pytest.raises(ValidationError, match="must say why"):
        Statement(section="4", text="Contraindicated with x.", partners=["x"], severity="major")
    with pytest.raises(ValidationError, match="must say why"):
        Statement(section="boxed", text="Boxed: with x.", partners=["x"], severity="moderate")
    Statement(
        section="boxed",
        text="Boxed: with x.",
        partners=["x"],
        severity="moderate",
        rated="the boxed warning concerns doses above replacement",
    )


def test_beers_entries_are_covered_by_rules_that_state_the_age(
    coverage: Coverage, knowledge: KnowledgeBase
) -> None:
    assert coverage.beers
    assert all(entry.covered for entry in coverage.beers)
    for entry in coverage.beers:
        for pair in entry.pairs:
            rule = next(r for r in knowledge.rule_file.rules if r.id == pair.why.split(" ")[0])
            assert rule.min_age == 65, rule.id
            assert "65 and older" in rule.advice, rule.id
            assert "Beers" in rule.source, rule.id
    without = measure_beers(
        Screener(_without(knowledge, "beers-alpha1-blocker-loop-diuretic")), read_beers()
    )
    alpha = next(
        e
        for e in without
        if e.entry.interacting == "Loop diuretics" and "Alpha-1" in e.entry.object
    )
    assert not alpha.covered
    assert {p.why for p in alpha.pairs} == {"no rule"}


def test_the_three_drug_beers_row_is_measured_on_example_lists(
    coverage: Coverage, knowledge: KnowledgeBase
) -> None:
    (row,) = coverage.beers_combinations
    assert row.covered
    beers = read_beers()
    two_only = beers.model_copy(
        update={
            "combinations": [
                beers.combinations[0].model_copy(update={"examples": [["oxycodone", "sertraline"]]})
            ]
        }
    )
    (measured,) = measure_combinations(Screener(knowledge), two_only)
    assert measured.missed == ("oxycodone + sertraline",)


def test_rules_are_counted_by_how_their_source_was_read(
    coverage: Coverage, knowledge: KnowledgeBase
) -> None:
    checked, memory, earlier = coverage.rule_sources
    rules = knowledge.rule_file.rules
    assert checked + memory + earlier == len(rules)
    # "Written from memory ..., not checked against it" is memory, never checked
    assert memory == sum("written from memory" in rule.source.lower() for rule in rules)
    tamoxifen = next(r for r in rules if r.id == "tamoxifen-vitamin-k-antagonist")
    assert "Checked against" in tamoxifen.source
    assert checked >= 1
