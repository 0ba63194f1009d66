"""Medication strings as pharmacy and clinic systems write them, parsed into structured entries.

``warfarin 5 mg PO nightly``, ``Norco 5/325``, ``metoprolol succinate ER 50mg tab``,
``Voltaren 1% gel``, ``moxifloxacin 0.5% ophth soln 1 gtt OU TID``, ``norco (hydrocodone)``.

A small grammar over tokens (no library covers US prescription shorthand well enough and stays
small): the name is the run of words before the first attribute (a number, a unit, a dose form,
a route, a release form or a frequency); attributes are read wherever they appear; words after
the first attribute are the sig (``for pain``); a parenthesised text is an alternative name
(``norco (hydrocodone)``) or a comment, which the resolver decides. Nothing is dropped: the
original text is kept on every entry.
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
}
"""The keys of :meth:`ParsedMedication.as_dict` and their types, in the notation of
``screening.OUTPUT_FIELDS`` (a value may be None)."""


def parse_medication(text: str) -> ParsedMedication:
    """Parse one medication string. Never raises: unparsed words stay in the name or the sig."""
    original = text.strip()
    cleaned = _NOISE.sub(" ", original).replace("\u2019", "'")
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
    strength = _STRENGTH.match(token)
    if strength and strength.group("value")[0].isdigit():
        unit = strength.group("unit")
        per = strength.group("per") or ""
        used = 1
        if nxt in _DURATION or (i > 0 and tokens[i - 1].lower() in {"x", "for"}):
            return 0  # "x 7 days": a duration, part of the sig
        if unit is None and nxt is not None:
            unit_match = re.match(r"^([a-zµ%]+)(/[a-z0-9.]+)?$", nxt)
            if unit_match and unit_match.group(1) in _UNITS:
                unit, per, used = unit_match.group(1), unit_match.group(2) or "", 2
            elif nxt in _FORMS or nxt in _DOSE_COUNTS:  # "1 tab", "1 applicator": a dose
                if "dose" not in found:
                    found["dose"] = f"{strength.group('value')} {_FORMS.get(nxt, (nxt,))[0]}"
                    if nxt in _FORMS:
                        found.setdefault("form", _FORMS[nxt][0])
                        if _FORMS[nxt][1] is not None:
                            found.setdefault("form_route", _FORMS[nxt][1])
                    return 2
                return 0
        if unit is not None and unit not in _UNITS:
            if _HOURS_LATE.match(token):  # "24hr" (a release duration), not a strength
                found.setdefault("release", "ER")
                return 1
            return 0  # "d3" in "vitamin d3" is not a strength; leave it to the name
        value = strength.group("value").replace(" ", "")
        if unit is not None and _UNITS[unit] in {"puffs", "drops", "sprays"}:
            if "dose" in found:
                return 0
            found["dose"] = f"{value} {_UNITS[unit]}"
            return used
        if "strength" in found:
            return 0  # a second number ("x 7 days") belongs to the sig
        found["strength"] = value
        if unit is not None:
            found["unit"] = _UNITS[unit] + per
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


def _tidy_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).strip(" .,;:-/")
