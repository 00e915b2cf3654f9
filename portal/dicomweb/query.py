"""A QIDO-RS request, parsed and answered: keys, includefield, paging, warnings (PS3.18 8.3.4).

The router only hands over the query string and the path's UIDs; here the keys become
``gateway.matching`` terms (a bad key or value is a 400 naming it), the search runs on the
caller's visible set only (``gateway.accounts.facts.visible_studies``, after
``portal.authz.authorize`` with ``Action.SEARCH``), and the records are rendered by
``portal.dicomweb.dicomjson`` with the return keys the level requires plus the matching and
included ones. A study or series named in the path that the caller may not see is the 404 an
unknown UID gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.access import Action
from gateway.accounts.facts import visible_studies
from gateway.matching import InvalidQueryError, Term
from gateway.qido_search import LEVEL_KEYS, Attributes, QidoPage, QidoQuery, QidoSearch
from gateway.search import Visible
from gateway.service import Gateway
from portal.authz import authorize
from portal.deps import Caller
from portal.dicomweb import dicomjson
from portal.problems import NOT_FOUND_DETAIL, ProblemError

#: Results per page when the client sets no ``limit`` (and the most it may ask for).
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
SERVICE = "ztbridge"
WARN_CUT = f'299 {SERVICE} "There are additional results that can be requested"'
WARN_FUZZY = (
    f'299 {SERVICE} "The fuzzymatching parameter is not supported.'
    ' Only literal matching has been performed."'
)
_CONTROL = frozenset({"limit", "offset", "fuzzymatching", "includefield"})
_EXTRA_KEYS = {
    # keys of the result a client may name in includefield, besides the matchable ones
    "study": frozenset({"InstanceAvailability", "RetrieveURL", "TimezoneOffsetFromUTC"}),
    "series": frozenset(
        {
            "InstanceAvailability", "RetrieveURL", "TimezoneOffsetFromUTC",
            "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
            "RequestAttributesSequence",
        }
    ),
    "instance": frozenset({"InstanceAvailability", "RetrieveURL", "TimezoneOffsetFromUTC"}),
}  # fmt: skip


@dataclass(frozen=True)
class Scope:
    """What the path names: the level searched, and the study/series it is inside."""

    level: str  # "study" | "series" | "instance"
    study_uid: str | None = None
    series_uid: str | None = None


@dataclass
class Answer:
    """The rendered page and the Warning header values to send with it."""

    body: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Parsed:
    """The request's query: terms, return keys, page, and what to warn about."""

    query: QidoQuery
    include: frozenset[str]
    include_all: bool
    warnings: tuple[str, ...]


def _bad(detail: str, key: str) -> ProblemError:
    return ProblemError("invalid-query", detail, key=key)


def _int(name: str, raw: str, default: int, top: int) -> int:
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name}: {raw!r} is not a whole number", name) from None
    if value < 0:
        raise _bad(f"{name}: must not be negative", name)
    return min(value, top)


def parse(items: Sequence[tuple[str, str]], scope: Scope) -> Parsed:
    """The query string's pairs as a search; ``ProblemError`` (400) naming a bad key."""
    level_keys = LEVEL_KEYS[scope.level]
    terms: dict[str, Term] = {}
    include: set[str] = set()
    include_all = False
    ignored: list[str] = []
    limit, offset, fuzzy = DEFAULT_LIMIT, 0, False
    for name, raw in items:
        if name == "limit":
            limit = _int(name, raw, DEFAULT_LIMIT, MAX_LIMIT)
            continue
        if name == "offset":
            offset = _int(name, raw, 0, 1 << 31)
            continue
        if name == "fuzzymatching":
            if raw.lower() not in ("true", "false"):
                raise _bad(f"fuzzymatching: {raw!r} is neither true nor false", name)
            fuzzy = raw.lower() == "true"
            continue
        if name == "includefield":
            for part in raw.split(","):
                part = part.strip()
                if not part:
                    continue
                if part == "all":
                    include_all = True
                    continue
                kw = dicomjson.keyword_of(part)
                if kw is None:
                    raise _bad(f"includefield: {part!r} is not a DICOM attribute", name)
                include.add(kw)
            continue
        kw = dicomjson.keyword_of(name)
        if kw is None:
            raise _bad(f"{name!r} is not a query key (a DICOM keyword or tag)", name)
        if kw in terms:
            raise _bad(f"{kw} is given twice", name)
        if kw not in level_keys:
            ignored.append(kw)
            continue
        try:
            terms[kw] = Term.parse(kw, dicomjson.vr_of(kw), raw)
        except InvalidQueryError as e:
            raise _bad(str(e), name) from e
    warnings = []
    if fuzzy:
        warnings.append(WARN_FUZZY)
    if ignored:
        names = ", ".join(sorted(set(ignored)))
        warnings.append(
            f'299 {SERVICE} "The following query keys are not supported at this level and'
            f' were ignored: {names}"'
        )
    query = QidoQuery(terms, limit, offset, scope.study_uid, scope.series_uid)
    return Parsed(query, frozenset(include), include_all, tuple(warnings))


def return_keys(scope: Scope, parsed: Parsed) -> set[str]:
    """The keys each result carries: required for the level, matched, included."""
    keys: set[str] = set()
    if scope.level == "study" or scope.study_uid is None:
        keys |= set(dicomjson.STUDY_RETURN)
    else:
        keys.add("StudyInstanceUID")
    if scope.level in ("series", "instance"):
        if scope.level == "series" or scope.series_uid is None:
            keys |= set(dicomjson.SERIES_RETURN)
        else:
            keys.add("SeriesInstanceUID")
    if scope.level == "instance":
        keys |= set(dicomjson.INSTANCE_RETURN)
    keys |= set(parsed.query.terms)
    allowed = LEVEL_KEYS[scope.level] | _EXTRA_KEYS[scope.level]
    keys |= parsed.include & allowed
    if parsed.include_all:
        keys |= allowed
    return keys


def _urls(attrs: Attributes, level: str, root: str) -> Attributes:
    study = attrs["StudyInstanceUID"][0]
    url = f"{root}/studies/{study}"
    if level in ("series", "instance"):
        url += f"/series/{attrs['SeriesInstanceUID'][0]}"
    if level == "instance":
        url += f"/instances/{attrs['SOPInstanceUID'][0]}"
    return {**attrs, "RetrieveURL": [url], "InstanceAvailability": ["ONLINE"]}


def _visible(gw: Gateway, caller: Caller) -> Visible:
    authorize(gw, caller, Action.SEARCH)
    return Visible(study_uids=frozenset(visible_studies(gw.db, caller.view, gw.clock.now())))


def _searcher(gw: Gateway) -> QidoSearch:
    cipher = gw.db.cipher
    assert cipher is not None  # the gateway's index is always opened with its key
    return QidoSearch(gw.db, cipher)


def _check_scope(search: QidoSearch, scope: Scope, visible: Visible) -> None:
    """A study or series in the path must exist and be visible: else the unknown UID's 404."""
    if scope.study_uid is None:
        return
    if scope.study_uid not in visible.study_uids:
        raise ProblemError("not-found", NOT_FOUND_DETAIL)
    if scope.series_uid is not None:
        found = search.series(
            QidoQuery(limit=1, study_uid=scope.study_uid, series_uid=scope.series_uid), visible
        )
        if not found.total:
            raise ProblemError("not-found", NOT_FOUND_DETAIL)


def search(
    gw: Gateway, caller: Caller, scope: Scope, items: Sequence[tuple[str, str]], root: str
) -> Answer:
    """One QIDO-RS request; ``root`` is the DICOMweb base URL for RetrieveURL."""
    parsed = parse(items, scope)
    visible = _visible(gw, caller)
    qido = _searcher(gw)
    _check_scope(qido, scope, visible)
    run = {"study": qido.studies, "series": qido.series, "instance": qido.instances}
    page: QidoPage = run[scope.level](parsed.query, visible)
    keys = return_keys(scope, parsed)
    body = [dicomjson.render(_urls(a, scope.level, root), keys) for a in page.records]
    warnings = list(parsed.warnings)
    if parsed.query.offset + len(page.records) < page.total:
        warnings.append(WARN_CUT)
    return Answer(body, warnings)
