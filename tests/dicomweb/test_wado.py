"""WADO-RS against the shared world: a real ``ztbridge up``, driven by ``dicomweb-client``, and
compared with Orthanc's DICOMweb plugin holding the same files pushed by the same storescu.

Where Orthanc 1.10 / DICOMweb 1.7 departs from PS3.18, ``test_orthanc_departures_from_ps3_18``
asserts it and that ztbridge follows the standard: its parts name no transfer syntax, an
unacceptable Accept is 400 instead of 406, it has no thumbnail resource, it refuses
``window=center,width,function``, and its BulkDataURIs are absolute URLs of its own host
(ours are relative to the request's URL, as PS3.18 allows, and survive a reverse proxy).
Both return the data set as stored here (each writes its own file meta group; the issue's
"re-encodes" does not show with these Explicit VR Little Endian files). Metadata is compared
attribute by attribute where both give a value (BulkDataURI and InlineBinary aside).
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urljoin

import pydicom
import pytest
from PIL import Image

from tests.dicomweb.conftest import World

pytestmark = pytest.mark.integration

DICOM = "application/dicom"


def split_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The parts of a multipart/related body, each (Content-Type, bytes); asserts the closing
    delimiter is there (a complete answer)."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params["boundary"].strip('"').encode()
    assert body.endswith(b"--" + boundary + b"--\r\n"), "no closing delimiter"
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line)
        parts.append((headers.get("Content-Type", ""), data.removesuffix(b"\r\n")))
    return parts


def data_set(part10: bytes) -> bytes:
    """The data set after the file meta group (what storescu sent, byte for byte)."""
    end = 144 + int.from_bytes(part10[140:144], "little")
    return part10[end:]


def url(world: World, study: Any, series: Any = None, sop: str | None = None) -> str:
    u = f"{world.dicomweb_url}/studies/{study.uid}"
    if series is not None:
        u += f"/series/{series.uid}"
    if sop is not None:
        u += f"/instances/{sop}"
    return u


@pytest.fixture(scope="module")
def ct(world: World) -> Any:
    return world.studies["ann_ct"]


@pytest.fixture(scope="module")
def mf(world: World) -> Any:
    return world.studies["ann_mf"]


def test_retrieve_study_byte_identical(world: World, ct: Any) -> None:
    r = world.http("ann").get(
        url(world, ct), headers={"Accept": f'multipart/related; type="{DICOM}"'}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    parts = split_multipart(r.headers["content-type"], r.content)
    sent = sorted(data_set(f.read_bytes()) for f in ct.files)
    assert sorted(data_set(p) for _, p in parts) == sent
    assert all(t == f"{DICOM}; transfer-syntax=1.2.840.10008.1.2.1" for t, _ in parts)


def test_dicomweb_client_retrieves(world: World, ct: Any) -> None:
    client = world.client("ann")
    series = ct.series[0]
    study = client.retrieve_study(ct.uid)
    assert sorted(str(d.SOPInstanceUID) for d in study) == sorted(
        u for s in ct.series for u in s.sop_uids
    )
    got = client.retrieve_series(ct.uid, series.uid)
    assert sorted(str(d.SOPInstanceUID) for d in got) == sorted(series.sop_uids)
    one = client.retrieve_instance(ct.uid, series.uid, series.sop_uids[0])
    sent = pydicom.dcmread(series.files[0])
    assert one.PixelData == sent.PixelData and one.PatientName == sent.PatientName


def test_metadata_from_headers_with_bulk_uris(world: World, ct: Any) -> None:
    client = world.client("ann")
    series = ct.series[0]
    study_meta = client.retrieve_study_metadata(ct.uid)
    assert len(study_meta) == ct.num_instances
    series_meta = client.retrieve_series_metadata(ct.uid, series.uid)
    sop = series.sop_uids[0]
    inst = client.retrieve_instance_metadata(ct.uid, series.uid, sop)
    assert inst["00080018"]["Value"] == [sop]
    assert inst["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"
    one = next(m for m in series_meta if m["00080018"]["Value"] == [sop])
    assert one["7FE00010"]["BulkDataURI"] == f"instances/{sop}/bulkdata/7FE00010"
    assert not any(k.startswith("0002") for k in inst)
    # Each relative URI, resolved against its own request's URL, names the same bulk data.
    base = url(world, ct, series, sop) + "/metadata"
    absolute = urljoin(base, inst["7FE00010"]["BulkDataURI"])
    s_abs = urljoin(url(world, ct, series) + "/metadata", one["7FE00010"]["BulkDataURI"])
    assert absolute == s_abs
    pixels = client.retrieve_bulkdata(absolute)
    assert b"".join(pixels) == pydicom.dcmread(series.files[0]).PixelData


def test_metadata_agrees_with_orthanc(world: World, ct: Any, mf: Any) -> None:
    ours, theirs = world.client("ann"), world.orthanc_client()
    for study in (ct, mf):
        for series in study.series:
            mine = {
                m["00080018"]["Value"][0]: m
                for m in ours.retrieve_series_metadata(study.uid, series.uid)
            }
            orth = {
                m["00080018"]["Value"][0]: m
                for m in theirs.retrieve_series_metadata(study.uid, series.uid)
            }
            assert mine.keys() == orth.keys()
            for sop, m in mine.items():
                o = orth[sop]
                compared = 0
                for tag, value in m.items():
                    if tag not in o or "BulkDataURI" in value or "BulkDataURI" in o[tag]:
                        continue  # Orthanc leaves some out; bulk data URIs differ by design
                    if "InlineBinary" in value or "InlineBinary" in o[tag]:
                        continue
                    assert value.get("vr") == o[tag].get("vr"), tag
                    assert value.get("Value") == o[tag].get("Value"), (tag, value, o[tag])
                    compared += 1
                assert compared >= 20


def test_frames_native_and_as_stored(world: World, ct: Any, mf: Any) -> None:
    client = world.client("drlee")
    series = ct.series[0]
    sent = pydicom.dcmread(series.files[1])
    frames = client.retrieve_instance_frames(ct.uid, series.uid, series.sop_uids[1], [1])
    assert frames == [sent.PixelData]
    m = mf.series[0]
    sent = pydicom.dcmread(m.files[0])
    size = 32 * 32 * 3
    got = client.retrieve_instance_frames(mf.uid, m.uid, m.sop_uids[0], [2, 8])
    assert got == [sent.PixelData[size : 2 * size], sent.PixelData[7 * size : 8 * size]]
    # OHIF's combined Accept, with transfer-syntax in every part's Content-Type.
    ohif = (
        "application/dicom+json, multipart/related; type=application/octet-stream;"
        " transfer-syntax=*"
    )
    r = world.http("drlee").get(
        url(world, mf, m, m.sop_uids[0]) + "/frames/1,3", headers={"Accept": ohif}
    )
    assert r.status_code == 200, r.text
    parts = split_multipart(r.headers["content-type"], r.content)
    assert [t for t, _ in parts] == [
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    ] * 2
    assert [p for _, p in parts] == [sent.PixelData[:size], sent.PixelData[2 * size : 3 * size]]
    r = world.http("drlee").get(url(world, mf, m, m.sop_uids[0]) + "/frames/9")
    assert r.status_code == 404


def test_rendered_and_thumbnails(world: World, ct: Any, mf: Any) -> None:
    client = world.client("ann")
    series = ct.series[0]
    sop = series.sop_uids[0]
    jpeg = client.retrieve_instance_rendered(ct.uid, series.uid, sop, media_types=("image/jpeg",))
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    png = client.retrieve_series_rendered(
        ct.uid, series.uid, media_types=("image/png",), params={"viewport": "16,16"}
    )
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (16, 16)
    frame = client.retrieve_instance_frames_rendered(
        mf.uid, mf.series[0].uid, mf.series[0].sop_uids[0], [3], media_types=("image/png",)
    )
    assert Image.open(io.BytesIO(frame)).mode == "RGB"
    http = world.http("ann")
    for path in (
        url(world, ct),
        url(world, ct, series),
        url(world, ct, series, sop),
        url(world, ct, series, sop) + "/frames/1",
    ):
        r = http.get(path + "/thumbnail", headers={"Accept": "image/png"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", path
        assert max(Image.open(io.BytesIO(r.content)).size) <= 128
    windows = [
        http.get(url(world, ct, series, sop) + "/rendered", params={"window": w}).content
        for w in ("100,200,linear", "2000,4000,sigmoid")
    ]
    assert windows[0] != windows[1]
    r = http.get(url(world, ct, series, sop) + "/rendered", params={"window": "1,0"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        "multipart/related; type=application/dicom",
        'multipart/related; type="application/dicom"',
        "multipart/related;type=application/dicom;transfer-syntax=*",
        'multipart/related ; type = "application/dicom" ; transfer-syntax = *',
        "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
        "application/json;q=0.9, multipart/related; type=application/dicom",
        "multipart/related",
        "application/dicom",
    ],
)
def test_accept_variants_give_the_stored_instance(
    world: World, ct: Any, accept: str | None
) -> None:
    series = ct.series[0]
    headers = {} if accept is None else {"Accept": accept}
    r = world.http("ann").get(url(world, ct, series, series.sop_uids[0]), headers=headers)
    assert r.status_code == 200, r.text
    ((media, body),) = split_multipart(r.headers["content-type"], r.content)
    assert media.startswith(DICOM)
    assert data_set(body) == data_set(series.files[0].read_bytes())


@pytest.mark.parametrize(
    ("accept", "syntax"),
    [
        (
            "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2",
            "1.2.840.10008.1.2",
        ),
        (
            "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.1.99",
        ),
    ],
)
def test_transcoded_on_request(world: World, ct: Any, accept: str, syntax: str) -> None:
    series = ct.series[0]
    r = world.http("ann").get(
        url(world, ct, series, series.sop_uids[0]), headers={"Accept": accept}
    )
    assert r.status_code == 200, r.text
    ((media, body),) = split_multipart(r.headers["content-type"], r.content)
    assert media == f"{DICOM}; transfer-syntax={syntax}"
    ds = pydicom.dcmread(io.BytesIO(body))
    assert str(ds.file_meta.TransferSyntaxUID) == syntax
    assert ds.PixelData == pydicom.dcmread(series.files[0]).PixelData


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "multipart/related; type=image/jpeg",
        "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50",
        "multipart/related; type=application/dicom; q=0",
    ],
)
def test_unacceptable_is_406(world: World, ct: Any, accept: str) -> None:
    r = world.http("ann").get(url(world, ct), headers={"Accept": accept})
    assert r.status_code == 406
    assert r.headers["content-type"] == "application/problem+json"


def test_zip_of_study_and_series(world: World, ct: Any) -> None:
    import zipfile

    http = world.http("ann")
    r = http.get(url(world, ct, ct.series[1]), headers={"Accept": "application/zip"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert sorted(data_set(z.read(n)) for n in z.namelist()) == sorted(
            data_set(f.read_bytes()) for f in ct.series[1].files
        )


def test_multipart_boundaries_are_fresh(world: World, ct: Any) -> None:
    http = world.http("ann")
    a = http.get(url(world, ct)).headers["content-type"]
    b = http.get(url(world, ct)).headers["content-type"]
    assert a != b and "boundary=" in a


def _paths(world: World, study: Any) -> list[str]:
    series = study.series[0]
    sop = series.sop_uids[0]
    inst = url(world, study, series, sop)
    return [
        url(world, study),
        url(world, study, series),
        inst,
        url(world, study) + "/metadata",
        url(world, study, series) + "/metadata",
        inst + "/metadata",
        inst + "/frames/1",
        inst + "/bulkdata/7FE00010",
        url(world, study) + "/rendered",
        inst + "/rendered",
        inst + "/thumbnail",
    ]


def test_another_users_study_is_an_unknown_one(world: World, ct: Any) -> None:
    """bob asks for ann's study at every level: 404 with the body an unknown UID gets."""
    bob = world.http("bob")
    fake = type(ct)(
        "1.2.826.0.1.3680043.8.498.1",
        ct.spec,
        [type(ct.series[0])("1.2.826.0.1.3680043.8.498.2", ct.series[0].spec, [], ["1.2.3.4"])],
    )
    for theirs, unknown in zip(_paths(world, ct), _paths(world, fake), strict=True):
        r, u = bob.get(theirs), bob.get(unknown)
        assert r.status_code == u.status_code == 404, (theirs, r.text)
        a, b = r.json(), u.json()
        a.pop("instance"), b.pop("instance")
        assert a == b


def test_unknown_series_and_instance_of_a_visible_study(world: World, ct: Any) -> None:
    http = world.http("ann")
    assert http.get(url(world, ct) + "/series/1.2.3").status_code == 404
    assert http.get(url(world, ct, ct.series[0]) + "/instances/1.2.3/metadata").status_code == 404


def test_no_credentials_is_401(world: World, ct: Any) -> None:
    anonymous = world.http()
    for path in _paths(world, ct):
        r = anonymous.get(path)
        assert r.status_code == 401, path
        assert r.headers["content-type"] == "application/problem+json"


def test_cookie_session_reads(world: World, ct: Any) -> None:
    s = world.cookie_session("ann")
    r = s.get(url(world, ct) + "/metadata")
    assert r.status_code == 200 and len(r.json()) == ct.num_instances


def test_orthanc_departures_from_ps3_18(world: World, ct: Any) -> None:
    """Where Orthanc 1.10 / DICOMweb 1.7 departs from PS3.18 (each asserted, so a change in
    Orthanc shows), and ztbridge follows the standard."""
    series = ct.series[0]
    sop = series.sop_uids[0]
    orthanc = world.session()  # plain HTTP on loopback; no proxy from the environment
    ours = world.http("ann")
    o_inst = f"{world.orthanc.dicomweb_url}/studies/{ct.uid}/series/{series.uid}/instances/{sop}"
    z_inst = url(world, ct, series, sop)
    sent = data_set(series.files[0].read_bytes())
    # 1. Both return the data set as stored, but Orthanc's parts do not say their transfer
    #    syntax (PS3.18 8.7.3.5: each part's Content-Type carries transfer-syntax).
    (o_part,) = split_multipart(*_ct_body(orthanc.get(o_inst)))
    (z_part,) = split_multipart(*_ct_body(ours.get(z_inst)))
    assert data_set(o_part[1]) == sent == data_set(z_part[1])
    assert "transfer-syntax" not in o_part[0] and "transfer-syntax=" in z_part[0]
    # 2. Nothing acceptable: Orthanc answers 400 where PS3.18 8.7.5 says 406.
    assert orthanc.get(o_inst, headers={"Accept": "text/html"}).status_code == 400
    assert ours.get(z_inst, headers={"Accept": "text/html"}).status_code == 406
    # 3. Orthanc has no thumbnail resource (PS3.18 10.4.1.1.4).
    assert orthanc.get(o_inst + "/thumbnail").status_code == 404
    assert ours.get(z_inst + "/thumbnail").status_code == 200
    # 4. Orthanc refuses the window parameter with its function (PS3.18 8.3.5.1.3).
    params = {"window": "100,200,linear"}
    assert orthanc.get(o_inst + "/rendered", params=params).status_code == 400
    assert ours.get(z_inst + "/rendered", params=params).status_code == 200
    # 5. Orthanc's BulkDataURIs are absolute URLs of its own host (they break behind a
    #    reverse proxy); ours are relative to the request.
    o_meta = orthanc.get(o_inst + "/metadata").json()[0]
    assert o_meta["7FE00010"]["BulkDataURI"].startswith(world.orthanc.url)
    z_meta = ours.get(z_inst + "/metadata").json()[0]
    assert z_meta["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"


def _ct_body(r: Any) -> tuple[str, bytes]:
    assert r.status_code == 200, r.text
    return r.headers["content-type"], r.content
