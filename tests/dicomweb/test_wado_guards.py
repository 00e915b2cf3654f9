"""WADO-RS guards that change the data, so they run on their own in-process world (the
portal's, ``tests/portal/conftest.py``), never on the shared one: a revoked share stops the
doctor's next request, and a tampered object in the store is never served (the stream
aborts before its closing delimiter, and the failure is audited)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import RetrieveError
from gateway.retrieve import find_instance
from tests.dicomweb.test_wado import split_multipart
from tests.portal.conftest import Portal, portal
from tests.unit.test_retrieve import flip_in_packs

__all__ = ["portal"]


def _bearer(p: Portal, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {p.token(user)['access_token']}"}


def test_revoked_share_stops_the_next_request(portal: Portal) -> None:
    s = portal.series["ann"]
    ann = portal.login("ann")
    hdr = {"X-CSRF-Token": portal.csrf(ann)}
    assert ann.put(f"/api/studies/{s.study_uid}/shares/drlee", headers=hdr).status_code == 200
    doc, c = _bearer(portal, "drlee"), portal.client()
    meta = f"/dicom-web/studies/{s.study_uid}/metadata"
    r = c.get(meta, headers=doc)
    assert r.status_code == 200 and len(r.json()) == 3
    sop = r.json()[0]["00080018"]["Value"][0]
    frame = f"/dicom-web/studies/{s.study_uid}/series/{s.series_uid}/instances/{sop}/frames/1"
    assert c.get(frame, headers=doc).status_code == 200
    assert ann.delete(f"/api/studies/{s.study_uid}/shares/drlee", headers=hdr).status_code == 200
    for path in (meta, frame, f"/dicom-web/studies/{s.study_uid}"):
        r = c.get(path, headers=doc)  # the same token, the very next request
        assert r.status_code == 404 and r.json()["detail"] == "no such study", path


def test_tampered_instance_aborts_the_stream_and_is_audited(portal: Portal) -> None:
    s = portal.series["bob"]
    c, hdr = portal.client(), _bearer(portal, "bob")
    last = s.files[-1]
    import pydicom

    sop = str(pydicom.dcmread(last).SOPInstanceUID)
    ref = find_instance(portal.gw.db, sop)
    flip_in_packs(portal.gw, portal.gw.store.get(ref.cid)[:4096])
    with pytest.raises(Exception) as raised:  # the server drops the response mid-body
        r = c.get(f"/dicom-web/studies/{s.study_uid}", headers=hdr)
        body = r.content
        assert not body.endswith(b"--\r\n"), "a tampered study must not look complete"
    # Starlette re-raises after the response started ("response already started"): the
    # connection is dropped; what ended it is the integrity failure.
    cause = raised.value if isinstance(raised.value, RetrieveError) else raised.value.__cause__
    assert isinstance(cause, RetrieveError) and cause.kind in ("unauthentic", "damaged")
    events = [
        e
        for e in portal.gw.audit.entries()
        if e.kind == "dicomweb.retrieve" and e.subject == sop and e.outcome == "error"
    ]
    assert events, "the failure is audited"
    # A frame is cut only from a verified instance: an opaque 500, never the bytes.
    frame = f"/dicom-web/studies/{s.study_uid}/series/{s.series_uid}/instances/{sop}/frames/1"
    r = c.get(frame, headers=hdr)
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"


def test_multiframe_frames_by_range_and_whole(portal: Portal, tmp_path: Path) -> None:
    """Frames of a 40-frame instance spread over several blocks and segments, read by
    range; and of one whose header object had a 70 KiB element cut before the pixels (the
    range cannot be located from its header: it is read whole). Both byte-exact."""
    import pydicom

    from gateway.importer import import_file
    from tests.support.dicomgen import make_multiframe

    sent = []
    for n, blob in enumerate((None, b"\x01" * 70_000)):
        path = make_multiframe(tmp_path / str(n), frames=40, rows=64, columns=64, seed=n).files[0]
        ds = pydicom.dcmread(path)
        ds.PatientID = "PID-ANN"
        if blob is not None:
            ds.add_new(0x00091010, "LO", "ZTBRIDGE TEST")  # private creator
            ds.add_new(0x00091011, "OB", blob)
        ds.save_as(path, enforce_file_format=True)
        assert import_file(portal.gw.ingestor, path, "test").ok
        sent.append(ds)
    c, hdr = portal.client(), _bearer(portal, "ann")
    size = 64 * 64 * 3
    for ds in sent:
        base = (
            f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        r = c.get(base + "/frames/1,17,40", headers=hdr)
        assert r.status_code == 200, r.text
        parts = split_multipart(r.headers["content-type"], r.content)
        assert [p for _, p in parts] == [
            ds.PixelData[(n - 1) * size : n * size] for n in (1, 17, 40)
        ]
        assert c.get(base + "/frames/41", headers=hdr).status_code == 404
        r = c.get(base + "/metadata", headers=hdr)
        doc = r.json()[0]
        assert doc["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"
        if "00091011" in ds:
            # Cut from the header object (over 64 KiB), so not in the metadata (a known
            # limit: the header no longer names it); its bulk data URI still answers, from
            # the instance read whole.
            assert "00091011" not in doc
            r = c.get(base + "/bulkdata/00091011", headers=hdr)
            ((_, value),) = split_multipart(r.headers["content-type"], r.content)
            assert value == b"\x01" * 70_000


def test_compressed_and_other_syntaxes(portal: Portal, tmp_path: Path) -> None:
    """pydicom's bundled files in every transfer syntax it ships (JPEG, JPEG-LS, JPEG 2000,
    RLE, deflated, big endian, implicit): retrieved as stored byte for byte; frames with
    OHIF's Accept in their own media type, or native; decoded frames and rendered images
    where a decoder is installed, else 406; a thumbnail always (a placeholder if need be)."""
    import pydicom

    from gateway.frames import FRAME_MEDIA_TYPES
    from gateway.importer import import_file
    from gateway.transcode import can_transcode
    from tests.support.dicomgen import make_compressed

    made = make_compressed(tmp_path / "comp")
    c, hdr = portal.client(), _bearer(portal, "ann")
    ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    decoded = 0
    for path in made.files:
        ds = pydicom.dcmread(path)
        ds.PatientID = "PID-ANN"
        ds.save_as(path, enforce_file_format=True)
        assert import_file(portal.gw.ingestor, path, "test").ok, path
        syntax = str(ds.file_meta.TransferSyntaxUID)
        base = (
            f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        r = c.get(base, headers=hdr)
        ((media, body),) = split_multipart(r.headers["content-type"], r.content)
        assert media == f"application/dicom; transfer-syntax={syntax}"
        sent = path.read_bytes()
        assert (
            body[144 + int.from_bytes(body[140:144], "little") :]
            == sent[144 + int.from_bytes(sent[140:144], "little") :]
        )
        r = c.get(base + "/frames/1", headers={**hdr, "accept": ohif})
        assert r.status_code == 200, (path.name, r.text)
        ((media, frame),) = split_multipart(r.headers["content-type"], r.content)
        own = FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")
        label = (
            "1.2.840.10008.1.2.1"
            if syntax.endswith(".99") or syntax == "1.2.840.10008.1.2"
            else syntax
        )
        assert media == f"{own}; transfer-syntax={label}", path.name
        native = own == "application/octet-stream"
        r = c.get(
            base + "/frames/1",
            headers={**hdr, "accept": "multipart/related; type=application/octet-stream"},
        )
        # A compressed frame decodes where a plugin can (pydicom's test files include a
        # 12-bit JPEG Extended that no installed decoder reads): else 406, never a 500.
        assert r.status_code in ((200,) if native else (200, 406)), (path.name, r.text)
        if r.status_code == 406:
            assert r.headers["content-type"] == "application/problem+json"
        if r.status_code == 200:
            decoded += 0 if native else 1
            ((media, frame),) = split_multipart(r.headers["content-type"], r.content)
            samples = int(ds.SamplesPerPixel)
            assert len(frame) == ds.Rows * ds.Columns * samples * (ds.BitsAllocated // 8)
        r = c.get(base + "/rendered", headers={**hdr, "accept": "image/png"})
        assert r.status_code in ((200,) if native else (200, 406)), (path.name, r.text)
        r = c.get(base + "/thumbnail", headers={**hdr, "accept": "image/png"})
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG"), path.name
    if can_transcode("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"):  # pylibjpeg present
        assert decoded >= 3
