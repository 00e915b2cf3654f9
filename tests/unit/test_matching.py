"""PS3.4 C.2.2.2 matching (gateway/matching.py): each kind of term, and the refusals."""

from __future__ import annotations

import pytest

from gateway.matching import InvalidQueryError, Term

PN = [{"Alphabetic": "Müller^Jörg", "Ideographic": "山田^太郎"}]


@pytest.mark.parametrize(
    ("vr", "query", "stored", "hit"),
    [
        ("PN", "", [], True),  # universal matches even an empty value
        ("PN", "*", PN, True),
        ("PN", "müller^jörg", PN, True),  # PN single values ignore case
        ("PN", "M?ller^J?rg", PN, True),  # ? is one character, not one byte
        ("PN", "M??ller*", PN, False),
        ("PN", "山田*", PN, True),  # any group
        ("PN", "M*", [], False),  # only universal matching matches an empty value
        ("LO", "abc", ["ABC"], False),  # other VRs are case-sensitive
        ("SH", "ACC*", ["ACCA1"], True),
        ("DA", "20240115", ["20240115"], True),
        ("DA", "20240101-20241231", ["20240115"], True),
        ("DA", "20240101-", ["20231231"], False),
        ("DA", "-20241231", [], False),  # an open range never matches an empty date
        ("DA", "20240101-", [], False),
        ("TM", "10-11", ["103000"], True),  # partial times: 10:00:00 to 11:59:59.999999
        ("TM", "10-11", ["120000"], False),
        ("TM", "1015", ["101500"], True),
        ("DT", "20240101-20240131", ["20240115103000"], True),
        ("UI", "1.2.3,1.2.4", ["1.2.4"], True),  # comma list (PS3.18)
        ("UI", "1.2.3\\1.2.4", ["1.2.4"], True),  # backslash list (as OHIF, C-FIND)
        ("UI", "1.2.3", ["1.2.30"], False),
        ("CS", "CT\\MR", ["OT", "MR"], True),  # ModalitiesInStudy: any of any
        ("IS", "2", [2], True),
        ("IS", "2", [3], False),
    ],
)
def test_matching(vr: str, query: str, stored: list[object], hit: bool) -> None:
    assert Term.parse("Key", vr, query).matches(stored) is hit


@pytest.mark.parametrize(
    ("vr", "query"),
    [
        ("DA", "20250101-20240101"),  # ends before it starts
        ("DA", "2024-01-01"),
        ("DA", "-"),
        ("DA", "yesterday"),
        ("TM", "25:00"),
        ("UI", "1.2.abc"),
        ("UI", "1." + "2" * 70),
        ("IS", "two"),
    ],
)
def test_refused(vr: str, query: str) -> None:
    with pytest.raises(InvalidQueryError, match="Key"):
        Term.parse("Key", vr, query)


def test_wildcards_only_where_the_vr_has_them() -> None:
    """A ``*`` in a date is not a wildcard: it is refused, not silently matched."""
    with pytest.raises(InvalidQueryError):
        Term.parse("StudyDate", "DA", "2024*")
