"""pyproject.toml says what the code accepts: the pynetdicom pin, and an agent install that
pulls none of the server's dependencies."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from dicom_scp.guard import SUPPORTED_PYNETDICOM
from dicom_scp.reactor import CHECKED_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SERVER_ONLY = {"web3", "sqlalchemy", "fastapi", "pynetdicom", "pydicom", "uvicorn", "psycopg"}


def _requirements(names: list[str]) -> dict[str, Requirement]:
    return {(r := Requirement(text)).name.lower(): r for text in names}


def _pinned(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in constraints.txt")


def test_pynetdicom_pin_accepts_exactly_what_the_guard_accepts() -> None:
    spec = _requirements(PROJECT["optional-dependencies"]["server"])["pynetdicom"].specifier
    for candidate in ("2.0.2", "3.0.0", "3.0.4", "3.0.9", "3.1.0", "3.2.1", "4.0.0"):
        accepted_by_guard = candidate.startswith(SUPPORTED_PYNETDICOM)
        assert spec.contains(candidate) == accepted_by_guard, (candidate, str(spec))


def test_the_pinned_pynetdicom_is_the_one_the_reactor_was_checked_against() -> None:
    pinned = _pinned("pynetdicom")
    assert pinned in CHECKED_VERSIONS
    spec = _requirements(PROJECT["optional-dependencies"]["server"])["pynetdicom"].specifier
    assert Version(pinned) in spec


def test_base_install_is_the_agent_and_pulls_no_server_dependency() -> None:
    base = set(_requirements(PROJECT["dependencies"]))
    assert not base & SERVER_ONLY, base & SERVER_ONLY
    assert {"httpx", "psutil", "cryptography", "typer"} <= base
    assert "agent" in PROJECT["optional-dependencies"]
    server = set(_requirements(PROJECT["optional-dependencies"]["server"]))
    assert server >= SERVER_ONLY


def test_every_install_command_names_the_server_extra() -> None:
    for name in ("Makefile", "Dockerfile"):
        lines = [
            line
            for line in (ROOT / name).read_text().splitlines()
            if " install " in line and "constraints.txt" in line and "-e" in line
        ]
        assert lines, name
        for line in lines:
            assert ".[server" in line, f"{name}: {line.strip()}"


def test_readme_calls_ztbridge_without_activating_the_virtualenv() -> None:
    """Activation puts pynetdicom's storescu/echoscu before DCMTK's on the PATH (the venv has
    them), and the README's DCMTK TLS command then fails; the README must not send a new
    user that way, and must say why."""
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/ztbridge" in readme
    for line in readme.splitlines():
        if "source .venv/bin/activate" in line:
            assert "not" in line.lower().split("source")[0], line
    assert "storescu" in readme.split("source .venv/bin/activate", 1)[-1][:400]
