"""The bundled lexicon is exactly what scripts/build_lexicon.py makes from the pinned package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pharmacy_service.clinical.knowledge import BUNDLED, load_lexicon

ROOT = Path(__file__).resolve().parents[2]


def test_the_lexicon_is_reproducible_from_the_pinned_package(tmp_path: Path) -> None:
    output = tmp_path / "lexicon.tsv.gz"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_lexicon.py"), str(output)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert output.read_bytes() == BUNDLED.lexicon.read_bytes()


def test_the_lexicon_maps_variants_to_real_drugs() -> None:
    lexicon = load_lexicon(BUNDLED.lexicon)
    assert lexicon["coumadin"] == "warfarin"
    assert lexicon["etodolac"] == "etodolac"
    assert lexicon["zestoretic"] == "lisinopril/hydrochlorothiazide"
    assert all(len(name) >= 3 for name in lexicon)
