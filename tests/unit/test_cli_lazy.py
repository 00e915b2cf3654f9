"""The CLI starts light: ``ztbridge --help`` imports no server library, and a command that
only reads the index (``status``, ``device list``) loads neither the ledger's web3/py-evm
nor the DICOM listener nor the portal. Integration tests run ``ztbridge`` dozens of times;
each heavy import at registration cost every one of those runs seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ztbridge.cli import command_named
from ztbridge.cli.app import COMMANDS, GROUPS

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("web3", "sqlalchemy", "fastapi", "pynetdicom", "pydicom", "uvicorn", "psycopg")
#: What opening the index for a read never needs: the chain, the listener, the portal.
NOT_FOR_READS = ("web3", "eth_account", "eth_tester", "eth", "py_ecc", "pynetdicom", "fastapi")


def _loaded_by(args: list[str], env: dict[str, str], watch: tuple[str, ...]) -> list[str]:
    """Run the console entry point with ``args`` in a fresh interpreter; return which of
    ``watch`` (top-level packages) it imported."""
    probe = (
        "import sys\n"
        f"sys.argv = ['ztbridge', *{args!r}]\n"
        "from ztbridge.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({watch!r}))\n"
        "print('LOADED', ','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = result.stdout.strip().splitlines()[-1]
    assert loaded.startswith("LOADED"), result.stdout
    return [m for m in loaded.removeprefix("LOADED").strip().split(",") if m]


def test_help_loads_no_server_library() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert _loaded_by(["--help"], env, SERVER_ONLY) == []


def test_read_commands_load_neither_ledger_nor_listener_nor_portal(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ZTBRIDGE_HOME": str(tmp_path / "zt"),
        "ZTBRIDGE_CUSTODIAN_PASSPHRASE": "lazy-cli-test-passphrase",
    }
    env.pop("ZTBRIDGE_CONFIG", None)
    added = subprocess.run(
        [sys.executable, "-c", "from ztbridge.cli import main; main()", "device", "add",
         "--ae", "LAZY", "--ip", "127.0.0.1", "--posture-policy", "none"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    config = tmp_path / "zt.toml"
    config.write_text(f"home = {str(tmp_path / 'zt')!r}\n")
    for args in (["status"], ["device", "list"], ["--config", str(config), "status"]):
        assert _loaded_by(args, env, NOT_FOR_READS) == [], args


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], "status"),
        (["device", "list"], "device"),
        (["--config", "zt.toml", "chain", "info"], "chain"),
        (["-c", "zt.toml", "agent", "--help"], "agent"),
        (["--config=zt.toml", "user", "list"], "user"),
        (["-czt.toml", "studies"], "studies"),
        # the whole tree: the root's help, no command, a typo (for click's suggestion)
        (["--help"], None),
        ([], None),
        (["statuss"], None),
        (["--config"], None),
    ],
)
def test_the_command_is_told_from_the_arguments(argv: list[str], expected: str | None) -> None:
    assert command_named(argv) == expected


def test_every_registered_name_is_found() -> None:
    for name, _ in [*COMMANDS, *GROUPS]:
        assert command_named([name]) == name
