"""Masking (``model/masking.py``, issue #19): a request's hidden strings are found in their
normalised forms (compatibility forms, case folding such as ``straße`` / ``STRASSE``, composed and
decomposed accents, format characters) and the whole original place is masked, accents included,
ASCII and not; overlapping places are one mask; the rest of the text is kept as written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy_service.model.masking import (
    EVERYTHING,
    MASK,
    MAX_MASKED_VALUES,
    HiddenValues,
    Matcher,
    normalise,
    normalised,
)


def _matcher(*hidden: str) -> Matcher:
    return Matcher(normalised(hidden))


@pytest.mark.parametrize(
    ("hidden", "text", "masked"),
    [
        pytest.param("straße", "Lives on STRASSE 5", f"Lives on {MASK} 5", id="sharp s"),
        pytest.param("STRASSE", "straße 5", f"{MASK} 5", id="sharp s the other way"),
        pytest.param(
            "warfarin",
            "takes \uff37\uff41\uff52\uff46\uff41\uff52\uff49\uff4e daily",
            f"takes {MASK} daily",
            id="fullwidth letters",
        ),
        pytest.param(
            "\uff37\uff41\uff52\uff46\uff41\uff52\uff49\uff4e",
            "takes WARFARIN daily",
            f"takes {MASK} daily",
            id="fullwidth hidden, plain written",
        ),
        pytest.param("José", "Jose\u0301 and JOSÉ", f"{MASK} and {MASK}", id="decomposed accent"),
        pytest.param("Jose\u0301", "josé", MASK, id="composed accent"),
        pytest.param("Jose", "José", MASK, id="the accent is masked with its letter"),
        pytest.param("fine", "\ufb01ne print", f"{MASK} print", id="ligature"),
        pytest.param("\ufb01ne", "FINE print", f"{MASK} print", id="ligature hidden"),
        pytest.param("ibuprofen", "\u0130BUPROFEN", MASK, id="capital I with dot"),
        pytest.param("warfarin", "war\u00adfa\u200brin", MASK, id="soft hyphen, zero-width space"),
        pytest.param("Warfarin", "WARFARIN and warfarin", f"{MASK} and {MASK}", id="ascii case"),
    ],
)
def test_normalised_forms_are_masked_whole(hidden: str, text: str, masked: str) -> None:
    assert _matcher(hidden).sub(text) == masked


def test_overlapping_places_are_one_mask_and_the_rest_is_kept() -> None:
    assert _matcher("warfarin 5", "5 mg").sub("\uff37arfarin 5 mg nightly") == f"{MASK} nightly"


def test_touching_places_are_one_mask() -> None:
    assert _matcher("P-1", "P-2").sub("ids P-1P-2 done") == f"ids {MASK} done"


def test_the_text_around_a_mask_is_kept_as_written() -> None:
    around = ("\uff2a\uff4f\uff53é — ﬁne STRAẞE, e\u0301 (", ") \uff57\uff41\uff52\uff46")
    assert _matcher("p-7").sub("P-7".join(around)) == MASK.join(around)


def test_a_mask_covers_every_accent_of_its_last_letter() -> None:
    assert _matcher("jose").sub("JOSE\u0301\u0327, 7") == f"{MASK}, 7"


def test_a_match_inside_an_expanded_character_masks_the_whole_character() -> None:
    assert _matcher("as").sub("Maß") == f"M{MASK}"  # "as" is half of "aß" ("ass")


def test_values_that_normalise_to_nothing_are_not_hidden() -> None:
    assert normalised(["", "   ", None, "\u0301", "\u200b", "\u3000"]) == set()
    assert _matcher("", "\u0301").sub("nothing to mask") == "nothing to mask"


def test_a_value_is_normalised_like_the_text() -> None:
    assert normalise("\uff33\uff34\uff32\uff21ẞ\uff25") == normalise("strasse") == "strasse"
    assert normalise("Jose\u0301") == normalise("JOSÉ") == "jose"


def test_no_hidden_values_no_matcher() -> None:
    assert HiddenValues().matcher() is None


def test_added_values_are_found_by_the_next_matcher() -> None:
    hidden = HiddenValues()
    hidden.add(normalised(["P-1"]))
    first = hidden.matcher()
    hidden.add(normalised(["straße"]))
    second = hidden.matcher()
    assert first is not None
    assert second is not None
    assert first.sub("P-1 STRASSE") == f"{MASK} STRASSE"
    assert second.sub("P-1 STRASSE") == f"{MASK} {MASK}"
    hidden.add(normalised(["P-1"]))  # nothing new: the same matcher
    assert hidden.matcher() is second


def test_past_the_cap_every_text_is_masked_whole() -> None:
    hidden = HiddenValues()
    hidden.add({f"value {i}" for i in range(MAX_MASKED_VALUES + 1)})
    assert hidden.matcher() is EVERYTHING
    assert EVERYTHING.sub("anything at all") == MASK
    assert EVERYTHING.sub("") == ""


_PIECES = st.sampled_from([*"aB -5éßẞﬁµж", "e\u0301", "\uff37", "\u00ad", "\u0327", "\u0130"])
_TEXT = st.lists(_PIECES, max_size=12).map("".join)


@given(before=_TEXT, value=_TEXT, after=_TEXT)
def test_no_normalised_form_of_a_hidden_value_survives(before: str, value: str, after: str) -> None:
    """Whatever surrounds it, a hidden value written in any form is gone from the normalised
    text once masked, and what is left is the original text's characters, in order."""
    hidden = normalise(value)
    masked = _matcher(value).sub(before + value + after)
    if not hidden.strip():
        return
    assert all(hidden not in normalise(kept) for kept in masked.split(MASK))
    rest = before + value + after
    for kept in masked.split(MASK):
        at = rest.find(kept)
        assert at != -1, (kept, rest)
        rest = rest[at + len(kept) :]
