"""QIDO-RS against the real peers: dicomweb-client searching ztbridge, the same queries on
Orthanc 1.10 with its DICOMweb plugin 1.7 holding the same files (the shared world of
tests/dicomweb/conftest.py).

Each comparison checks three things: ztbridge finds exactly what the world says the caller
may see; Orthanc (which sees everything) finds the same records once its answer is cut down
to that; the standard attributes of PS3.18 Table 6.7.1-2/-2a/-2b agree value for value.
Where Orthanc departs from the standard, a test named ``test_deviation_*`` asserts both what
Orthanc does and what ztbridge does instead, and says which one PS3.18 asks for. The QIDO
cases of Orthanc's own DICOMweb integration tests (orthanc-tests ``Plugins/DicomWeb/Run.py``:
limit/offset, empty values per F.2.5, numbers as JSON numbers, PN groups, Accept variants)
are ported as ``test_orthanc_case_*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.dicomweb.conftest import World
from tests.dicomweb.world import ANN, BOB, CYD, DAI, NOBODY, WrittenStudy

pytestmark = pytest.mark.integration

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
#: PS3.18 Table 6.7.1-2 (study), -2a (series), -2b (instance): the attributes both servers
#: return by default and that must be equal.
STUDY_STANDARD = (
    "00080020", "00080030", "00080050", "00080061", "00080090", "00100010", "00100020",
    "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208",
)  # fmt: skip
SERIES_STANDARD = ("00080060", "0008103E", "00200011", "0020000E", "00201209")
INSTANCE_STANDARD = (
    "00080016", "00080018", "00200013", "00280010", "00280011", "00280100", "00280008",
)  # fmt: skip
#: Return keys PS3.18 requires even when empty (F.2.5: present with a "vr", no "Value").
STUDY_REQUIRED = (
    "00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00080201",
    "00081190", "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010",
    "00201206", "00201208",
)  # fmt: skip
SERIES_REQUIRED = (
    "00080060", "0008103E", "00200011", "0020000E", "00201209", "00400244", "00400245",
    "00080201", "00081190",
)  # fmt: skip
INSTANCE_REQUIRED = (
    "00080016", "00080018", "00080056", "00080201", "00081190", "00200013", "00280010",
    "00280011", "00280100", "00280008",
)  # fmt: skip


def uids(results: Iterable[dict[str, Any]], tag: str = STUDY_UID) -> set[str]:
    """The UIDs (of ``tag``) of a result list."""
    return {r[tag]["Value"][0] for r in results}


def value(result: dict[str, Any], tag: str) -> Any:
    """An attribute's Value list (None when absent or empty)."""
    element = result.get(tag)
    return None if element is None else element.get("Value")


def study_uids(studies: Iterable[WrittenStudy]) -> set[str]:
    """The Study UIDs of world studies."""
    return {s.uid for s in studies}


def study_of(world: World, key: str) -> WrittenStudy:
    """A world study by its key (``ann_ct``...)."""
    return world.studies[key]


def agree(
    ours: list[dict[str, Any]], theirs: list[dict[str, Any]], tags: Iterable[str], key: str
) -> None:
    """Every record of ``ours`` has an Orthanc twin (by ``key``) with equal values of ``tags``."""
    by_uid = {r[key]["Value"][0]: r for r in theirs}
    for r in ours:
        twin = by_uid[r[key]["Value"][0]]
        for tag in tags:
            assert value(r, tag) == value(twin, tag), (tag, r.get(tag), twin.get(tag))


def orthanc(world: World, path: str, filters: dict[str, Any] | None = None) -> list[Any]:
    """A QIDO search on Orthanc with ``*``, ``?``, ``^`` and ``,`` left unencoded: Orthanc
    does not percent-decode query values (test_deviation_percent_decoding), so the
    comparisons send what it understands; dicomweb-client would send ``%2A`` for ``*``."""
    query = "&".join(
        f"{quote(k)}={quote(str(v), safe='*?^,-')}" for k, v in (filters or {}).items()
    )
    s = requests.Session()
    s.trust_env = False
    r = s.get(f"{world.orthanc.dicomweb_url}{path}?{query}", timeout=60)
    assert r.status_code == 200, r.text
    found: list[Any] = r.json()
    return found


def expected(world: World, user: str, keep: Any) -> set[str]:
    """Study UIDs the world says ``user`` finds with a query that keeps ``keep(study)``."""
    return {s.uid for s in world.visible_to(user) if keep(s)}


# --- studies: ztbridge = the world's answer = Orthanc's, cut to what the caller may see ------

STUDY_QUERIES: list[tuple[str, dict[str, Any], Any]] = [
    ("all", {}, lambda s: True),
    ("PatientID", {"PatientID": ANN.patient_id}, lambda s: s.spec.person is ANN),
    ("PatientID-tag", {"00100020": CYD.patient_id}, lambda s: s.spec.person is CYD),
    ("PatientName-M*", {"PatientName": "M*"}, lambda s: s.spec.person.name.startswith("M")),
    ("PatientName-de*", {"PatientName": "de*"}, lambda s: s.spec.person is CYD),
    ("PatientName-*Cruz*", {"PatientName": "*Cruz*"}, lambda s: s.spec.person is CYD),
    ("StudyDate-single", {"StudyDate": "20240115"}, lambda s: s.spec.date == "20240115"),
    (
        "StudyDate-closed",
        {"StudyDate": "20240101-20241231"},
        lambda s: "20240101" <= s.spec.date <= "20241231" and s.spec.date != "",
    ),
    # "-20241231" differs on purpose: test_deviation_open_date_range_excludes_empty_dates
    ("Modalities-MR", {"ModalitiesInStudy": "MR"}, lambda s: "MR" in s.modalities),
    ("Modalities-OT", {"ModalitiesInStudy": "OT"}, lambda s: "OT" in s.modalities),
    ("Accession", {"AccessionNumber": "ACCA2"}, lambda s: s.spec.accession == "ACCA2"),
    ("Accession-wild", {"AccessionNumber": "ACCA*"}, lambda s: s.spec.accession.startswith("ACCA")),
    ("StudyID", {"StudyID": "ANN_CT"}, lambda s: s.spec.key == "ann_ct"),
    ("Description", {"StudyDescription": "CT*"}, lambda s: s.spec.description.startswith("CT")),
    ("Sex", {"PatientSex": "F"}, lambda s: s.spec.person.sex == "F"),
]


@pytest.mark.parametrize("user", ["ann", "drlee"])
@pytest.mark.parametrize(
    ("name", "filters", "keep"), STUDY_QUERIES, ids=[q[0] for q in STUDY_QUERIES]
)
def test_studies_match_orthanc(
    world: World, user: str, name: str, filters: dict[str, Any], keep: Any
) -> None:
    ours = world.client(user).search_for_studies(search_filters=filters)
    theirs = orthanc(world, "/studies", filters)
    want = expected(world, user, keep)
    assert uids(ours) == want
    assert uids(theirs) & study_uids(world.visible_to(user)) == want
    assert not uids(ours) & study_uids(world.hidden_from(user))
    agree(ours, theirs, STUDY_STANDARD, STUDY_UID)


def test_study_uid_list_with_commas(world: World) -> None:
    """UID list matching, comma-separated as PS3.18 8.3.4.1 and dicomweb-client send it."""
    a, b, bob = study_of(world, "ann_ct"), study_of(world, "ann_mr"), study_of(world, "bob_ct")
    filters = {"StudyInstanceUID": ",".join([a.uid, b.uid, bob.uid])}
    ours = world.client("ann").search_for_studies(search_filters=filters)
    theirs = world.orthanc_client().search_for_studies(search_filters=filters)
    assert uids(ours) == {a.uid, b.uid}  # bob's is never found, even by its UID
    assert uids(theirs) == {a.uid, b.uid, bob.uid}
    agree(ours, theirs, STUDY_STANDARD, STUDY_UID)


def test_required_return_keys_and_counts(world: World) -> None:
    for r in world.client("drlee").search_for_studies():
        assert set(STUDY_REQUIRED) <= set(r), set(STUDY_REQUIRED) - set(r)
        s = next(s for s in world.studies.values() if s.uid == value(r, STUDY_UID)[0])
        assert value(r, "00201206") == [len(s.series)]
        assert value(r, "00201208") == [s.num_instances]
        assert set(value(r, "00080061")) == s.modalities
        assert value(r, "00081190")[0] == f"{world.dicomweb_url}/studies/{s.uid}"  # public_url
        assert value(r, "00080056") == ["ONLINE"]


def test_includefield(world: World) -> None:
    """includefield by keyword and by tag adds that key; ``all`` adds every study key."""
    c = world.client("ann")
    plain = c.search_for_studies(search_filters={"PatientID": ANN.patient_id})
    assert all("00100021" not in r for r in plain)  # IssuerOfPatientID is not a default key
    by_kw = c.search_for_studies(
        search_filters={"PatientID": ANN.patient_id}, fields=["IssuerOfPatientID"]
    )
    by_tag = c.search_for_studies(search_filters={"PatientID": ANN.patient_id}, fields=["00100021"])
    every = c.search_for_studies(
        search_filters={"PatientID": ANN.patient_id, "includefield": "all"}
    )
    for results in (by_kw, by_tag, every):
        assert results and all(r["00100021"] == {"vr": "LO"} for r in results)


# --- paging -----------------------------------------------------------------------------------


def test_limit_offset_warning_and_get_remaining(world: World) -> None:
    """Pages of 2 cover the doctor's studies once each; the cut page says so in Warning;
    dicomweb-client's get_remaining reads to the empty page (a 204)."""
    want = study_uids(world.visible_to("drlee"))
    s = world.http("drlee")
    seen: list[str] = []
    offset = 0
    while True:
        r = s.get(f"{world.dicomweb_url}/studies", params={"limit": 2, "offset": offset})
        if r.status_code == 204:
            break
        assert r.status_code == 200
        page = r.json()
        assert 1 <= len(page) <= 2
        more = offset + len(page) < len(want)
        assert ("There are additional results" in r.headers.get("Warning", "")) == more
        seen += [p[STUDY_UID]["Value"][0] for p in page]
        offset += len(page)
    assert sorted(seen) == sorted(want)
    c = world.client("drlee")
    assert uids(c.search_for_studies(limit=2, get_remaining=True)) == want
    assert c.search_for_studies(offset=len(want)) == []


def test_orthanc_case_limit_offset(world: World) -> None:
    """orthanc-tests test_bitbucket_issue_53: limit=1 and limit=1&offset=1 give two
    different studies, both of the full list."""
    for client, universe in (
        (world.client("ann"), study_uids(world.visible_to("ann"))),
        (world.orthanc_client(), study_uids(world.studies.values())),
    ):
        first = client.search_for_studies(limit=1)
        second = client.search_for_studies(limit=1, offset=1)
        assert len(first) == len(second) == 1
        assert uids(first) | uids(second) <= universe
        assert uids(first) != uids(second)


# --- series and instances ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ann_ct", "ann_mf", "cyd_mr"])
def test_series_of_a_study_match_orthanc(world: World, key: str) -> None:
    s = study_of(world, key)
    ours = world.client("drlee").search_for_series(study_instance_uid=s.uid)
    theirs = world.orthanc_client().search_for_series(study_instance_uid=s.uid)
    assert uids(ours, SERIES_UID) == uids(theirs, SERIES_UID) == {x.uid for x in s.series}
    agree(ours, theirs, SERIES_STANDARD, SERIES_UID)
    for r in ours:
        assert set(SERIES_REQUIRED) <= set(r), set(SERIES_REQUIRED) - set(r)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"Modality": "MR"}, lambda st, se: se.spec.modality == "MR"),
        ({"Modality": "CT", "SeriesNumber": "2"}, lambda st, se: se.spec.number == 2),
        ({"SeriesDescription": "T*"}, lambda st, se: se.spec.description.startswith("T")),
        ({"PatientID": CYD.patient_id}, lambda st, se: st.spec.person is CYD),
    ],
)
def test_all_series_match_orthanc(world: World, filters: dict[str, Any], keep: Any) -> None:
    ours = world.client("drlee").search_for_series(search_filters=filters)
    theirs = orthanc(world, "/series", filters)
    want = {se.uid for st in world.visible_to("drlee") for se in st.series if keep(st, se)}
    visible = {se.uid for st in world.visible_to("drlee") for se in st.series}
    assert uids(ours, SERIES_UID) == want
    assert uids(theirs, SERIES_UID) & visible == want
    agree(ours, theirs, SERIES_STANDARD, SERIES_UID)


def test_instances_match_orthanc(world: World) -> None:
    for key in ("ann_ct", "ann_mf"):
        s = study_of(world, key)
        for se in s.series:
            ours = world.client("ann").search_for_instances(
                study_instance_uid=s.uid, series_instance_uid=se.uid
            )
            theirs = world.orthanc_client().search_for_instances(
                study_instance_uid=s.uid, series_instance_uid=se.uid
            )
            assert uids(ours, SOP_UID) == uids(theirs, SOP_UID) == set(se.sop_uids)
            agree(ours, theirs, INSTANCE_STANDARD, SOP_UID)
            for r in ours:
                assert set(INSTANCE_REQUIRED) <= set(r), set(INSTANCE_REQUIRED) - set(r)
    mf = world.client("ann").search_for_instances(search_filters={"NumberOfFrames": "8"})
    assert uids(mf, SOP_UID) == set(study_of(world, "ann_mf").series[0].sop_uids)


def test_all_instances_by_sop_class_and_study_keys(world: World) -> None:
    mr = "1.2.840.10008.5.1.4.1.1.4"
    ours = world.client("drlee").search_for_instances(search_filters={"SOPClassUID": mr})
    want = {
        u
        for st in world.visible_to("drlee")
        for se in st.series
        if se.spec.modality == "MR"
        for u in se.sop_uids
    }
    assert uids(ours, SOP_UID) == want
    theirs = orthanc(world, "/instances", {"SOPClassUID": mr})
    assert uids(ours, SOP_UID) <= uids(theirs, SOP_UID)
    agree(ours, theirs, INSTANCE_STANDARD, SOP_UID)
    # a study-level key on an instance search, with the study's counts in every record
    by_pid = world.client("ann").search_for_instances(search_filters={"PatientID": ANN.patient_id})
    assert uids(by_pid, SOP_UID) == {
        u for st in world.visible_to("ann") for se in st.series for u in se.sop_uids
    }
    assert all("00201208" in r and "00201209" in r for r in by_pid)


# --- where Orthanc 1.10 + DICOMweb 1.7 departs from PS3.18 ------------------------------------


def _raw(
    world: World, user: str | None, path: str, **params: Any
) -> tuple[requests.Response, requests.Response]:
    ours = world.http(user).get(f"{world.dicomweb_url}{path}", params=params, timeout=60)
    s = requests.Session()
    s.trust_env = False
    theirs = s.get(f"{world.orthanc.dicomweb_url}{path}", params=params, timeout=60)
    return ours, theirs


def test_deviation_no_match_is_204(world: World) -> None:
    """PS3.18 10.6.3.2: no match is 204 No Content; Orthanc answers 200 with []."""
    ours, theirs = _raw(world, "ann", "/studies", PatientID="NO-SUCH-PATIENT")
    assert ours.status_code == 204 and ours.content == b""
    assert theirs.status_code == 200 and theirs.json() == []


def test_deviation_percent_decoding(world: World) -> None:
    """Query values arrive percent-encoded (dicomweb-client sends ``M%2A`` for ``M*``, UTF-8
    bytes and ``+`` for spaces, as RFC 3986 asks): ztbridge matches the decoded value;
    Orthanc compares the undecoded text and finds nothing."""
    for name, user, keep in (
        ("Müller^Jörg", "ann", lambda s: s.spec.person is ANN),
        ("De La Cruz^María José", "drlee", lambda s: s.spec.person is CYD),
        ("M*", "ann", lambda s: s.spec.person is ANN),
        ("de la*", "drlee", lambda s: s.spec.person is CYD),
    ):
        ours = world.client(user).search_for_studies(search_filters={"PatientName": name})
        theirs = world.orthanc_client().search_for_studies(search_filters={"PatientName": name})
        assert uids(ours) == expected(world, user, keep) != set()
        assert theirs == []


def test_deviation_question_mark_is_one_character(world: World) -> None:
    """C.2.2.2.4: ``?`` matches one character; "M?ller" must find Müller (ü is 2 bytes in
    UTF-8). Orthanc, sent the ``?`` unencoded, finds nothing for the accented name, while it
    does honour ``?`` over an ASCII one ("N?body*" finds the unlinked study)."""
    for pattern in ("M?ller^J?rg", "M?ller*"):
        ours = world.client("ann").search_for_studies(search_filters={"PatientName": pattern})
        assert uids(ours) == study_uids(world.visible_to("ann"))
        assert orthanc(world, "/studies", {"PatientName": pattern}) == []
    control = orthanc(world, "/studies", {"PatientName": "N?body*"})
    assert uids(control) == {study_of(world, "nobody_ct").uid}


def test_deviation_backslash_uid_list(world: World) -> None:
    """UID lists joined with a backslash (as OHIF and C-FIND send them) match each UID;
    Orthanc takes the whole text as one UID and finds nothing."""
    a, b = study_of(world, "ann_ct"), study_of(world, "ann_mr")
    ours, theirs = _raw(world, "ann", "/studies", StudyInstanceUID=f"{a.uid}\\{b.uid}")
    assert ours.status_code == 200 and uids(ours.json()) == {a.uid, b.uid}
    assert theirs.status_code == 200 and theirs.json() == []


def test_deviation_open_date_range_excludes_empty_dates(world: World) -> None:
    """C.2.2.2.5: a range never matches an empty value (only universal matching does).
    Orthanc's range open at its start (``-20241231``) matches the study without StudyDate;
    open at its end (``20000101-``) it gets it right."""
    nodate = study_of(world, "ann_nodate")
    c = world.client("ann")
    for text in ("-20241231", "20000101-"):
        ours = c.search_for_studies(search_filters={"StudyDate": text})
        assert nodate.uid not in uids(ours) and uids(ours)
    assert nodate.uid in uids(orthanc(world, "/studies", {"StudyDate": "-20241231"}))
    assert nodate.uid not in uids(orthanc(world, "/studies", {"StudyDate": "20000101-"}))
    universal = c.search_for_studies(search_filters={"StudyDate": ""})
    assert nodate.uid in uids(universal)


def test_deviation_required_empty_keys(world: World) -> None:
    """F.2.5 / Table 6.7.1-2: required return keys are present even when empty
    (TimezoneOffsetFromUTC, which no file of the world carries); Orthanc leaves them out."""
    dai = study_of(world, "dai_mr")
    ours = world.client("drlee").search_for_studies(search_filters={"StudyInstanceUID": dai.uid})
    theirs = orthanc(world, "/studies", {"StudyInstanceUID": dai.uid})
    assert ours[0]["00080201"] == {"vr": "SH"} and "00080201" not in theirs[0]
    assert ours[0]["00080050"] == {"vr": "SH"}  # empty AccessionNumber (orthanc-tests #111)
    assert theirs[0]["00080050"] == {"vr": "SH"}  # there Orthanc agrees


def test_deviation_study_counts_in_series_results(world: World) -> None:
    """Searching all series returns the study's attributes (PS3.18 10.6.3.3.2), its counts
    included; Orthanc's series results have no NumberOfStudyRelatedInstances."""
    s = study_of(world, "ann_ct")
    ours = world.client("ann").search_for_series(search_filters={"StudyInstanceUID": s.uid})
    theirs = orthanc(world, "/series", {"StudyInstanceUID": s.uid})
    assert ours and all(value(r, "00201208") == [s.num_instances] for r in ours)
    assert ours and all(value(r, "00201206") == [len(s.series)] for r in ours)
    assert theirs and all("00201208" not in r for r in theirs)


def test_deviation_includefield_all(world: World) -> None:
    """includefield=all returns every attribute the level knows; Orthanc ignores it (here:
    SeriesDate and the study's counts are missing from its instance results)."""
    s = study_of(world, "ann_ct")
    se = s.series[0]
    path = f"/studies/{s.uid}/series/{se.uid}/instances"
    ours, theirs = _raw(world, "ann", path, includefield="all")
    assert ours.status_code == theirs.status_code == 200
    for r in ours.json():
        assert value(r, "00080021") == ["20240115"] and value(r, "00201208") == [s.num_instances]
        assert value(r, "00081030") == ["CT CHEST"] and value(r, "00280002") == [1]
    assert all("00080021" not in r and "00201208" not in r for r in theirs.json())


def test_orthanc_case_iso2022_name_groups(world: World) -> None:
    """orthanc-tests test_bitbucket_issue_113 (PN groups): a name in ISO 2022 IR 87 keeps its
    ideographic and phonetic groups. Orthanc 1.10.1 keeps them too for this C-STORE'd file
    (the loss the issue lists was not seen with IR 87 alone); ztbridge also matches a name
    by any group (C.2.2.2.1), which Orthanc's percent-encoded query cannot."""
    dai = study_of(world, "dai_mr")
    ours = world.client("drlee").search_for_studies(search_filters={"PatientID": DAI.patient_id})
    theirs = orthanc(world, "/studies", {"PatientID": DAI.patient_id})
    assert value(ours[0], "00100010") == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    assert value(theirs[0], "00100010") == value(ours[0], "00100010")
    by_kanji = world.client("drlee").search_for_studies(search_filters={"PatientName": "山田*"})
    assert uids(by_kanji) == {dai.uid}


def test_orthanc_case_numbers_are_json_numbers(world: World) -> None:
    """orthanc-tests test_bitbucket_issue_112: IS values (the counts) are JSON numbers."""
    for r in world.client("ann").search_for_studies():
        assert r["00201208"]["vr"] == "IS" and isinstance(value(r, "00201208")[0], int)


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/dicom+json", 200),
        ("application/json", 200),
        ("*/*", 200),
        ("application/dicom+json, multipart/related; type=application/octet-stream", 200),
        ("application/dicom+xml", 406),
        ("application/nope", 406),
    ],
)
def test_orthanc_case_accept(world: World, accept: str, status: int) -> None:
    """orthanc-tests test_server_get / test_wado_hierarchy: Accept variants (DICOM XML is
    not offered here: 406 problem+json, where Orthanc answers multipart XML)."""
    r = world.http("ann").get(
        f"{world.dicomweb_url}/studies", headers={"Accept": accept}, timeout=60
    )
    assert r.status_code == status, r.text
    if status == 200:
        assert r.headers["content-type"].startswith("application/dicom+json")
    else:
        assert r.headers["content-type"] == "application/problem+json"


def test_fuzzymatching_warning(world: World) -> None:
    r = world.http("ann").get(
        f"{world.dicomweb_url}/studies", params={"fuzzymatching": "true", "PatientName": "m*"}
    )
    assert r.status_code == 200
    assert "fuzzymatching parameter is not supported" in r.headers["Warning"]


# --- bad queries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"NoSuchKeyword": "1"}, "NoSuchKeyword"),
        ({"StudyDate": "20250101-20240101"}, "StudyDate"),
        ({"StudyDate": "2024-01-01"}, "StudyDate"),
        ({"StudyInstanceUID": "not-a-uid"}, "StudyInstanceUID"),
        ({"limit": "many"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"includefield": "NoSuchKeyword"}, "includefield"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
    ],
)
def test_bad_query_is_400_naming_it(world: World, params: dict[str, str], named: str) -> None:
    r = world.http("ann").get(f"{world.dicomweb_url}/studies", params=params, timeout=60)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "/problems/invalid-query" and named in body["detail"]


# --- who sees what -------------------------------------------------------------------------

ENDPOINTS = ["/studies", "/series", "/instances"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bob_never_sees_anyone_else(world: World, path: str) -> None:
    """By UID, by Patient ID, by wildcard, by date, in counts: only bob's own study."""
    s = world.http("bob")
    mine = study_of(world, "bob_ct")
    others = world.hidden_from("bob")
    queries: list[dict[str, str]] = [
        {},
        {"PatientName": "*"},
        {"PatientName": "M*"},
        {"PatientName": "Müller*"},
        {"StudyDate": "20240115"},
        {"ModalitiesInStudy": "CT"} if path == "/studies" else {"Modality": "CT"},
        {"StudyInstanceUID": ",".join(o.uid for o in others)},
        {"PatientID": ANN.patient_id},
        {"PatientID": NOBODY.patient_id},
        {"AccessionNumber": "ACCA1"},
    ]
    for q in queries:
        r = s.get(f"{world.dicomweb_url}{path}", params=q, timeout=60)
        assert r.status_code in (200, 204), r.text
        found = r.json() if r.status_code == 200 else []
        assert uids(found) <= {mine.uid}, q
        for rec in found:
            assert value(rec, "00100020") == [BOB.patient_id]
            if "00201208" in rec:
                assert value(rec, "00201208") == [mine.num_instances]


def test_another_users_study_is_an_unknown_uid(world: World) -> None:
    """/studies/{s}/series and .../instances of a study bob may not see: the very 404 of a
    UID that does not exist."""
    ann_ct = study_of(world, "ann_ct")
    s = world.http("bob")
    unknown = "1.2.3.4.5.6.7.8.9"
    for path in (
        "/studies/{}/series",
        "/studies/{}/instances",
        "/studies/{}/series/" + ann_ct.series[0].uid + "/instances",
    ):
        hidden = s.get(world.dicomweb_url + path.format(ann_ct.uid), timeout=60)
        missing = s.get(world.dicomweb_url + path.format(unknown), timeout=60)
        assert hidden.status_code == missing.status_code == 404
        strip = lambda r: {k: v for k, v in r.json().items() if k != "instance"}  # noqa: E731
        assert strip(hidden) == strip(missing)
    # a visible study, a series of another study: 404 too
    mine = study_of(world, "bob_ct")
    r = s.get(f"{world.dicomweb_url}/studies/{mine.uid}/series/{ann_ct.series[0].uid}/instances")
    assert r.status_code == 404


def test_doctor_lookup_by_patient_id_shows_only_shared(world: World) -> None:
    """A lookup of a patient's other studies by PatientID (as OHIF's study list does) returns
    only what the doctor may see: ann's unshared study stays out, counts and all."""
    ours = world.client("drlee").search_for_studies(search_filters={"PatientID": ANN.patient_id})
    shared = {
        s.uid
        for s in world.studies.values()
        if s.spec.person is ANN and "drlee" in s.spec.shared_with
    }
    assert uids(ours) == shared
    assert study_of(world, "ann_nodate").uid not in uids(ours)


@pytest.mark.parametrize(
    "path",
    [
        "/studies",
        "/series",
        "/instances",
        "/studies/1.2.3/series",
        "/studies/1.2.3/series/1.2.4/instances",
    ],
)
def test_no_credentials_is_401(world: World, path: str) -> None:
    r = world.session().get(f"{world.dicomweb_url}{path}", timeout=60)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    bad = world.session().get(
        f"{world.dicomweb_url}{path}", headers={"Authorization": "Bearer nope"}, timeout=60
    )
    assert bad.status_code == 401


def test_cookie_works_for_get(world: World) -> None:
    s = world.cookie_session("bob")
    r = s.get(f"{world.dicomweb_url}/studies", timeout=60)
    assert r.status_code == 200
    assert uids(r.json()) == {study_of(world, "bob_ct").uid}


def test_technologist_may_not_search(world: World) -> None:
    """QIDO is for patients and doctors (Action.SEARCH): a technologist stores, never lists."""
    r = world.http("tess").get(f"{world.dicomweb_url}/studies", timeout=60)
    assert r.status_code == 403


def test_cors_off_by_default(world: World) -> None:
    r = world.http("ann").get(
        f"{world.dicomweb_url}/studies", headers={"Origin": "https://viewer.example"}, timeout=60
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = world.session().options(
        f"{world.dicomweb_url}/studies",
        headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET"},
        timeout=60,
    )
    assert "access-control-allow-origin" not in pre.headers
