"""Trace masking finds a request's strings in their normalised forms (issue #19): compatibility
forms, case folding (``straße`` / ``STRASSE``), composed and decomposed accents, and masks the
whole original place (accents included), ASCII and not."""

from __future__ import annotations

import pytest

from pharmacy_service.model.tracing import MASK, _fold, _Matcher


def _matcher(*hidden: str) -> _Matcher:
    return _Matcher(tuple({_fold(value) for value in hidden}))


@pytest.mark.parametrize(
    ("hidden", "text", "masked"),
    [
        ("straße", "Lives on STRASSE 5", f"Lives on {MASK} 5"),
        ("STRASSE", "straße 5", f"{MASK} 5"),
        (
            "warfarin",
            "takes \uff37\uff41\uff52\uff46\uff41\uff52\uff49\uff4e daily",
            f"takes {MASK} daily",
        ),
        ("José", "Jose\u0301 and JOSÉ", f"{MASK} and {MASK}"),
        ("Jose\u0301", "josé", MASK),
        ("fine", "\ufb01ne print", f"{MASK} print"),
        ("Warfarin", "WARFARIN and warfarin", f"{MASK} and {MASK}"),
    ],
    ids=[
        "sharp s",
        "sharp s the other way",
        "fullwidth",
        "decomposed accent",
        "composed accent",
        "ligature",
        "ascii case",
    ],
)
def test_normalised_forms_are_masked_whole(hidden: str, text: str, masked: str) -> None:
    assert _matcher(hidden).sub(text) == masked


def test_overlapping_places_are_one_mask_and_the_rest_is_kept() -> None:
    assert _matcher("warfarin 5", "5 mg").sub("\uff37arfarin 5 mg nightly") == f"{MASK} nightly"
