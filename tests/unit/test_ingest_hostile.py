"""Ingest in process with issue #8's hostile data sets (items 1, 2, 7): statuses, rows,
audit events, and the header object of a deflated instance."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.index.models import instances
from gateway.ingest import Incoming, Origin, Outcome
from gateway.keys import unlock_custodian
from gateway.retrieve import CustodianKeys, find_instance, retrieve, retrieve_header
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.hostile.harness import DEFLATED, Raw, absurd_geometry, deflate_bomb, meta_in_dataset
from tests.unit.test_deflated import rich

ORIGIN = Origin(kind="import", actor="test")
PASSPHRASE = "unit-test-passphrase"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(load_settings(home=tmp_path / "home", custodian_passphrase=PASSPHRASE))
    yield g
    g.close()


def ingest(gw: Gateway, item: Raw) -> tuple[Outcome, int, str | None]:
    r = gw.ingestor.ingest(
        Incoming(item.data, item.transfer_syntax, item.sop_class, item.sop_instance), ORIGIN
    )
    return r.outcome, r.status, r.reason


def count(gw: Gateway) -> int:
    with gw.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(instances)).scalar_one())


def test_a_bomb_is_refused_and_audited(gw: Gateway) -> None:
    outcome, status, reason = ingest(gw, deflate_bomb())
    assert (outcome, status, count(gw)) == (Outcome.REFUSED, 0xA700, 0)
    assert reason is not None and "200 times" in reason
    assert [e.kind for e in gw.audit.entries()] == ["instance.refused"]


def test_group_0002_in_a_data_set_is_refused(gw: Gateway) -> None:
    outcome, status, _ = ingest(gw, meta_in_dataset())
    assert (outcome, status, count(gw)) == (Outcome.REFUSED, 0xC000, 0)


def test_absurd_geometry_is_stored_flagged_and_read_back(gw: Gateway) -> None:
    item = absurd_geometry()
    assert ingest(gw, item)[:2] == (Outcome.STORED, 0)
    with gw.db.read() as conn:
        assert conn.execute(select(instances.c.pixel_flag)).scalar_one() == "invalid"
    event = next(e for e in gw.audit.entries() if e.kind == "instance.stored")
    assert json.loads(event.detail)["pixel_flag"].startswith("invalid: Bits Allocated 65535")
    keys = CustodianKeys(gw.db, unlock_custodian(gw.keys_dir, PASSPHRASE))
    back = retrieve(find_instance(gw.db, item.sop_instance), gw.store, keys).read()
    assert back[144 + int.from_bytes(back[140:144], "little") :] == item.data


def test_a_deflated_instance_header_object_is_the_one_readers_cut(gw: Gateway) -> None:
    plain = rich()
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = c.compress(plain) + c.flush()
    data += b"\0" * (len(data) % 2)
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    ds = dcmread(DicomBytesIO(plain), force=True)
    item = Raw(data, DEFLATED, ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID)
    assert ingest(gw, item)[:2] == (Outcome.STORED, 0)
    keys = CustodianKeys(gw.db, unlock_custodian(gw.keys_dir, PASSPHRASE))
    ref = find_instance(gw.db, item.sop_instance)
    sealed = retrieve_header(ref, gw.store, keys)
    recut = retrieve_header(replace(ref, header_cid=None), gw.store, keys)
    assert sealed == recut
    assert b"\x00\x60\x00\x30" not in sealed  # the overlay (bulk) is not in the header
    back = retrieve(ref, gw.store, keys).read()
    assert back[144 + int.from_bytes(back[140:144], "little") :] == data
