"""The one writer of new files: owner-only, never over anything, whole, and the only one."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from gateway import durable, keys, pki
from gateway.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]


def test_creates_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        target = tmp_path / "sub" / "key.pem"
        assert durable.create_file(target, b"secret")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["key.pem"]  # no temp file left


def test_never_overwrites_a_file_or_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "ca.pem"
    target.write_bytes(b"the modality's CA")
    assert durable.create_file(target, b"other") is False
    with pytest.raises(InvalidInputError, match="already exists"):
        durable.write_new_file(target, b"other")
    assert target.read_bytes() == b"the modality's CA"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "link.pem"
    link.symlink_to(victim)
    with pytest.raises(InvalidInputError):
        pki.write_new_file(link, b"other")
    assert victim.read_bytes() == b"keep"


def test_two_writers_racing_for_one_name_one_wins_whole(tmp_path: Path) -> None:
    target = tmp_path / "custodian.json"
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        results.append(keys.create_private_file(target, f"writer {i}\n" * 1000))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    text = target.read_text()
    assert len(set(text.splitlines())) == 1 and len(text.splitlines()) == 1000


def test_without_hard_links_it_still_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FAT stick (``ca export --out /media/usb/ca.pem``) has no link(2)."""

    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    target = tmp_path / "ca.pem"
    durable.write_new_file(target, b"one")
    with pytest.raises(InvalidInputError):
        durable.write_new_file(target, b"two")
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem"]


def test_replace_file_swaps_whole(tmp_path: Path) -> None:
    target = tmp_path / "server.pem"
    durable.replace_file(target, b"old")
    durable.replace_file(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.pem"]


def test_no_other_module_opens_files_exclusively() -> None:
    """Key, certificate and enrollment files go through gateway/durable.py; the store's own
    pack and CAR files are the one other user of O_EXCL (append-only, not small files)."""
    users = sorted(
        str(p.relative_to(ROOT))
        for package in ("gateway", "dicom_scp", "portal", "ztbridge")
        for p in (ROOT / package).rglob("*.py")
        if "O_EXCL" in p.read_text()
    )
    assert users == ["gateway/durable.py", "gateway/store/blockstore.py"]
