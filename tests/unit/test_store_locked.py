"""A store open in another process is its own error, recognised by type, not by message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import StorageError, StoreLockedError
from gateway.service import open_gateway
from gateway.settings import load_settings
from gateway.store import PackBlockStore

ROOT = Path(__file__).resolve().parents[2]


def test_second_writer_in_this_process_gets_store_locked(tmp_path: Path) -> None:
    with PackBlockStore(tmp_path / "store"), pytest.raises(StoreLockedError):
        PackBlockStore(tmp_path / "store")


def test_writer_in_another_process_makes_open_gateway_say_what_to_do(tmp_path: Path) -> None:
    """The lock is a real flock held by a real second process."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from gateway.store import PackBlockStore;"
            f"s = PackBlockStore(__import__('pathlib').Path({str(tmp_path / 'store')!r}));"
            "print('open', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        settings = load_settings(None, home=tmp_path, ledger={"enabled": False})
        with pytest.raises(StoreLockedError, match="stop it first") as caught:
            open_gateway(settings, store_access="write")
        assert isinstance(caught.value, StorageError)  # still caught where storage is
        gw = open_gateway(settings, store_access="read")  # readers go alongside
        gw.close()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_nothing_matches_the_lock_message_any_more() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for package in ("gateway", "dicom_scp", "portal", "ztbridge")
        for p in (ROOT / package).rglob("*.py")
        if '"already open" in' in p.read_text()
    ]
    assert offenders == []
