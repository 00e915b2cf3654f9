"""STOW-RS (PS3.18 10.5) against a real portal server: HTTPS on a free port, the connection
guard in front, a real gateway (index, store, embedded chain) behind it, and
``dicomweb-client`` as the client.

One world per module (``stow_world``, its own: its limits are small, and the session-wide
``world`` of tests/dicomweb/conftest.py must keep its data as it is): a technologist and an
admin who may upload, a patient whose Patient ID is linked (so what is uploaded for that ID
is hers, exactly as for C-STORE), a doctor, and a second technologist who logs in with a
browser session (a cookie never authorizes a store). Limits are small so the 413 cases send
little: a body of 6 MiB at most (``portal.max_body_mb``), an instance of 3 MiB
(``ingest.max_instance_mb``).

Ported from Orthanc's ``Plugins/DicomWeb/Run.py`` (``test_stow``, ``test_stow_errors``):
a stored instance is answered with SpecificCharacterSet, the study's RetrieveURL and one
ReferencedSOPSequence item (class, instance, RetrieveURL ending in .../series/S/instances/I,
VR UR); a second identical store is answered the same and stores nothing new; without
failures there is no FailedSOPSequence (as Orthanc's plugin since 1.19); an instance sent to
a study that is not its own is refused and nothing is stored; a file that is not DICOM and an
instance whose identifying tags are missing are 400. Where ztbridge answers differently, on
purpose, the test says so (``DEVIATION``).
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pydicom
import pyotp
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.config import settings as pydicom_settings
from sqlalchemy import func, select

from gateway.accounts.links import link_patient
from gateway.dataset import split_part10
from gateway.index.models import instances
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from portal.server import PortalServer
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import free_port
from tests.support.tls import self_signed

CHEAP = {"argon2_memory_kib": 8, "argon2_time_cost": 1, "argon2_parallelism": 1}
PASSWORD = "correct horse battery staple"
BODY_MB = 6
INSTANCE_MB = 3
ANN_PID = "PID-STOW-ANN"
BOB_PID = "PID-STOW-BOB"
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@dataclass
class StowWorld:
    gw: Gateway
    base: str  # https://127.0.0.1:port
    ca: str
    tmp: Path
    tokens: dict[str, str] = field(default_factory=dict)
    cookie_session: requests.Session | None = None

    @property
    def dicomweb(self) -> str:
        return self.base + "/dicom-web"

    def client(self, user: str) -> DICOMwebClient:
        session = requests.Session()
        session.verify = self.ca
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        return DICOMwebClient(
            self.dicomweb,
            session=session,
            headers={"Authorization": f"Bearer {self.tokens[user]}"},
        )

    def post(
        self,
        body: bytes,
        *,
        user: str | None = "tech",
        path: str = "/studies",
        content_type: str | None = None,
        accept: str | None = "application/dicom+json",
        session: requests.Session | None = None,
    ) -> requests.Response:
        headers = {"Content-Type": content_type or f'{RELATED}; boundary="{BOUNDARY}"'}
        if accept is not None:
            headers["Accept"] = accept
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return (session or requests).post(
            self.dicomweb + path, data=body, headers=headers, verify=self.ca, timeout=60
        )

    def rows(self, sop_uid: str) -> int:
        """Index rows of an instance (every version)."""
        with self.gw.db.read() as conn:
            n = conn.execute(
                select(func.count()).where(instances.c.sop_instance_uid == sop_uid)
            ).scalar_one()
        return int(n)

    def audit(self, kind: str, subject: str) -> list[Any]:
        return [e for e in self.gw.audit.entries() if e.kind == kind and e.subject == subject]


RELATED = 'multipart/related; type="application/dicom"'
BOUNDARY = "stow-5f0c3a9e2b7d4e61a8c9d0b1e2f34567"  # fixed: xdist workers must collect alike


def multipart(*parts: bytes, part_type: str = "application/dicom") -> bytes:
    """A multipart/related body with CRLF line ends, as PS3.18 and RFC 2046 require."""
    out = b""
    for p in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{BOUNDARY}--".encode()


def _login_cookie(stow_world: StowWorld, username: str, secret: str) -> requests.Session:
    """A browser session (password, then TOTP) for ``username``."""
    s = requests.Session()
    s.verify = stow_world.ca
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    page = s.get(stow_world.base + "/login", headers={"accept": "text/html"})
    token = _CSRF.search(page.text)
    assert token, page.text
    r = s.post(
        stow_world.base + "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = s.get(stow_world.base + "/login/totp", headers={"accept": "text/html"})
    token = _CSRF.search(page.text)
    assert token, page.text
    r = s.post(
        stow_world.base + "/login/totp",
        data={"code": pyotp.TOTP(secret).now(), "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return s


@pytest.fixture(scope="module")
def stow_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StowWorld]:
    tmp = tmp_path_factory.mktemp("stow")
    port = free_port()
    cert, key = self_signed(tmp)
    settings = load_settings(
        home=tmp / "home",
        custodian_passphrase="p" * 20,
        accounts=CHEAP,
        ingest={"max_instance_mb": INSTANCE_MB},
        portal={
            "host": "127.0.0.1",
            "port": port,
            "tls_cert_file": cert,
            "tls_key_file": key,
            "max_body_mb": BODY_MB,
        },
    )
    gw = open_gateway(settings)
    anchoring = gw.anchoring
    assert anchoring is not None
    secrets = {}
    for name, role in (
        ("tech", "technologist"),
        ("root", "admin"),
        ("ann", "patient"),
        ("drlee", "doctor"),
        ("tech2", "technologist"),
    ):
        secrets[name] = gw.users.provision(name, role, name.title(), PASSWORD, "test").totp_secret
    link_patient(
        gw.patient_links, gw.users.get("ann"), ANN_PID, None, anchoring, None, "test", gw.audit
    )
    server = PortalServer(gw, "https")
    server.start()
    w = StowWorld(gw, f"https://127.0.0.1:{port}", str(cert), tmp)
    try:
        for name in ("tech", "root", "ann", "drlee"):
            r = requests.post(
                w.base + "/api/token",
                json={
                    "username": name,
                    "password": PASSWORD,
                    "totp": pyotp.TOTP(secrets[name]).now(),
                },
                verify=w.ca,
                timeout=30,
            )
            assert r.status_code == 200, r.text
            w.tokens[name] = r.json()["access_token"]
        w.cookie_session = _login_cookie(w, "tech2", secrets["tech2"])
        yield w
    finally:
        server.stop()
        gw.close()


def _series(stow_world: StowWorld, name: str, count: int = 2, **kw: Any) -> list[bytes]:
    s = make_ct_series(stow_world.tmp / name, count, rows=16, columns=16, seed=len(name), **kw)
    return [f.read_bytes() for f in s.files]


def _uids(content: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _with(content: bytes, **changes: str) -> bytes:
    """``content`` with data set (and, for SOPInstanceUID, file meta) values changed;
    validation off, so an invalid UID can be written."""
    ds = pydicom.dcmread(io.BytesIO(content))
    out = io.BytesIO()
    mode = pydicom_settings.writing_validation_mode
    pydicom_settings.writing_validation_mode = 0  # IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "exceeds the maximum length"
            for keyword, value in changes.items():
                setattr(ds, keyword, value)
                if keyword == "SOPInstanceUID":
                    ds.file_meta.MediaStorageSOPInstanceUID = value
            ds.save_as(out, enforce_file_format=True)
    finally:
        pydicom_settings.writing_validation_mode = mode
    return out.getvalue()


def _seq(doc: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(doc.get(tag, {}).get("Value", []))


def _value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


# -- stored through dicomweb-client --------------------------------------------------------


def test_dicomweb_client_stores_a_series_owned_by_the_linked_patient(stow_world: StowWorld) -> None:
    files = _series(stow_world, "ann-ct", 3, patient_id=ANN_PID)
    study, series, _ = _uids(files[0])
    datasets = [pydicom.dcmread(io.BytesIO(f)) for f in files]
    answer = stow_world.client("tech").store_instances(datasets)
    doc = answer.to_json_dict()
    assert doc["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert doc["00081190"]["vr"] == "UR"
    # RetrieveURLs start where the client says it reached us (its Host header);
    # dicomweb-client sends Host without the port (web.py: headers['Host'] = self.host),
    # so only the path is compared here; the raw requests below check the whole URL.
    assert urlparse(doc["00081190"]["Value"][0]).path == f"/dicom-web/studies/{study}"
    assert "00081198" not in doc  # no failure: no FailedSOPSequence (Orthanc >= 1.19 too)
    refs = _seq(doc, "00081199")
    assert len(refs) == 3
    for ds, ref in zip(datasets, refs, strict=True):
        assert _value(ref, "00081150") == ds.SOPClassUID
        assert _value(ref, "00081155") == ds.SOPInstanceUID
        assert ref["00081190"]["vr"] == "UR"
        assert _value(ref, "00081190").endswith(
            f"/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}"
        )
        assert stow_world.rows(ds.SOPInstanceUID) == 1
        stored = stow_world.audit("instance.stored", ds.SOPInstanceUID)
        assert stored and stored[-1].actor == "tech" and '"stow"' in stored[-1].detail

    # The linked patient owns it, as for C-STORE: she lists it and downloads it with her own
    # key; the data sets are what dicomweb-client sent (its own encoding of the datasets).
    r = requests.get(
        f"{stow_world.base}/api/studies/{study}/archive",
        headers={"Authorization": f"Bearer {stow_world.tokens['ann']}"},
        verify=stow_world.ca,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        got = {}
        for name in z.namelist():
            ds = pydicom.dcmread(io.BytesIO(z.read(name)))
            got[str(ds.SOPInstanceUID)] = ds
    assert set(got) == {str(ds.SOPInstanceUID) for ds in datasets}
    for ds in datasets:
        assert got[str(ds.SOPInstanceUID)].PixelData == ds.PixelData
        assert got[str(ds.SOPInstanceUID)].PatientID == ANN_PID


def test_raw_files_come_back_byte_for_byte_and_a_duplicate_is_what_c_store_does(
    stow_world: StowWorld,
) -> None:
    files = _series(stow_world, "ann-raw", 2, patient_id=ANN_PID)
    study, _, sop = _uids(files[0])
    first = stow_world.post(multipart(*files))
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("application/dicom+json")
    assert first.json()["00081190"]["Value"] == [f"{stow_world.dicomweb}/studies/{study}"]
    # Sent again: success again (C-STORE answers a duplicate 0x0000), nothing new stored.
    again = stow_world.post(multipart(*files))
    assert again.status_code == 200, again.text
    assert len(_seq(again.json(), "00081199")) == 2
    assert stow_world.rows(sop) == 1
    assert stow_world.audit("instance.duplicate", sop)
    r = requests.get(
        f"{stow_world.base}/api/studies/{study}/archive",
        headers={"Authorization": f"Bearer {stow_world.tokens['ann']}"},
        verify=stow_world.ca,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        back = sorted(split_part10(z.read(n)).dataset for n in z.namelist())
    assert back == sorted(split_part10(f).dataset for f in files)


def test_an_admin_may_store_too(stow_world: StowWorld) -> None:
    files = _series(stow_world, "admin-ct", 1, patient_id=BOB_PID)
    r = stow_world.post(multipart(*files), user="root")
    assert r.status_code == 200, r.text


# -- who may store ------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["ann", "drlee"])
def test_patients_and_doctors_may_not_store(stow_world: StowWorld, user: str) -> None:
    files = _series(stow_world, f"forbidden-{user}", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(*files), user=user)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert stow_world.rows(_uids(files[0])[2]) == 0


def test_no_credentials_is_401(stow_world: StowWorld) -> None:
    files = _series(stow_world, "anonymous", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(*files), user=None)
    assert r.status_code == 401, r.text
    assert stow_world.rows(_uids(files[0])[2]) == 0


def test_a_session_cookie_never_authorizes_a_store(stow_world: StowWorld) -> None:
    """A logged-in technologist's browser: its cookie reads, but cannot store (a page on
    another site could otherwise make the browser upload)."""
    assert stow_world.cookie_session is not None
    files = _series(stow_world, "cookie", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(*files), user=None, session=stow_world.cookie_session)
    assert r.status_code == 401, r.text
    assert "bearer" in r.json()["detail"]
    assert stow_world.rows(_uids(files[0])[2]) == 0


# -- the error matrix ------------------------------------------------------------------------


def test_random_bytes_are_400_and_nothing_is_stored(stow_world: StowWorld) -> None:
    """DEVIATION from nothing: Orthanc answers 400 too ("a file that is not in the DICOM
    format"); ztbridge's body is a problem document naming the part, not an empty
    Store Instances Response."""
    good = _series(stow_world, "random-mix", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(good[0], os.urandom(4096)))
    assert r.status_code == 400, r.text
    doc = r.json()
    assert "part 2" in doc["detail"] and "not a DICOM Part-10 file" in doc["detail"], doc
    assert stow_world.rows(_uids(good[0])[2]) == 0  # the valid part before it: not stored either


def test_a_65_character_uid_is_400_with_the_reason(stow_world: StowWorld) -> None:
    good = _series(stow_world, "long-uid", 2, patient_id=ANN_PID)
    long_uid = "1.2." + "3" * 61
    assert len(long_uid) == 65
    bad = _with(good[1], SOPInstanceUID=long_uid)
    r = stow_world.post(multipart(good[0], bad))
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "part 2" in detail and "SOPInstanceUID" in detail and "65 characters" in detail, detail
    assert stow_world.rows(_uids(good[0])[2]) == 0
    assert stow_world.rows(long_uid) == 0


def test_missing_identifying_tags_are_400(stow_world: StowWorld) -> None:
    """Orthanc's Issue111 case: an instance without its study's UIDs cannot be named."""
    good = _series(stow_world, "no-study", 1, patient_id=ANN_PID)
    ds = pydicom.dcmread(io.BytesIO(good[0]))
    del ds.StudyInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    r = stow_world.post(multipart(out.getvalue()))
    assert r.status_code == 400 and "StudyInstanceUID is missing" in r.json()["detail"], r.text


@pytest.mark.parametrize("accept", ["application/dicom+xml", "text/html", "application/json;q=0"])
def test_an_accept_without_dicom_json_is_406(stow_world: StowWorld, accept: str) -> None:
    files = _series(stow_world, "accept", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(*files), accept=accept)
    assert r.status_code == 406, r.text
    assert stow_world.rows(_uids(files[0])[2]) == 0


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/dicom+json"])
def test_accept_variants_that_allow_dicom_json(stow_world: StowWorld, accept: str | None) -> None:
    """Orthanc's tests send Accept: application/json; dicomweb-client application/dicom+json."""
    files = _series(stow_world, f"accept-ok-{accept}", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(*files), accept=accept)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        "multipart/form-data; boundary=x",
        f'multipart/related; type="application/dicom+json"; boundary="{BOUNDARY}"',
    ],
)
def test_not_multipart_related_dicom_is_415(stow_world: StowWorld, content_type: str) -> None:
    files = _series(stow_world, "not-related", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(*files), content_type=content_type)
    assert r.status_code == 415, r.text
    assert stow_world.rows(_uids(files[0])[2]) == 0


def test_a_part_of_another_type_is_415(stow_world: StowWorld) -> None:
    files = _series(stow_world, "part-type", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(files[0], part_type="application/dicom+json"))
    assert r.status_code == 415 and "part 1" in r.json()["detail"], r.text


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no closing boundary", lambda f: multipart(f)[: -len(BOUNDARY) - 4]),
        ("not multipart at all", lambda f: f),
        ("no part", lambda f: f"--{BOUNDARY}--".encode()),
    ],
)
def test_a_malformed_body_is_400(stow_world: StowWorld, case: str, body: Any) -> None:
    files = _series(stow_world, "malformed", 1, patient_id=ANN_PID)
    r = stow_world.post(body(files[0]))
    assert r.status_code == 400, (case, r.text)
    assert stow_world.rows(_uids(files[0])[2]) == 0


def test_a_body_over_the_limit_is_413_before_anything_is_stored(stow_world: StowWorld) -> None:
    """Declared length over portal.max_body_mb: 413 from the connection guard at once."""
    files = _series(stow_world, "huge-body", 1, patient_id=ANN_PID)
    body = multipart(files[0], bytes((BODY_MB << 20) + 1))
    r = stow_world.post(body)
    assert r.status_code == 413, r.text
    assert "portal.max_body_mb" in r.json()["detail"]
    assert stow_world.rows(_uids(files[0])[2]) == 0


def test_a_chunked_body_over_the_limit_is_413(stow_world: StowWorld) -> None:
    """No length declared (chunked, as dicomweb-client sends more than 1 MB): counted as
    it arrives; the valid instance at its start is not stored."""
    files = _series(stow_world, "huge-chunked", 1, patient_id=ANN_PID)
    body = multipart(files[0], bytes((BODY_MB << 20) + 1))

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1 << 16):
            yield body[i : i + (1 << 16)]

    r = requests.post(
        stow_world.dicomweb + "/studies",
        data=chunks(),
        headers={
            "Content-Type": f'{RELATED}; boundary="{BOUNDARY}"',
            "Authorization": f"Bearer {stow_world.tokens['tech']}",
        },
        verify=stow_world.ca,
        timeout=60,
    )
    assert r.status_code == 413, r.text
    assert stow_world.rows(_uids(files[0])[2]) == 0


def test_an_instance_over_the_instance_limit_is_413(stow_world: StowWorld) -> None:
    files = _series(stow_world, "huge-part", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(files[0], bytes((INSTANCE_MB << 20) + 1)))
    assert r.status_code == 413 and "ingest.max_instance_mb" in r.json()["detail"], r.text
    assert stow_world.rows(_uids(files[0])[2]) == 0


# -- per-instance failures: 202 and 409 --------------------------------------------------------


def _broken(content: bytes) -> bytes:
    """A Part-10 file whose meta is right and whose data set does not parse (an element
    whose length runs past the end)."""
    meta_end = 132 + 12 + int.from_bytes(content[140:144], "little")
    return content[:meta_end] + b"\x08\x00\x16\x00UI\xff\x7f" + b"1.2"


def test_valid_and_invalid_instances_mixed_are_202_listing_both(stow_world: StowWorld) -> None:
    # A study of ann's already stored; an instance of it that names another patient
    # is refused 0xA900 (one study, one patient), one whose data set does not parse 0xC000.
    ann = _series(stow_world, "mixed-ann", 2, patient_id=ANN_PID)
    assert stow_world.post(multipart(ann[0])).status_code == 200
    study = _uids(ann[0])[0]
    intruder = _series(stow_world, "mixed-intruder", 1, patient_id=BOB_PID, study_uid=study)[0]
    broken = _broken(_series(stow_world, "mixed-broken", 1, patient_id=ANN_PID)[0])
    r = stow_world.post(multipart(ann[1], intruder, broken))
    assert r.status_code == 202, r.text
    doc = r.json()
    refs = _seq(doc, "00081199")
    assert [_value(x, "00081155") for x in refs] == [_uids(ann[1])[2]]
    failed = {_value(x, "00081155"): _value(x, "00081197") for x in _seq(doc, "00081198")}
    intruder_sop = _uids(intruder)[2]
    broken_sop = _meta_sop(broken)
    assert failed == {intruder_sop: 0xA900, broken_sop: 0xC000}, failed
    assert stow_world.rows(_uids(ann[1])[2]) == 1
    assert stow_world.rows(intruder_sop) == 0 and stow_world.rows(broken_sop) == 0
    refused = stow_world.audit("instance.refused", intruder_sop)
    assert refused and refused[-1].actor == "tech"


def _meta_sop(content: bytes) -> str:
    return str(split_part10(content).sop_instance)


def test_nothing_stored_is_409(stow_world: StowWorld) -> None:
    ann = _series(stow_world, "conflict-ann", 1, patient_id=ANN_PID)
    assert stow_world.post(multipart(ann[0])).status_code == 200
    intruder = _series(
        stow_world, "conflict-bob", 1, patient_id=BOB_PID, study_uid=_uids(ann[0])[0]
    )
    r = stow_world.post(multipart(intruder[0]))
    assert r.status_code == 409, r.text
    doc = r.json()
    assert doc["00081199"] == {"vr": "SQ"}  # F.2.5: an empty sequence has no Value
    assert [_value(x, "00081197") for x in _seq(doc, "00081198")] == [0xA900]
    assert stow_world.rows(_uids(intruder[0])[2]) == 0


def test_an_instance_of_another_study_is_refused_by_a_study_target(stow_world: StowWorld) -> None:
    """``POST /studies/{s}``: only instances of s are stored. DEVIATION: Orthanc refuses
    with 0x0110 (Processing failure); ztbridge with 0xA900, the code ingest gives every
    identifier that contradicts the request (a C-STORE's Affected SOP Instance UID)."""
    mine = _series(stow_world, "target-mine", 1, patient_id=ANN_PID)
    other = _series(stow_world, "target-other", 1, patient_id=ANN_PID)
    study = _uids(mine[0])[0]
    r = stow_world.post(multipart(mine[0], other[0]), path=f"/studies/{study}")
    assert r.status_code == 202, r.text
    doc = r.json()
    assert [_value(x, "00081155") for x in _seq(doc, "00081199")] == [_uids(mine[0])[2]]
    assert [(_value(x, "00081155"), _value(x, "00081197")) for x in _seq(doc, "00081198")] == [
        (_uids(other[0])[2], 0xA900)
    ]
    assert stow_world.rows(_uids(other[0])[2]) == 0
    alone = stow_world.post(multipart(other[0]), path=f"/studies/{study}")
    assert alone.status_code == 409, alone.text


def test_a_target_study_that_is_not_a_uid_is_400(stow_world: StowWorld) -> None:
    """Orthanc's ``/studies/nope`` is a 409 with a failed instance; a path that cannot be a
    study is a malformed request to ztbridge (DEVIATION, toward PS3.18's 400)."""
    files = _series(stow_world, "nope", 1, patient_id=ANN_PID)
    r = stow_world.post(multipart(*files), path="/studies/nope")
    assert r.status_code == 400 and "not a valid UID" in r.json()["detail"], r.text


def test_responses_are_dicom_json_and_errors_problem_json(stow_world: StowWorld) -> None:
    files = _series(stow_world, "media", 1, patient_id=ANN_PID)
    ok = stow_world.post(multipart(*files))
    assert ok.headers["content-type"].split(";")[0] == "application/dicom+json"
    json.dumps(ok.json())
    bad = stow_world.post(b"junk", content_type="text/plain")
    assert bad.headers["content-type"] == "application/problem+json"
