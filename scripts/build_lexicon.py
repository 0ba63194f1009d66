"""Generate the model's drug-name lexicon from the `drug-named-entity-recognition` package.

    python scripts/build_lexicon.py [OUTPUT]   (`make lexicon`; needs requirements/dev.in)

The package (MIT licence, Fast Data Science Ltd) ships a dictionary of about 107,000 name
variants of about 20,000 drugs, built from DrugBank's open vocabulary and MedlinePlus. The model
uses it only to recognise real drugs that its formulary does not cover, so that they are reported
as "recognised, not covered" and never read as a neighbouring drug. The output is a plain,
deterministic text file (no pickle at run time): one line per drug, `canonical<TAB>variant|...`,
sorted, gzip-compressed with a fixed timestamp so that a rebuild from the same version is
byte-identical.
"""

from __future__ import annotations

import gzip
import io
import sys
from importlib.metadata import version
from pathlib import Path

OUTPUT = (
    Path(__file__).resolve().parents[1]
    / "service/src/pharmacy_service/clinical/knowledge/lexicon.tsv.gz"
)
PACKAGE = "drug-named-entity-recognition"


def main(argv: list[str] | None = None) -> int:
    from drug_named_entity_recognition import drugs_finder

    args = sys.argv[1:] if argv is None else argv
    output = Path(args[0]) if args else OUTPUT
    drugs_finder.reset_drugs_data()
    by_canonical: dict[str, set[str]] = {}
    for variant, canonicals in drugs_finder.drug_variant_to_canonical.items():
        variant = " ".join(variant.lower().split())
        if len(variant) < 3 or "\t" in variant or "|" in variant or len(canonicals) != 1:
            continue
        canonical = " ".join(canonicals[0].lower().split())
        by_canonical.setdefault(canonical, set()).add(variant)
    buffer = io.StringIO()
    buffer.write(
        f"# {PACKAGE} {version(PACKAGE)} (MIT licence, Fast Data Science Ltd): "
        "DrugBank open vocabulary and MedlinePlus names\n"
    )
    for canonical in sorted(by_canonical):
        variants = sorted(by_canonical[canonical] - {canonical})
        buffer.write(canonical + "\t" + "|".join(variants) + "\n")
    with (
        output.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as out,
    ):
        out.write(buffer.getvalue().encode("utf-8"))
    count = sum(len(v) for v in by_canonical.values())
    sys.stdout.write(f"{output.name}: {len(by_canonical)} drugs, {count} variants\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
