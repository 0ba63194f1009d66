"""Medication strings as pharmacy and clinic systems write them, parsed into structured entries.

``warfarin 5 mg PO nightly``, ``Norco 5/325``, ``metoprolol succinate ER 50mg tab``,
``Voltaren 1% gel``, ``moxifloxacin 0.5% ophth soln 1 gtt OU TID``, ``norco (hydrocodone)``.

A small grammar over tokens (no library covers US prescription shorthand well enough and stays
small): the name is the run of words before the first attribute (a number, a unit, a dose form,
a route, a release form or a frequency); attributes are read wherever they appear; words after
the first attribute are the sig (``for pain``); a parenthesised text is an alternative name
(``norco (hydrocodone)``) or a comment, which the resolver decides. Nothing is dropped: the
original text is kept on every entry.

A strength per a quantity is read as such: ``10 mg/5 mL`` is a concentration (strength 10, unit
``mg/5 mL``, ``strength_per`` ``5 mL``), ``6 mg/24 hr`` and ``0.1 mg/hr`` are rates. A count of
tablets or capsules may be written in Latin numerals or as a fraction (``i po qd``, ``ii tabs``,
``ss tab``, ``1/2 tab``, ``½ tab``): ``dose`` says it in figures and ``dose_count`` as a number.
``iv`` is a count only before a dose form or another route (``iv tabs``, ``iv po``); otherwise it
is the intravenous route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["PARSED_FIELDS", "ParsedMedication", "parse_medication"]

# Units, longest first where one is a prefix of another. "%" is a unit: "1% gel".
_UNITS = {
    "mg": "mg",
    "mgs": "mg",
    "milligram": "mg",
    "milligrams": "mg",
    "mcg": "mcg",
    "µg": "mcg",
    "ug": "mcg",
    "microgram": "mcg",
    "micrograms": "mcg",
    "g": "g",
    "gm": "g",
    "gram": "g",
    "grams": "g",
    "ml": "mL",
    "l": "L",
    "meq": "mEq",
    "mmol": "mmol",
    "unit": "units",
    "units": "units",
    "u": "units",
    "iu": "units",
    "%": "%",
    "puff": "puffs",
    "puffs": "puffs",
    "gtt": "drops",
    "gtts": "drops",
    "drop": "drops",
    "drops": "drops",
    "spray": "sprays",
    "sprays": "sprays",
}
# Dose forms and the route they imply when no route is written.
_FORMS: dict[str, tuple[str, str | None]] = {
    "tab": ("tablet", None),
    "tabs": ("tablet", None),
    "tablet": ("tablet", None),
    "tablets": ("tablet", None),
    "cap": ("capsule", None),
    "caps": ("capsule", None),
    "capsule": ("capsule", None),
    "capsules": ("capsule", None),
    "softgel": ("capsule", None),
    "chewable": ("chewable tablet", None),
    "odt": ("orally disintegrating tablet", None),
    "soln": ("solution", None),
    "sol": ("solution", None),
    "solution": ("solution", None),
    "susp": ("suspension", None),
    "suspension": ("suspension", None),
    "syrup": ("syrup", None),
    "elixir": ("elixir", None),
    "liquid": ("liquid", None),
    "lozenge": ("lozenge", None),
    "troche": ("lozenge", None),
    "film": ("film", None),
    "powder": ("powder", None),
    "packet": ("powder", None),
    "inj": ("injection", None),
    "injection": ("injection", None),
    "pen": ("injection", "subcutaneous"),
    "vial": ("injection", None),
    "patch": ("patch", "transdermal"),
    "inhaler": ("inhaler", "inhaled"),
    "hfa": ("inhaler", "inhaled"),
    "diskus": ("inhaler", "inhaled"),
    "handihaler": ("inhaler", "inhaled"),
    "respimat": ("inhaler", "inhaled"),
    "ellipta": ("inhaler", "inhaled"),
    "flexpen": ("injection", "subcutaneous"),
    "kwikpen": ("injection", "subcutaneous"),
    "solostar": ("injection", "subcutaneous"),
    "dosepak": ("dose pack", None),
    "nebulizer": ("nebuliser solution", "inhaled"),
    "neb": ("nebuliser solution", "inhaled"),
    "implant": ("implant", "subdermal"),
    "suppository": ("suppository", "rectal"),
    "supp": ("suppository", "rectal"),
    "enema": ("enema", "rectal"),
    "gel": ("gel", "topical"),
    "cream": ("cream", "topical"),
    "crm": ("cream", "topical"),
    "ointment": ("ointment", "topical"),
    "oint": ("ointment", "topical"),
    "ung": ("ointment", "topical"),
    "lotion": ("lotion", "topical"),
    "foam": ("foam", "topical"),
    "shampoo": ("shampoo", "topical"),
    "drops": ("drops", None),
    "gtt": ("drops", None),
    "gtts": ("drops", None),
    "spray": ("spray", None),
}
# Routes as written. Two-word routes ("eye drops", "by mouth") are joined before lookup.
_ROUTES = {
    "po": "oral",
    "oral": "oral",
    "orally": "oral",
    "by mouth": "oral",
    "sl": "sublingual",
    "sublingual": "sublingual",
    "buccal": "buccal",
    "iv": "intravenous",
    "ivpb": "intravenous",
    "im": "intramuscular",
    "sc": "subcutaneous",
    "sq": "subcutaneous",
    "subq": "subcutaneous",
    "subcut": "subcutaneous",
    "subcutaneous": "subcutaneous",
    "td": "transdermal",
    "transdermal": "transdermal",
    "inh": "inhaled",
    "inhaled": "inhaled",
    "inhalation": "inhaled",
    "nasal": "nasal",
    "intranasal": "nasal",
    "topical": "topical",
    "top": "topical",
    "cutaneous": "topical",
    "ophthalmic": "ophthalmic",
    "ophth": "ophthalmic",
    "opth": "ophthalmic",
    "eye": "ophthalmic",
    "eyes": "ophthalmic",
    "ou": "ophthalmic",  # "od" is not read as a route: it also means "once daily"
    "os": "ophthalmic",
    "otic": "otic",
    "ear": "otic",
    "ears": "otic",
    "vaginal": "vaginal",
    "vag": "vaginal",
    "pv": "vaginal",
    "intravaginal": "vaginal",
    "rectal": "rectal",
    "pr": "rectal",
    "subdermal": "subdermal",
}
_RELEASE = {
    "er": "ER",
    "xr": "XR",
    "xl": "XL",
    "sr": "SR",
    "cr": "CR",
    "la": "LA",
    "cd": "CD",
    "dr": "DR",
    "ec": "EC",
    "ir": "IR",
    "xt": "XT",
    "extended release": "ER",
    "extended-release": "ER",
    "delayed release": "DR",
    "delayed-release": "DR",
    "immediate release": "IR",
    "sustained release": "SR",
    "controlled release": "CR",
    "enteric coated": "EC",
    "enteric-coated": "EC",
}
_FREQUENCY = {
    "qd": "daily",
    "daily": "daily",
    "od": "daily",
    "once daily": "daily",
    "once a day": "daily",
    "every day": "daily",
    "qam": "every morning",
    "qpm": "every evening",
    "qhs": "at bedtime",
    "hs": "at bedtime",
    "nightly": "at bedtime",
    "at bedtime": "at bedtime",
    "bid": "twice daily",
    "twice daily": "twice daily",
    "tid": "three times daily",
    "qid": "four times daily",
    "qod": "every other day",
    "weekly": "weekly",
    "qweek": "weekly",
    "qwk": "weekly",
    "once weekly": "weekly",
    "monthly": "monthly",
    "stat": "once, now",
    "once": "once",
    "continuous": "continuous",
    "as directed": "as directed",
    "ud": "as directed",
    "sliding scale": "sliding scale",
    "per sliding scale": "sliding scale",
}
_DURATION = {"day", "days", "d", "week", "weeks", "wk", "wks", "month", "months", "mo"}
_DOSE_COUNTS = {"applicator", "applicatorful", "vial", "ampule", "application"}
_PRN = {"prn", "as needed", "when needed", "if needed"}
# Words that qualify a product's strength ("Bactrim DS") and are not part of its name.
_MODIFIERS = {
    "ds": "double strength",
    "ss": "single strength",
    "es": "extra strength",
    "forte": "forte",
}
# What a strength can be per ("10 mg/5 mL", "25 mcg/hr"): the quantity's unit as written, and
# what the strength then is.
_PER_UNITS: dict[str, tuple[str, str]] = {
    "ml": ("mL", "concentration"),
    "cc": ("mL", "concentration"),
    "l": ("L", "concentration"),
    "g": ("g", "concentration"),
    "gm": ("g", "concentration"),
    "h": ("hr", "rate"),
    "hr": ("hr", "rate"),
    "hrs": ("hr", "rate"),
    "hour": ("hr", "rate"),
    "hours": ("hr", "rate"),
    "min": ("min", "rate"),
    "minute": ("min", "rate"),
    "d": ("day", "rate"),
    "day": ("day", "rate"),
    "days": ("day", "rate"),
    "kg": ("kg", "per body weight"),
    "m2": ("m2", "per body surface area"),
    "actuation": ("actuation", "per dose unit"),
    "act": ("actuation", "per dose unit"),
    "spray": ("spray", "per dose unit"),
    "puff": ("puff", "per dose unit"),
    "inhalation": ("inhalation", "per dose unit"),
    "drop": ("drop", "per dose unit"),
    "tab": ("tablet", "per dose unit"),
    "tablet": ("tablet", "per dose unit"),
    "cap": ("capsule", "per dose unit"),
    "capsule": ("capsule", "per dose unit"),
}
_PER = re.compile(r"^/(?P<n>\d+(?:\.\d+)?|\.\d+)?(?P<u>[a-z][a-z0-9]*)?$")
# Tablet counts in Latin numerals ("i po qd", "ii tabs"); "ss" (semis) is a half.
_LATIN = {"i": 1.0, "ii": 2.0, "iii": 3.0, "iv": 4.0}
_UNICODE_FRACTIONS = {"½": "1/2", "¼": "1/4", "¾": "3/4", "⅓": "1/3", "⅔": "2/3"}
_UNICODE_FRACTION = re.compile("[" + "".join(_UNICODE_FRACTIONS) + "]")
_FRACTION = re.compile(r"^(\d)/(\d)$")
# "10 mg / 5 mL": the slash of a concentration or a rate, written with spaces, closed up.
_SPACED_PER = re.compile(
    r"(\d\s*(?:units?|mcg|µg|ug|mg|gm|g|meq|mmol|iu|ml)\b)\s*/"
    r"(?!\s*\d*\.?\d*\s*(?:units?|mcg|µg|ug|mg|gm|g|meq|mmol|iu)\b)\s*",  # not "5 mg / 325 mg"
    re.IGNORECASE,
)
_EVERY_N_HOURS = re.compile(r"\bevery\s+(\d+(?:\s*-\s*\d+)?)\s*(?:hours?|hrs?|h)\b", re.IGNORECASE)
_Q_HOURS = re.compile(r"^q(\d+(?:-\d+)?)(h|hr|hrs|hours?)$")
_EVERY_HOURS = re.compile(r"^every (\d+(?:-\d+)?) ?(h|hr|hrs|hours?)$")
_HOURS_LATE = re.compile(r"^\d+ ?(?:h|hr|hrs|hour|hours)$")
# A strength: "5", "2.5", "5/325", "20-12.5", "0.5%", "1,000", "25mcg/hr", "5mg/5ml".
_NUMBER = r"\d+(?:[.,]\d+)*"
_STRENGTH = re.compile(
    rf"^(?P<value>{_NUMBER}(?:\s*[/-]\s*{_NUMBER})*)\s*(?P<unit>[a-zµ%]+)?(?P<per>/\s*[a-z0-9.]+)?$"
)
_GLUED = re.compile(rf"^({_NUMBER}(?:[/-]{_NUMBER})*)([a-zµ%]+(?:/[a-z0-9.]+)?)$")
_PARENS = re.compile(r"\(([^()]*)\)|\[([^\[\]]*)\]")
_NOISE = re.compile(r"[®™©*\"“”]")
_TOKEN = re.compile(r"(?:\d,\d{3}|[^\s,;:])+")  # "50,000 units" keeps its number
_TWO_WORDS = {
    key for table in (_ROUTES, _RELEASE, _FREQUENCY) for key in table if " " in key or "-" in key
} | {p for p in _PRN if " " in p}


@dataclass(frozen=True, slots=True)
class ParsedMedication:
    """One medication string, parsed. ``names`` are the name candidates in order: the main name
    first, then any parenthesised text (an alternative name or a comment)."""

    text: str
    names: tuple[str, ...]
    strength: str | None = None
    unit: str | None = None
    form: str | None = None
    route: str | None = None
    frequency: str | None = None
    as_needed: bool = False
    release: str | None = None
    sig: str | None = None
    dose: str | None = None
    modifier: str | None = None
    strength_per: str | None = None
    """What the strength is per, always with a number: ``5 mL`` (``10 mg/5 mL``), ``24 hr``
    (``6 mg/24 hr``), ``1 hr`` (``25 mcg/hr``); ``None`` for a plain strength."""
    strength_type: str | None = None
    """With ``strength_per``: ``concentration`` (per volume or mass), ``rate`` (per time),
    ``per body weight``, ``per body surface area`` or ``per dose unit`` (per actuation)."""
    dose_count: float | None = None
    """The dose as a number of units (tablets, capsules, puffs, drops, applicators): ``ii tabs``
    2.0, ``1/2 tab`` 0.5, ``i ss`` 1.5."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "name": self.names[0] if self.names else None,
            "strength": self.strength,
            "unit": self.unit,
            "form": self.form,
            "route": self.route,
            "frequency": self.frequency,
            "as_needed": self.as_needed,
            "release": self.release,
            "dose": self.dose,
            "modifier": self.modifier,
            "sig": self.sig,
            "strength_per": self.strength_per,
            "strength_type": self.strength_type,
            "dose_count": self.dose_count,
        }


PARSED_FIELDS: dict[str, Any] = {
    "text": str,
    "name": str,
    "strength": str,
    "unit": str,
    "form": str,
    "route": str,
    "frequency": str,
    "as_needed": bool,
    "release": str,
    "dose": str,
    "modifier": str,
    "sig": str,
    "strength_per": str,
    "strength_type": str,
    "dose_count": float,
}
"""The keys of :meth:`ParsedMedication.as_dict` and their types, in the notation of
``screening.OUTPUT_FIELDS`` (a value may be None)."""


def parse_medication(text: str) -> ParsedMedication:
    """Parse one medication string. Never raises: unparsed words stay in the name or the sig."""
    original = text.strip()
    cleaned = _NOISE.sub(" ", original).replace("\u2019", "'")
    if not cleaned.isascii():  # "½ tab"
        cleaned = _UNICODE_FRACTION.sub(lambda m: f" {_UNICODE_FRACTIONS[m.group()]} ", cleaned)
    if "/" in cleaned:  # "10 mg / 5 mL"
        cleaned = _SPACED_PER.sub(r"\1/", cleaned)
    parenthesised = [
        " ".join((m.group(1) or m.group(2) or "").split()) for m in _PARENS.finditer(cleaned)
    ]
    main = _PARENS.sub(" ", cleaned)
    tokens = _tokens(main)  # as written; attributes are matched in lower case
    name_words: list[str] = []
    sig_words: list[str] = []
    found: dict[str, Any] = {}
    seen_attribute = False
    i = 0
    while i < len(tokens):
        consumed = _attribute(tokens, i, found, after_name=bool(name_words))
        if consumed:
            seen_attribute = True
            i += consumed
            continue
        (sig_words if seen_attribute and name_words else name_words).append(tokens[i])
        i += 1
    name = _tidy_name(" ".join(name_words))
    route = found.get("route") or found.get("form_route")
    names = tuple(n for n in (name, *(_tidy_name(p) for p in parenthesised)) if n)
    return ParsedMedication(
        text=original,
        names=names,
        strength=found.get("strength"),
        unit=found.get("unit"),
        form=found.get("form"),
        route=route,
        frequency=found.get("frequency"),
        as_needed=bool(found.get("as_needed")),
        release=found.get("release"),
        sig=" ".join(sig_words) or None,
        dose=found.get("dose"),
        modifier=found.get("modifier"),
        strength_per=found.get("strength_per"),
        strength_type=found.get("strength_type"),
        dose_count=found.get("dose_count"),
    )


def _tokens(text: str) -> list[str]:
    """Words, with a number glued to its unit split off ("50mg" -> "50", "mg"), and the
    two-word phrases of the tables joined ("eye drops" stays two tokens: both are known)."""
    text = _EVERY_N_HOURS.sub(lambda m: "q" + m.group(1).replace(" ", "") + "h", text)
    raw = _TOKEN.findall(text.replace("(", " ").replace(")", " "))
    tokens: list[str] = []
    for token in raw:
        token = token.strip(".")
        if not token:
            continue
        glued = _GLUED.match(token.lower())
        if glued and (glued.group(2).split("/")[0] in _UNITS):
            tokens.extend([glued.group(1), glued.group(2)])
        else:
            tokens.append(token)
    joined: list[str] = []
    i = 0
    while i < len(tokens):
        for size in (3, 2):
            phrase = " ".join(tokens[i : i + size])
            if len(tokens) - i >= size and phrase.lower() in _TWO_WORDS:
                joined.append(phrase)
                i += size
                break
        else:
            joined.append(tokens[i])
            i += 1
    return joined


def _attribute(tokens: list[str], i: int, found: dict[str, Any], *, after_name: bool) -> int:
    """If ``tokens[i]`` starts an attribute, record it in ``found`` and return how many tokens
    it used; else 0."""
    token = tokens[i].lower()
    nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else None
    if token.startswith("#") and token[1:].isdigit() and after_name:
        return 0  # "Tylenol #3": part of the product's name
    if after_name and (token in _LATIN or token == "ss" or "-" in token):
        latin = _latin_count(tokens, i, found)
        if latin is not None:
            return latin
    strength = _STRENGTH.match(token)
    if strength and strength.group("value")[0].isdigit():
        value = strength.group("value").replace(" ", "")
        unit = strength.group("unit")
        per = strength.group("per") or ""
        used = 1
        if nxt in _DURATION or (i > 0 and tokens[i - 1].lower() in {"x", "for"}):
            return 0  # "x 7 days": a duration, part of the sig
        if unit is None and nxt is not None:
            unit_match = re.match(r"^([a-zµ%]+)(/[a-z0-9.]+)?$", nxt)
            if unit_match and unit_match.group(1) in _UNITS:
                unit, per, used = unit_match.group(1), unit_match.group(2) or "", 2
            else:
                counted = _dose_count(tokens, i, value, found)
                if counted is not None:
                    return counted
        if unit is not None and unit not in _UNITS:
            if _HOURS_LATE.match(token):  # "24hr" (a release duration), not a strength
                found.setdefault("release", "ER")
                return 1
            return 0  # "d3" in "vitamin d3" is not a strength; leave it to the name
        if unit is not None and _UNITS[unit] in {"puffs", "drops", "sprays"}:
            if "dose" in found:
                return 0
            found["dose"] = f"{value} {_UNITS[unit]}"
            found["dose_count"] = _number(value)
            return used
        if "strength" in found:
            return 0  # a second number ("x 7 days") belongs to the sig
        found["strength"] = value
        if unit is not None:
            per_read = _per(tokens, i + used, per)
            if per_read is None:
                found["unit"] = _UNITS[unit] + per
            else:
                per_unit, per_quantity, kind, more = per_read
                found["unit"] = f"{_UNITS[unit]}/{per_unit}"
                found["strength_per"] = per_quantity
                found["strength_type"] = kind
                used += more
        return used
    if token in _ROUTES and (token not in {"od", "os", "ou", "eye", "ear", "top"} or after_name):
        found.setdefault("route", _ROUTES[token])
        return 1
    if token in _FORMS and after_name:
        form, implied = _FORMS[token]
        found.setdefault("form", form)
        if implied is not None:
            found.setdefault("form_route", implied)
        return 1
    if token in _RELEASE and after_name:
        found.setdefault("release", _RELEASE[token])
        return 1
    if token in _FREQUENCY and after_name:
        found.setdefault("frequency", _FREQUENCY[token])
        return 1
    hours = _Q_HOURS.match(token) or _EVERY_HOURS.match(token)
    if hours:
        found.setdefault("frequency", f"every {hours.group(1)} hours")
        return 1
    if token in _MODIFIERS and after_name:
        found.setdefault("modifier", _MODIFIERS[token])
        return 1
    if token in _PRN and after_name:
        found["as_needed"] = True
        return 1
    if token in _UNITS and after_name and token not in {"u", "l", "g"}:
        return 1  # a unit written apart from its number ("2 puffs" read the number already)
    return 0


def _per(tokens: list[str], j: int, per: str) -> tuple[str, str, str, int] | None:
    """What a strength is per: ``per`` is the written "/..." after its unit ("/5", "/5ml",
    "/hr"), ``tokens[j]`` the word after it ("mL" in "mg/5 mL"; "per 5 mL" is read too).
    Returns the unit as shown ("5 mL", "hr"), the quantity ("5 mL", "1 hr"), the kind of
    strength and how many more tokens were read; ``None`` when it is not a quantity known here.
    """
    more = 0
    if not per and j + 1 < len(tokens) and tokens[j].lower() == "per":
        per, more, j = "/" + tokens[j + 1].lower(), 2, j + 2
    found = _PER.match(per) if per else None
    if found is None:
        return None
    number, unit = found.group("n"), found.group("u")
    if unit is None and number is not None and j < len(tokens):
        unit = tokens[j].lower()
        more += 1
    if unit not in _PER_UNITS:
        return None
    name, kind = _PER_UNITS[unit]
    if number is None:
        return name, f"1 {name}", kind, more
    number = "0" + number if number.startswith(".") else number
    return f"{number} {name}", f"{number} {name}", kind, more


def _number(value: str) -> float | None:
    """A count as written ("2", "0.5", "1/2") as a number; ``None`` if it is not one."""
    fraction = _FRACTION.match(value)
    if fraction:
        denominator = int(fraction.group(2))
        return int(fraction.group(1)) / denominator if denominator else None
    try:
        return float(value)
    except ValueError:
        return None


def _is_count(value: str) -> bool:
    """A number that can count tablets ("2", "0.5", "1-2"): not a strength written as "a/b"
    ("Norco 5/325 tab"), only a proper fraction ("1/2", "3/4")."""
    if "/" not in value:
        return True
    fraction = _FRACTION.match(value)
    return fraction is not None and 0 < int(fraction.group(1)) < int(fraction.group(2))


def _dose_count(tokens: list[str], i: int, value: str, found: dict[str, Any]) -> int | None:
    """A number before a dose form or a dose unit ("1 tab", "1/2 tab", "1 1/2 tabs",
    "1 applicator"): record the dose and return how many tokens it used; 0 when it is a dose
    but one was read already; ``None`` when it is not a dose."""
    if not _is_count(value):
        return None
    used, count = 1, _number(value)
    following = [t.lower() for t in tokens[i + 1 : i + 3]]
    if following and _FRACTION.match(following[0]) and "/" not in value and count is not None:
        half = _number(following[0])
        if half is not None and _is_count(following[0]) and following[1:2]:
            value, count, used = f"{value} {following[0]}", count + half, 2
            following = following[1:]
    form = following[0] if following else None
    if form not in _FORMS and form not in _DOSE_COUNTS:
        return None
    if "dose" in found:
        return 0
    _record_dose(found, value, count, form)
    return used + 1


def _record_dose(found: dict[str, Any], value: str, count: float | None, form: str | None) -> None:
    if form is None:
        found["dose"] = value
    else:
        found["dose"] = f"{value} {_FORMS.get(form, (form,))[0]}"
        if form in _FORMS:
            found.setdefault("form", _FORMS[form][0])
            if _FORMS[form][1] is not None:
                found.setdefault("form_route", _FORMS[form][1])
    found["dose_count"] = count


def _latin_count(tokens: list[str], i: int, found: dict[str, Any]) -> int | None:
    """A tablet count in Latin numerals after the name: ``i po qd``, ``ii tabs``, ``i ss tab``
    (one and a half), ``ss tab`` after a strength (a half). Read as a count only where it is
    one: before a dose form, a route, a frequency or "prn", or at the end after a dose form;
    ``iv`` only before a dose form (``iv q8h`` is intravenous, ``iv po`` is "IV or PO"); a
    count without a dose form after it only after a strength (``Factor II IV``, ``vitamin D ii``
    are names). Returns the tokens used, or ``None`` when the word is not a count here."""
    token = tokens[i].lower()
    if "dose" in found:
        return None
    if token == "ss":  # a half, not "single strength" ("Bactrim SS"): only after a strength
        nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else None
        if "strength" not in found or (nxt not in _FORMS and nxt not in _DOSE_COUNTS):
            return None
        _record_dose(found, "1/2", 0.5, nxt)
        return 2
    low, _, high = token.partition("-")
    if low not in _LATIN or (high and high not in _LATIN):
        return None
    count: float | None = _LATIN[low]
    written, j = str(int(_LATIN[low])), i + 1
    if high:  # "i-ii tabs": a range, counted by neither end
        count, written = None, f"{written}-{int(_LATIN[high])}"
    if j < len(tokens) and tokens[j].lower() == "ss" and count is not None:
        count, written, j = count + 0.5, f"{written} 1/2", j + 1
    nxt = tokens[j].lower() if j < len(tokens) else None
    if nxt in _FORMS or nxt in _DOSE_COUNTS:
        _record_dose(found, written, count, nxt)
        return j - i + 1
    previous = tokens[i - 1].lower() if i > 0 else None
    if token == "iv":
        return None
    if nxt is None:
        counts = previous in _FORMS
    else:
        counts = "strength" in found and (
            nxt in _ROUTES or nxt in _FREQUENCY or nxt in _PRN or _Q_HOURS.match(nxt) is not None
        )
    if not counts:
        return None
    _record_dose(found, written, count, None)
    return j - i


def _tidy_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).strip(" .,;:-/")
