"""``gateway.retrieve``: the one read funnel, and the header objects ingest seals.

Instances go in through the real ingest pipeline and come out through ``retrieve``; damage
is done where an attacker with the data folder would do it (pack bytes, index rows).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import update

from gateway import crypto
from gateway.dataset import file_meta, scan, split_part10
from gateway.errors import (
    InstanceIntegrityError,
    InstanceMissingError,
    KeyUnavailableError,
    RetrieveError,
)
from gateway.header import header_from_part10, header_parts
from gateway.index.models import instances
from gateway.ingest import Incoming, Origin, Receipt
from gateway.keys import unlock_custodian
from gateway.retrieve import (
    CustodianKeys,
    InstanceRef,
    find_instance,
    retrieve,
    retrieve_header,
)
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_compressed, make_ct_series

ORIGIN = Origin(kind="import", actor="test")
PASSPHRASE = "unit-test-passphrase"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(load_settings(home=tmp_path / "home", custodian_passphrase=PASSPHRASE))
    yield g
    g.close()


def ingest(gw: Gateway, path: Path) -> Receipt:
    part = split_part10(path.read_bytes())
    receipt = gw.ingestor.ingest(
        Incoming(part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance), ORIGIN
    )
    assert receipt.ok, receipt.reason
    return receipt


def keys(gw: Gateway) -> CustodianKeys:
    return CustodianKeys(gw.db, unlock_custodian(gw.keys_dir, PASSPHRASE))


def ref_of(gw: Gateway, sop: str) -> InstanceRef:
    return find_instance(gw.db, sop)


def set_row(gw: Gateway, sop: str, **values: object) -> None:
    with gw.db.write() as conn:
        conn.execute(update(instances).where(instances.c.sop_instance_uid == sop).values(**values))


def flip_in_packs(gw: Gateway, needle: bytes) -> None:
    """Change one byte of ``needle`` where it sits in a pack file (in place: same inode)."""
    for pack in sorted((gw.settings.home / "store" / "packs").glob("pack-*.dat")):
        raw = pack.read_bytes()
        at = raw.find(needle)
        if at >= 0:
            with pack.open("r+b") as f:
                f.seek(at + len(needle) // 2)
                f.write(bytes([raw[at + len(needle) // 2] ^ 0x01]))
            return
    raise AssertionError("bytes not found in any pack")


@pytest.fixture
def ct(gw: Gateway, tmp_path: Path) -> list[Path]:
    """Three 512x512 slices: ~512 KiB each, so three blocks and nine segments per object."""
    files = make_ct_series(tmp_path / "ct", 3).files
    for f in files:
        ingest(gw, f)
    return files


def test_round_trip_streams_part10(gw: Gateway, ct: list[Path]) -> None:
    sent = split_part10(ct[0].read_bytes())
    ref = ref_of(gw, str(sent.sop_instance))
    reading = retrieve(ref, gw.store, keys(gw))
    chunks = list(reading)
    assert len(chunks) > 3 and max(len(c) for c in chunks) <= crypto.SEGMENT_BYTES + 512
    got = split_part10(b"".join(chunks))
    assert got.dataset == sent.dataset and got.sop_instance == sent.sop_instance
    assert reading.observed.sha256 == ref.sha256 == hashlib.sha256(sent.dataset).hexdigest()
    assert reading.observed.size == ref.size
    assert reading.observed.sop_class == sent.sop_class


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [("sha256", "0" * 64, "hash"), ("size", 12345, "size")],
)
def test_index_mismatch_raises_before_the_last_chunk(
    gw: Gateway, ct: list[Path], column: str, value: object, kind: str
) -> None:
    sop = str(split_part10(ct[1].read_bytes()).sop_instance)
    set_row(gw, sop, **{column: value})
    ref = ref_of(gw, sop)
    got: list[bytes] = []
    with pytest.raises(InstanceIntegrityError) as info:
        got.extend(retrieve(ref, gw.store, keys(gw)))
    assert info.value.kind == kind and sop in str(info.value)
    full = ref_of(gw, sop)
    assert 0 < sum(len(c) for c in got) < (full.size if kind == "hash" else 10**9)
    if kind == "hash":  # everything but the held-back last chunk was handed on
        assert sum(len(c) for c in got) < int(full.size or 0)


def test_damaged_block_raises_when_reached(gw: Gateway, ct: list[Path]) -> None:
    sop = str(split_part10(ct[2].read_bytes()).sop_instance)
    ref = ref_of(gw, sop)
    envelope = gw.store.get(ref.cid)
    flip_in_packs(gw, envelope[300_000:300_064])  # inside the second block
    got: list[bytes] = []
    with pytest.raises(InstanceIntegrityError) as info:
        got.extend(retrieve(ref, gw.store, keys(gw)))
    assert info.value.kind == "damaged" and sop in str(info.value)
    assert ref.cid in str(info.value)
    assert 0 < sum(len(c) for c in got) < 262_144  # the first block's segments only


def test_missing_object_and_unknown_key(gw: Gateway, ct: list[Path]) -> None:
    sop = str(split_part10(ct[0].read_bytes()).sop_instance)
    ref = ref_of(gw, sop)
    missing = InstanceRef(
        sop, 1, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", ref.key_id, "", None
    )
    with pytest.raises(InstanceMissingError) as info:
        retrieve(missing, gw.store, keys(gw)).read()
    assert info.value.kind == "missing"

    class NoKeys:
        def study_key(self, key_id: str) -> bytes:
            raise KeyUnavailableError(f"study key {key_id} is not ours")

    with pytest.raises(RetrieveError) as kinfo:
        retrieve(ref, gw.store, NoKeys()).read()
    assert kinfo.value.kind == "key" and sop in str(kinfo.value)

    class WrongKey:
        def study_key(self, key_id: str) -> bytes:
            return bytes(32)

    with pytest.raises(InstanceIntegrityError) as winfo:
        retrieve(ref, gw.store, WrongKey()).read()
    assert winfo.value.kind == "unauthentic"
    assert bytes(32).hex() not in str(winfo.value)


def test_v1_objects_read_through_the_same_path(gw: Gateway, ct: list[Path]) -> None:
    """An object sealed before v2 (one tag), with no header object: both reads work."""
    sop = str(split_part10(ct[0].read_bytes()).sop_instance)
    ref = ref_of(gw, sop)
    provider = keys(gw)
    plain = retrieve(ref, gw.store, provider).read()
    v1 = crypto.seal_v1(provider.study_key(ref.key_id), bytes.fromhex(ref.key_id), plain)
    set_row(gw, sop, cid=gw.store.put(v1), header_cid=None)
    old = ref_of(gw, sop)
    assert retrieve(old, gw.store, provider).read() == plain
    assert retrieve_header(old, gw.store, provider) == retrieve_header(ref, gw.store, provider)


def test_header_object_has_no_pixels(gw: Gateway, ct: list[Path]) -> None:
    sent = split_part10(ct[0].read_bytes())
    ref = ref_of(gw, str(sent.sop_instance))
    assert ref.header_cid is not None and ref.header_cid != ref.cid
    header = retrieve_header(ref, gw.store, keys(gw))
    assert len(header) < 2000 < len(sent.dataset)
    ds = dcmread(io.BytesIO(header))
    assert "PixelData" not in ds and ds.SOPInstanceUID == sent.sop_instance
    assert ds.PatientName == "TEST^SYNTHETIC" and ds.Rows == 512
    part = split_part10(header)
    assert sent.dataset.startswith(part.dataset)  # here the cut is a prefix: no other bulk
    assert len(gw.store.get(ref.header_cid)) < 2100  # the metadata read is one small object


def test_header_fallback_equals_header_object(gw: Gateway, ct: list[Path]) -> None:
    sop = str(split_part10(ct[1].read_bytes()).sop_instance)
    ref = ref_of(gw, sop)
    provider = keys(gw)
    sealed = retrieve_header(ref, gw.store, provider)
    set_row(gw, sop, header_cid=None)
    assert retrieve_header(ref_of(gw, sop), gw.store, provider) == sealed
    # A header object this store does not have (store rebuilt from a CAR): same bytes.
    absent = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    set_row(gw, sop, header_cid=absent)
    assert retrieve_header(ref_of(gw, sop), gw.store, provider) == sealed


def test_header_of_another_instance_is_refused(gw: Gateway, ct: list[Path]) -> None:
    a, b = (str(split_part10(f.read_bytes()).sop_instance) for f in ct[:2])
    set_row(gw, a, header_cid=ref_of(gw, b).header_cid)  # same study key: it decrypts
    with pytest.raises(InstanceIntegrityError, match="another instance"):
        retrieve_header(ref_of(gw, a), gw.store, keys(gw))


def test_damaged_header_object(gw: Gateway, ct: list[Path]) -> None:
    ref = ref_of(gw, str(split_part10(ct[0].read_bytes()).sop_instance))
    assert ref.header_cid
    flip_in_packs(gw, gw.store.get(ref.header_cid)[40:80])
    with pytest.raises(InstanceIntegrityError) as info:
        retrieve_header(ref, gw.store, keys(gw))
    assert info.value.kind == "damaged"


# --- the cut itself ------------------------------------------------------------------


def _dataset(ts: str, *, overlay: int = 0, private: int = 0, floats: bool = False) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientName = "CUT^TEST"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.1"
    if private:
        ds.add_new(0x00291010, "OB", bytes(private))  # a large private blob (CSA-like)
    ds.add_new(0x00291011, "OB", b"small private")
    ds.add_new(0x00400254, "LO", "after the blob")
    if overlay:
        ds.add_new(0x60003000, "OW", bytes(overlay))
    ds.add_new(0x60000010, "US", 16)
    if floats:
        ds.add_new(0x7FE00008, "OF", bytes(4 * 1000))
    else:
        ds.add_new(0x7FE00010, "OW", bytes(200_000))
    ds.add_new(0xFFFCFFFC, "OB", bytes(100))  # trailing padding: after the cut
    return ds


def _encode(ds: Dataset, ts: str) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = ts == ImplicitVRLittleEndian
    write_dataset(buf, ds)
    return buf.getvalue()


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(
    ("options", "dropped"),
    [
        ({}, set()),
        ({"overlay": 70_000}, {0x60003000}),
        ({"overlay": 1000}, set()),
        ({"private": 100_000}, {0x00291010}),
        ({"floats": True}, set()),
    ],
)
def test_cut_keeps_small_elements_drops_bulk(
    ts: str, options: dict[str, int], dropped: set[int]
) -> None:
    ds = _dataset(ts, **options)  # type: ignore[arg-type]
    data = _encode(ds, ts)
    parts = header_parts(data, scan(data, ts))
    header = b"".join(parts)
    got = read_dataset(io.BytesIO(header), ts == ImplicitVRLittleEndian, True)
    expected = {e.tag for e in ds if e.tag < 0x7FE00000} - dropped
    assert {e.tag for e in got} == expected
    assert str(got[0x00400254].value) == "after the blob"  # elements after bulk are kept
    # The same cut from the Part-10 stream (rows without a header object).
    meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ts, None)
    whole = meta + data
    stream = [whole[i : i + 1000] for i in range(0, len(whole), 1000)]
    assert header_from_part10(stream, 1 << 20) == meta + header


def test_every_transfer_syntax_header_matches_its_fallback(gw: Gateway, tmp_path: Path) -> None:
    """Ingest's header object equals the cut made from the stored object, for deflated,
    big-endian, implicit and encapsulated data sets alike; pydicom reads it."""
    series = make_compressed(tmp_path / "ts")
    assert len(series.files) >= 10
    provider = keys(gw)
    for path in series.files:
        receipt = ingest(gw, path)
        sop = str(receipt.sop_instance_uid)
        sealed = retrieve_header(ref_of(gw, sop), gw.store, provider)
        set_row(gw, sop, header_cid=None)
        assert retrieve_header(ref_of(gw, sop), gw.store, provider) == sealed, path.name
        ds = dcmread(io.BytesIO(sealed))
        assert "PixelData" not in ds and ds.SOPInstanceUID == sop, path.name
        assert (
            retrieve(ref_of(gw, sop), gw.store, provider)
            .read()
            .endswith(split_part10(path.read_bytes()).dataset)
        )


def test_retrieve_memory_is_flat_for_a_large_instance(gw: Gateway, tmp_path: Path) -> None:
    """A 48 MiB instance streams through retrieve holding well under a megabyte at a time."""
    import gc
    import tracemalloc

    series = make_ct_series(tmp_path / "big", 1, rows=4096, columns=6144)  # 48 MiB of pixels
    ingest(gw, series.files[0])
    ref = ref_of(gw, str(split_part10(series.files[0].read_bytes()).sop_instance))
    provider = keys(gw)
    provider.study_key(ref.key_id)
    gc.collect()
    tracemalloc.start()
    try:
        total = sum(len(c) for c in retrieve(ref, gw.store, provider))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == ref.size and total > 48 << 20
    assert peak < 1 << 20, f"peak {peak} bytes for a {total}-byte instance"
