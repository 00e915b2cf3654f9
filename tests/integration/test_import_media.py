"""``ztbridge import`` of a DICOM disc as a new user has one: exit 0 when only skips."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.fileset import FileSet

from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import make_gateway


def test_import_of_media_skips_dicomdir_and_readme_and_exits_zero(tmp_path: Path) -> None:
    series = make_ct_series(tmp_path / "src", 4)
    fs = FileSet()
    for f in series.files:
        fs.add(dcmread(f))
    media = tmp_path / "media"
    fs.write(media)
    (media / "README.TXT").write_text("Viewer on this disc\n")
    gw = make_gateway(tmp_path)
    result = gw.cli("import", str(media), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "4 stored" in result.stdout and "0 refused" in result.stdout, output
    assert "2 skipped" in result.stdout, output
    assert "DICOMDIR" in result.stdout and "README.TXT" in result.stdout
    assert "force=True" not in output
    status = gw.cli("status").stdout
    assert "not running" in status  # no 'ztbridge up' on this home
