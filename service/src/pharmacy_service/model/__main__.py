"""``python -m pharmacy_service.model``: validate the bundled knowledge base, print its size, and
fail if a rule can never be the one shown for any pair of drugs."""

from __future__ import annotations

import sys

from ..clinical.knowledge import KnowledgeBase, unreachable_rules


def main() -> int:
    knowledge = KnowledgeBase.load()
    names = sum(1 + len(d.brands) + len(d.synonyms) for d in knowledge.drug_file.drugs)
    sys.stdout.write(
        f"drugs {len(knowledge.drugs)} (names {names}), products "
        f"{len(knowledge.drug_file.products)}, classes {len(knowledge.class_file.classes)}, "
        f"rules {len(knowledge.rule_file.rules)}, lexicon variants {len(knowledge.lexicon)}\n"
    )
    never = unreachable_rules(knowledge)
    if never:
        sys.stdout.write(f"rules never shown for any pair ({len(never)}): {', '.join(never)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
