"""Issue #8 item 7: pixel geometry that the Pixel Data cannot hold.

Such an instance is stored as received (a PACS keeps what it is given) and read back byte
for byte, but flagged in the index (``instances.pixel_flag``), so that nothing decodes it on
the header's word; ``gateway.pixels.check_geometry`` is the check every decoder must call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.harness import (
    DEFLATED,
    HostileGateway,
    Raw,
    absurd_geometry,
    ct,
    encode,
    exported,
    pixel_flags,
    raw,
    send,
    verified,
)
from tests.support.gateway_proc import GatewayProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gw(family: HostileGateway) -> GatewayProcess:
    """The family's gateway (tests/hostile/conftest.py)."""
    return family.gw


def short(study_uid: str) -> Raw:
    """512 x 512 x 16 bits claimed, 1 KiB of Pixel Data."""
    ds = ct(study_uid, rows=512, columns=512)
    ds.PixelData = b"\x03\x00" * 512
    return raw(ds, encode(ds))


def consistent(study_uid: str) -> Raw:
    ds = ct(study_uid)
    ds.PixelData = b"\x04\x00" * (16 * 16)
    return raw(ds, encode(ds))


def deflated(item: Raw) -> Raw:
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = c.compress(item.data) + c.flush()
    data += b"\0" * (len(data) % 2)
    return Raw(data, DEFLATED, item.sop_class, item.sop_instance, item.study_uid)


def test_flagged_stored_as_received_and_read_back(gw: GatewayProcess, tmp_path: Path) -> None:
    study = ct().StudyInstanceUID
    absurd, too_short, fine = absurd_geometry(study), short(study), consistent(study)
    absurd_deflated = deflated(absurd_geometry(study))
    items = [absurd, too_short, fine, absurd_deflated]
    assert send(gw.port, items, tmp_path, "HOSTILE") == [0, 0, 0, 0]
    flags = pixel_flags(gw)
    assert flags[absurd.sop_instance] == "invalid"
    assert flags[absurd_deflated.sop_instance] == "invalid"
    assert flags[too_short.sop_instance] == "short"
    assert flags[fine.sop_instance] is None
    assert "Bits Allocated 65535 is outside 1..64" in gw.log()
    assert exported(gw, study, tmp_path / "out") == {i.sop_instance: i.data for i in items}
    verified(gw)
