"""Masking: given a set of hidden values, find them in a text and replace them.

One rule, used wherever a request's own strings (patient ids, questions, medication names) could
leave the process; the traces' span processor (:mod:`.tracing`) applies it. Values and texts are
compared in a normalised form, the same for both: compatibility decomposition (NFKD), case
folding, and combining marks and format characters (soft hyphen, zero-width space) dropped, one
character at a time. So ``STRASSE`` finds ``straße``, fullwidth letters and ligatures find their
plain forms, a composed accent finds a decomposed one, and a soft hyphen does not hide a name.
Finding more than was hidden is the safe side. A map from the normalised text back to the
original characters makes the mask cover exactly the original place, accents included;
overlapping places become one mask.

Plain substring searches, no regular expression: compiling one alternation of hundreds of long
strings is far too slow to do for each trace. ASCII text, the usual case, is only lower-cased.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Iterable

__all__ = [
    "EVERYTHING",
    "MASK",
    "MAX_MASKED_VALUES",
    "Everything",
    "HiddenValues",
    "Matcher",
    "normalise",
    "normalised",
]

MASK = "[MASKED]"
MAX_MASKED_VALUES = 500
"""Past this many values a text is masked whole: scanning for each would cost too much."""


class Matcher:
    """Finds hidden values (normalised, see :func:`normalised`) in a text and masks every place
    any of them covers."""

    __slots__ = ("_lengths", "_values")

    def __init__(self, values: Iterable[str]) -> None:
        self._values = tuple(filter(None, values))  # no Python-level loop: callers hold locks
        self._lengths: list[int] | None = None

    def sub(self, text: str) -> str:
        if not text or not self._values:
            return text
        if self._lengths is None:  # sorted on first use, outside any lock (a race sorts twice)
            self._values = tuple(sorted(self._values, key=len))
            self._lengths = [len(value) for value in self._values]
        folded, origin = _normalised_with_origin(text)
        places: list[tuple[int, int]] = []
        for value in self._values[: bisect.bisect_right(self._lengths, len(folded))]:
            at = folded.find(value)
            while at != -1:
                places.append((at, at + len(value)))
                at = folded.find(value, at + 1)
        if not places:
            return text
        if origin is not None:  # places in the normalised text -> places in the text
            places = [
                (origin[start], _past_dropped(text, origin[end - 1] + 1)) for start, end in places
            ]
        return _masked(text, places)


class Everything:
    """Masks a whole string: for texts whose hidden values are not known, or too many to look
    for."""

    __slots__ = ()

    def sub(self, text: str) -> str:
        return MASK if text else text


EVERYTHING = Everything()


class HiddenValues:
    """A growing set of normalised hidden values and the matcher over them. Adding and taking
    the matcher are cheap (a caller may hold a lock); the matcher does its work without one."""

    __slots__ = ("_matcher", "values")

    def __init__(self) -> None:
        self.values: set[str] = set()
        self._matcher: Matcher | None = None

    def add(self, values: set[str]) -> None:
        """Add values already normalised (:func:`normalised`, outside any lock)."""
        if not values <= self.values:
            self.values |= values
            self._matcher = None

    def matcher(self) -> Matcher | Everything | None:
        """None when there is nothing to find; :data:`EVERYTHING` past
        :data:`MAX_MASKED_VALUES`."""
        if not self.values:
            return None
        if len(self.values) > MAX_MASKED_VALUES:
            return EVERYTHING
        if self._matcher is None:
            self._matcher = Matcher(self.values)
        return self._matcher


def normalise(text: str) -> str:
    """``text`` in the form values and texts are compared in."""
    return _normalised_with_origin(text)[0]


def normalised(values: Iterable[str | None]) -> set[str]:
    """The values worth hiding, normalised: blank ones, and those that normalise to nothing
    (which would match everywhere), are left out."""
    return {folded for value in values if value and (folded := normalise(value)).strip()}


def _normalised_with_origin(text: str) -> tuple[str, list[int] | None]:
    """``text`` normalised, and for each of its characters the index in ``text`` it came from
    (``None`` when every character is one character: the places are the same)."""
    if text.isascii():
        return text.lower(), None
    parts = list(map(_CHARS.__getitem__, text))
    folded = "".join(parts)
    if len(folded) == len(text) and "" not in parts:  # none grew, none vanished: all one to one
        return folded, None
    origin: list[int] = []
    for index, part in enumerate(parts):
        if len(part) == 1:
            origin.append(index)
        elif part:
            origin.extend([index] * len(part))
    return folded, origin


def _past_dropped(text: str, end: int) -> int:
    """``end`` moved past the characters that normalise to nothing (combining marks, format
    characters), so that a mask covers the accents of its last letter."""
    while end < len(text) and not _CHARS[text[end]]:
        end += 1
    return end


def _masked(text: str, places: list[tuple[int, int]]) -> str:
    """``text`` with each place replaced by :data:`MASK`, overlapping or touching places as
    one."""
    places.sort()
    parts: list[str] = []
    kept = 0  # text before this index is written out (or masked)
    start, end = places[0]
    for next_start, next_end in places[1:]:
        if next_start <= end:
            end = max(end, next_end)
            continue
        parts += (text[kept:start], MASK)
        kept, (start, end) = end, (next_start, next_end)
    parts += (text[kept:start], MASK, text[end:])
    return "".join(parts)


def _normalise_char(char: str) -> str:
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", char).casefold())
    return "".join(
        c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf"
    )


class _CharCache(dict[str, str]):
    """Each character's normalised form, computed once; bounded so that text made of many
    distinct characters cannot grow it without end (past the bound, computed each time)."""

    __slots__ = ()
    LIMIT = 8192

    def __missing__(self, char: str) -> str:
        folded = _normalise_char(char)
        if len(self) < self.LIMIT:
            self[char] = folded
        return folded


_CHARS = _CharCache()
