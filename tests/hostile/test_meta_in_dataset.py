"""Issue #8 item 2: a data set that starts with group 0002 elements of its own.

Stored as received and returned as a Part-10 file, those elements would follow the file meta
group ztbridge writes, and every Part-10 reader takes them for the file's own (another SOP
class, instance, Big Endian): the instance could not be read back as what was acknowledged.
So it is refused with 0xC000 and nothing of it is kept; the valid instances around it on
the same association are stored and export byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from tests.hostile.harness import (
    DEFLATED,
    HostileGateway,
    Raw,
    ct,
    encode,
    exported,
    meta_in_dataset,
    pixel_flags,
    raw,
    send,
    verified,
    write_part10,
)
from tests.support.gateway_proc import GatewayProcess, make_gateway

pytestmark = pytest.mark.integration
CANNOT_UNDERSTAND = 0xC000


@pytest.fixture(scope="module")
def gw(family: HostileGateway) -> GatewayProcess:
    """The family's gateway (tests/hostile/conftest.py)."""
    return family.gw


def valid(study_uid: str) -> Raw:
    ds = ct(study_uid)
    ds.PixelData = b"\x02\x00" * (16 * 16)
    return raw(ds, encode(ds))


def deflated(item: Raw) -> Raw:
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = c.compress(item.data) + c.flush()
    data += b"\0" * (len(data) % 2)
    return Raw(data, DEFLATED, item.sop_class, item.sop_instance, item.study_uid)


def test_the_instance_as_sent_misleads_a_part10_reader(tmp_path: Path) -> None:
    # Why it is refused: stored as sent, its file reads as another instance in Big Endian.
    item = meta_in_dataset()
    ds = dcmread(write_part10(item, tmp_path / "x.dcm"))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
    assert ds.file_meta.MediaStorageSOPInstanceUID != item.sop_instance


def test_refused_and_the_valid_instances_around_it_export_byte_exact(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    first = valid(study := ct().StudyInstanceUID)
    hostile = meta_in_dataset(study)
    hostile_deflated = deflated(meta_in_dataset(study))
    last = valid(study)
    statuses = send(gw.port, [first, hostile, hostile_deflated, last], tmp_path, "HOSTILE")
    assert statuses == [0, CANNOT_UNDERSTAND, CANNOT_UNDERSTAND, 0]
    assert "File Meta Information elements (group 0002)" in gw.log()
    flags = pixel_flags(gw)
    assert hostile.sop_instance not in flags and hostile_deflated.sop_instance not in flags
    assert exported(gw, study, tmp_path / "out") == {
        first.sop_instance: first.data,
        last.sop_instance: last.data,
    }
    # The gateway goes on: a real modality's push right after succeeds.
    verified(gw)


def test_import_of_such_a_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)  # import writes the data folder itself: no `up` running
    item = meta_in_dataset()
    media = tmp_path / "media"
    media.mkdir()
    write_part10(item, media / "hostile.dcm")
    result = gw.cli("import", str(media), check=False)
    output = result.stdout + result.stderr
    assert "0 stored" in result.stdout and "1 refused" in result.stdout, output
    assert "group 0002" in output, output
    assert pixel_flags(gw) == {}
