"""Issue #8 item 1: deflate bombs, four at once, against a real ``ztbridge up``.

Each bomb is a valid CT header plus Pixel Data of 2,000,000,000 zero bytes in Deflated
Explicit VR Little Endian: 1.94 MB on the wire. The gateway inflates it a chunk at a time and
keeps only the header, so memory stays flat; past the expansion limit (default 200:1 after
the first 64 MiB) it refuses with 0xA700 while inflating. Peak RSS is the kernel's high-water
mark (VmHWM, reset just before the attack), so no sample can miss the peak.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.hostile.harness import (
    DEFLATED,
    HostileGateway,
    Raw,
    ct,
    deflate_bomb,
    encode,
    exported,
    pixel_element,
    raw,
    send,
    verified,
)
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import GatewayProcess, storescu

pytestmark = pytest.mark.integration
OUT_OF_RESOURCES = 0xA700
BOMBS = 4  # a device's association limit
# The gateway's RSS may grow by this much over its warmed-up resident size during the four
# bombs: each holds its 1.94 MB data set, a 1 MiB inflate chunk and a few buffers. Inflating
# one of them whole (as before the fix) is 2 GB, four are 8 GB.
PEAK_GROWTH_LIMIT = 128 << 20


@pytest.fixture(scope="module")
def gw(family: HostileGateway) -> GatewayProcess:
    """The family's gateway (tests/hostile/conftest.py)."""
    return family.gw


def _status_kb(g: GatewayProcess, field: str) -> int:
    assert g.proc is not None
    for line in Path(f"/proc/{g.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) << 10
    raise AssertionError(f"no {field} in /proc status")


def _reset_peak(g: GatewayProcess) -> None:
    assert g.proc is not None
    Path(f"/proc/{g.proc.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def zeros_deflated(count: int, study_uid: str) -> Raw:
    """A deflated CT whose Pixel Data is ``count`` zeros: compresses ~1000:1 but stays under
    the 64 MiB the ratio limit spares, so it must be stored and read back."""
    import zlib

    ds = ct(study_uid, rows=1024, columns=count // 2048)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = c.compress(encode(ds) + pixel_element(count) + b"\0" * count) + c.flush()
    data += b"\0" * (len(data) % 2)
    return raw(ds, data, DEFLATED)


def test_four_concurrent_bombs_are_refused_in_bounded_memory(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    warm = make_ct_series(tmp_path / "warm", 2, rows=64, columns=64)
    assert storescu(gw.port, warm.files).returncode == 0  # threads, caches, pools warmed
    bombs = [deflate_bomb() for _ in range(BOMBS)]
    assert all(len(b.data) < 2_000_000 for b in bombs)
    statuses: dict[int, list[int]] = {}

    def push(i: int) -> None:
        folder = tmp_path / f"bomb{i}"
        folder.mkdir()
        statuses[i] = send(gw.port, [bombs[i]], folder, "HOSTILE")

    before = _status_kb(gw, "VmRSS")
    _reset_peak(gw)
    threads = [threading.Thread(target=push, args=(i,)) for i in range(BOMBS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    peak = _status_kb(gw, "VmHWM")
    print(f"gateway RSS {before >> 20} MiB before, peak {peak >> 20} MiB under {BOMBS} bombs")
    assert statuses == {i: [OUT_OF_RESOURCES] for i in range(BOMBS)}
    assert peak - before < PEAK_GROWTH_LIMIT, (before, peak)
    assert gw.log().count("inflates beyond 200 times its size") >= BOMBS


def test_a_compressible_instance_within_limits_is_stored_and_read_back(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    study = ct().StudyInstanceUID
    item = zeros_deflated(48 << 20, study)  # 48 MiB of zeros in ~50 KB
    assert send(gw.port, [item], tmp_path, "HOSTILE") == [0]
    assert exported(gw, study, tmp_path / "out") == {item.sop_instance: item.data}


def test_the_gateway_serves_a_modality_after_the_bombs(gw: GatewayProcess, tmp_path: Path) -> None:
    series = make_ct_series(tmp_path / "ct", 2, rows=64, columns=64)
    pushed = storescu(gw.port, [*series.files], "STORESCU", "ZTBRIDGE", "-xd")
    assert pushed.returncode == 0, pushed.stderr
    got = exported(gw, series.study_uid, tmp_path / "out")
    assert len(got) == 2
    for f in series.files:  # sent deflated by DCMTK: the same pixels come back
        back = dcmread(next((tmp_path / "out").rglob(f"{dcmread(f).SOPInstanceUID}.dcm")))
        assert back.file_meta.TransferSyntaxUID == DEFLATED
        assert back.PixelData == dcmread(f).PixelData
    verified(gw)
