"""``ztbridge import`` of real media: instances imported, the rest skipped, refusals audited."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet

from gateway.importer import import_file
from gateway.ingest import Outcome
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(
        load_settings(home=tmp_path / "home", custodian_passphrase="p", ledger={"enabled": False})
    )
    yield g
    g.close()


def _refusals(gw: Gateway) -> list[dict[str, str]]:
    return [json.loads(e.detail) for e in gw.audit.entries() if e.kind == "instance.refused"]


def _bare(path: Path, source: Path) -> Path:
    """A DICOM data set written without preamble and file meta (not Part-10)."""
    ds = dcmread(source)
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    raw = path.read_bytes()
    start = raw.find(b"\x08\x00")
    path.write_bytes(raw[start:] if raw[128:132] == b"DICM" else raw)
    return path


def test_a_file_that_is_not_part10_is_refused_and_audited(gw: Gateway, tmp_path: Path) -> None:
    """Regression: the refusal came back without an audit event."""
    series = make_ct_series(tmp_path / "ct", 1)
    bare = _bare(tmp_path / "bare.dcm", series.files[0])
    receipt = import_file(gw.ingestor, bare, "cli:test")
    assert receipt.outcome is Outcome.REFUSED
    events = _refusals(gw)
    assert len(events) == 1 and events[0]["origin"] == "import"
    assert "force=True" not in (receipt.reason or "")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(series.files[0].read_bytes()[:140])  # 'DICM', then the meta is cut
    receipt = import_file(gw.ingestor, cut, "cli:test")
    assert receipt.outcome is Outcome.REFUSED and len(_refusals(gw)) == 2
    assert "force=True" not in (receipt.reason or "")


def test_classify_tells_bare_data_sets_from_other_files(tmp_path: Path) -> None:
    from gateway.importer import Kind, classify

    series = make_ct_series(tmp_path / "ct", 1)
    assert classify(series.files[0].read_bytes()[:132]) is Kind.PART10
    assert classify(_bare(tmp_path / "bare.dcm", series.files[0]).read_bytes()[:132]) is Kind.BARE
    assert classify(b"Viewer on this disc\n") is Kind.OTHER


def _media(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """A DICOM CD as pydicom's FileSet writes it: DICOMDIR, files under IDs, plus a README."""
    series = make_ct_series(tmp_path / "src", n)
    fs = FileSet()
    for f in series.files:
        fs.add(dcmread(f))
    root = tmp_path / "media"
    fs.write(root)
    (root / "README.TXT").write_text("Viewer on this disc: run VIEWER.EXE\n")
    return root, [str(dcmread(f).SOPInstanceUID) for f in series.files]


def test_media_with_dicomdir_and_readme_imports_instances_and_skips_the_rest(
    gw: Gateway, tmp_path: Path
) -> None:
    from gateway.importer import SKIPPED, import_paths

    root, _ = _media(tmp_path, 3)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    summary = import_paths(gw.ingestor, files, "cli:test")
    assert summary.counts[Outcome.STORED.value] == 3
    assert summary.counts[SKIPPED] == 2  # DICOMDIR and README.TXT
    assert summary.refused == []
    assert {p.name for p, _ in summary.skipped} == {"DICOMDIR", "README.TXT"}
    assert _refusals(gw) == []


def test_dicomdir_alone_brings_its_files_whatever_their_case(gw: Gateway, tmp_path: Path) -> None:
    """Media mounted with lower-case names and ISO 9660 ';1' suffixes."""
    from gateway.importer import import_paths

    root, _ = _media(tmp_path, 2)
    mangled = tmp_path / "mounted"
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        target = mangled / Path(*[part.lower() for part in rel.parts])
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            name = target.name if p.name == "DICOMDIR" else target.name + ";1"
            shutil.copy(p, target.with_name(name))
    dicomdir = mangled / "dicomdir"
    summary = import_paths(gw.ingestor, [dicomdir], "cli:test")
    assert summary.counts[Outcome.STORED.value] == 2, summary
    assert summary.files == 3


def test_a_file_the_dicomdir_names_but_the_media_lacks_is_a_refusal(
    gw: Gateway, tmp_path: Path
) -> None:
    root, _ = _media(tmp_path, 2)
    instance = next(p for p in root.rglob("*") if p.is_file() and p.name.isupper() and
                    p.name not in ("DICOMDIR", "README.TXT"))  # fmt: skip
    instance.unlink()
    from gateway.importer import import_paths

    summary = import_paths(gw.ingestor, [root / "DICOMDIR"], "cli:test")
    assert summary.counts[Outcome.STORED.value] == 1
    assert len(summary.refused) == 1 and "not on the media" in summary.refused[0][1]
    assert len(_refusals(gw)) == 1
