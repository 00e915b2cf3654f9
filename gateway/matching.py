"""Attribute matching of PS3.4 C.2.2.2, for QIDO-RS (and later C-FIND): one term per key.

Why a module of its own: the rules are the standard's, not the index's, and every level
(study, series, instance) applies the same ones to decrypted values. ``gateway.search``
narrows in SQL where a clear column or a blind index allows, then calls ``Term.matches`` on
what is left, so SQL is only ever a speed-up and never the definition of a match.

* universal (empty value): every record matches; the key is only a return key;
* single value: equality (case-insensitive for PN, as most archives and Orthanc do);
* wildcard (``*`` any run, ``?`` exactly one *character*, never a byte): string VRs;
* range (``a-b``, ``a-``, ``-b``) for DA, TM and DT: an open or closed range never matches
  an empty value (C.2.2.2.5.1: only universal matching matches an empty value);
* list of values (``\\``- or comma-separated): UI (C.2.2.2.2) and, as OHIF sends them for
  ModalitiesInStudy, CS; a record matches when any query value matches any of its values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidInputError

_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_LIST_VRS = frozenset({"UI", "CS"})
_NO_WILDCARD_VRS = frozenset({"DA", "TM", "DT", "UI", "IS", "DS", "US", "UL", "SS", "SL"})
_DA = re.compile(r"^[0-9]{8}$")
_TM = re.compile(r"^[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?$")
_DT = re.compile(r"^[0-9]{4}([0-9]{2}){0,5}(\.[0-9]{1,6})?([+-][0-9]{4})?$")
_INT = re.compile(r"^[+-]?[0-9]+$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class InvalidQueryError(InvalidInputError):
    """A query key's value is not valid for its VR (a bad date range, a UID with letters)."""

    def __init__(self, keyword: str, why: str) -> None:
        super().__init__(f"{keyword}: {why}")
        self.keyword = keyword


def wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """A DICOM wildcard as a regex: ``*`` any run, ``?`` one Unicode character."""
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(parts), flags)


def _check(keyword: str, vr: str, value: str) -> None:
    """Refuse a single value that cannot be of the VR (it could never match: say so)."""
    if vr == "DA" and not _DA.match(value):
        raise InvalidQueryError(keyword, f"{value!r} is not a date (YYYYMMDD)")
    if vr == "TM" and not _TM.match(value):
        raise InvalidQueryError(keyword, f"{value!r} is not a time (HHMMSS.FFFFFF)")
    if vr == "DT" and not _DT.match(value):
        raise InvalidQueryError(keyword, f"{value!r} is not a date-time")
    if vr == "UI" and (len(value) > 64 or not _UID.match(value)):
        raise InvalidQueryError(keyword, f"{value!r} is not a UID")
    if vr in ("IS", "US", "UL", "SS", "SL") and not _INT.match(value):
        raise InvalidQueryError(keyword, f"{value!r} is not an integer")


def _text(value: Any) -> list[str]:
    """The strings a stored value offers for matching (each PN group on its own)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [str(g) for g in value.values() if g]
    return [str(value)]


def _time_key(value: str) -> str:
    """A TM (or DT) value padded so that string order is time order (``10`` is 10:00:00)."""
    head, _, frac = value.partition(".")
    return head.ljust(6, "0") + "." + frac.ljust(6, "0")


@dataclass(frozen=True)
class Term:
    """One parsed query key: what kind of matching, on which values."""

    keyword: str
    vr: str
    kind: str  # "universal" | "single" | "wildcard" | "range" | "list"
    values: tuple[str, ...] = ()
    low: str | None = None
    high: str | None = None

    @classmethod
    def parse(cls, keyword: str, vr: str, raw: str) -> Term:
        """The term a query value asks for; ``InvalidQueryError`` when it is not valid."""
        value = raw.strip(" ") if vr != "PN" else raw.strip()
        if value == "" or value == "*":
            return cls(keyword, vr, "universal")
        if vr in _RANGE_VRS and "-" in value and not (vr == "DT" and value.count("-") > 1):
            low, _, high = value.partition("-")
            if not low and not high:
                raise InvalidQueryError(keyword, "a range needs at least one end")
            for end in (low, high):
                if end:
                    _check(keyword, vr, end)
            if low and high and _order(vr, low) > _order(vr, high):
                raise InvalidQueryError(keyword, f"range {value!r} ends before it starts")
            return cls(keyword, vr, "range", low=low or None, high=high or None)
        if vr in _LIST_VRS and ("\\" in value or "," in value):
            split = re.split(r"[\\,]", value)  # PS3.18 8.3.4.1 commas; C-FIND's backslash
            items = tuple(v.strip(" ") for v in split if v.strip(" "))
            for item in items:
                _check(keyword, vr, item)
            return cls(keyword, vr, "list", items)
        if ("*" in value or "?" in value) and vr not in _NO_WILDCARD_VRS:
            return cls(keyword, vr, "wildcard", (value,))
        _check(keyword, vr, value)
        return cls(keyword, vr, "single", (value,))

    @property
    def universal(self) -> bool:
        """True: the term filters nothing (a return key only)."""
        return self.kind == "universal"

    def matches(self, stored: list[Any]) -> bool:
        """Whether a record whose attribute holds ``stored`` (a DICOM JSON Value list, [] for
        empty) matches: any stored value matching is enough (multi-valued attributes)."""
        if self.kind == "universal":
            return True
        texts = [t for v in stored for t in _text(v)]
        if not texts:
            return False  # only universal matching matches an empty value
        if self.kind == "range":
            return any(self._in_range(t) for t in texts)
        if self.kind == "wildcard":
            pattern = wildcard(self.values[0], ignore_case=self.vr == "PN")
            return any(pattern.fullmatch(t) for t in texts)
        wanted = self.values
        if self.vr == "PN":
            folded = {w.casefold() for w in wanted}
            return any(t.casefold() in folded for t in texts)
        if self.vr in ("IS", "US", "UL", "SS", "SL"):
            return any(_same_int(t, w) for t in texts for w in wanted)
        if self.vr in ("TM",):
            return any(_time_key(t) == _time_key(w) for t in texts for w in wanted)
        return any(t in wanted for t in texts)

    def _in_range(self, text: str) -> bool:
        if self.vr == "DA" and not _DA.match(text):
            return False
        key = _order(self.vr, text)
        if self.low is not None and key < _order(self.vr, self.low):
            return False
        return not (self.high is not None and key > _order(self.vr, self.high, upper=True))


def _order(vr: str, value: str, upper: bool = False) -> str:
    """A sortable form of a DA/TM/DT value; ``upper`` makes a partial end inclusive."""
    if vr == "TM":
        if upper:
            head, _, frac = value.partition(".")
            return head.ljust(6, "9") + "." + frac.ljust(6, "9")
        return _time_key(value)
    if vr == "DT":
        core = value.split("+")[0].split("-")[0] if vr == "DT" else value
        return core.ljust(14, "9" if upper else "0")
    return value


def _same_int(text: str, wanted: str) -> bool:
    try:
        return int(float(text)) == int(wanted)
    except ValueError:
        return False
