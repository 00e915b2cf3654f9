"""The committed contract artifact must be exactly what its sources compile to.

The gateway deploys and calls the registry from ``contracts/build/ZtbridgeRegistry.json``
without compiling anything, so a source edit that was not rebuilt (or a hand-edited ABI)
would ship bytecode nobody reviewed. These tests rebuild with the pinned solc-js into a
temporary directory and compare. They need node and ``contracts/node_modules``
(``npm ci --prefix contracts``): without them the rebuild fails naming the command to
run, so the check cannot quietly vanish. The static checks below it
(pins, settings) need neither and always run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.contracts.harness import ARTIFACT, CONTRACTS_DIR, load_artifact
from tests.support.node import require_node_package

BUILD_SCRIPT = CONTRACTS_DIR / "build.mjs"
NODE_MODULES = CONTRACTS_DIR / "node_modules"
EVM_VERSION = "cancun"


@pytest.fixture(scope="module")
def node() -> str:
    """Path to node once the npm packages are installed; else fail naming the npm command."""
    return require_node_package(NODE_MODULES, "solc", "npm ci --prefix contracts")


@pytest.fixture(scope="module")
def rebuilt(node: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A fresh build of the sources into a temporary directory: its path and parsed JSON."""
    out = tmp_path_factory.mktemp("contracts-build")
    proc = subprocess.run(
        [node, str(BUILD_SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr}"
    path = out / ARTIFACT.name
    return path, load_artifact(path)


@pytest.mark.parametrize(
    "field",
    ["bytecode", "deployedBytecode", "abi", "sourceHash", "sources", "compiler", "settings"],
)
def test_committed_artifact_matches_sources(
    rebuilt: tuple[Path, dict[str, Any]], field: str
) -> None:
    """Each field of the committed artifact equals the freshly compiled one."""
    _, fresh = rebuilt
    committed = load_artifact()
    assert committed[field] == fresh[field], (
        f"contracts/build/{ARTIFACT.name}: '{field}' no longer matches the sources; "
        "rebuild with `node contracts/build.mjs` and commit contracts/build/"
    )


def test_build_is_byte_identical(rebuilt: tuple[Path, dict[str, Any]]) -> None:
    """Same inputs, same bytes: the artifact is reproducible, not merely equivalent."""
    path, _ = rebuilt
    assert path.read_bytes() == ARTIFACT.read_bytes()


def test_check_mode_catches_a_stale_artifact(node: str, tmp_path: Path) -> None:
    """--check exits non-zero and names the field when an artifact differs."""
    stale = load_artifact()
    stale["bytecode"] = stale["bytecode"][:-2] + ("00" if stale["bytecode"][-2:] != "00" else "01")
    (tmp_path / ARTIFACT.name).write_text(json.dumps(stale), encoding="utf-8")
    proc = subprocess.run(
        [node, str(BUILD_SCRIPT), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1
    assert "bytecode" in proc.stderr


# ---------------------------------------------------------------- static: no node needed


def test_versions_are_pinned_exactly() -> None:
    """package.json pins exact versions, the lock agrees, and the artifact records them."""
    package = json.loads((CONTRACTS_DIR / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((CONTRACTS_DIR / "package-lock.json").read_text(encoding="utf-8"))
    deps: dict[str, str] = package["dependencies"]
    assert set(deps) == {"solc", "@openzeppelin/contracts"}
    for name, version in deps.items():
        assert version[:1].isdigit(), f"{name} is not pinned exactly: {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    artifact = load_artifact()
    assert artifact["dependencies"] == deps
    assert artifact["compiler"]["version"].startswith(deps["solc"] + "+commit.")


def test_artifact_settings_are_the_pinned_ones() -> None:
    """Optimizer on with fixed runs, EVM version pinned to one eth-tester and anvil both run."""
    artifact = load_artifact()
    assert artifact["settings"]["evmVersion"] == EVM_VERSION
    assert artifact["settings"]["optimizer"]["enabled"] is True
    assert isinstance(artifact["settings"]["optimizer"]["runs"], int)
    assert artifact["contractName"] == "ZtbridgeRegistry"
    assert artifact["bytecode"].startswith("0x") and artifact["deployedBytecode"].startswith("0x")
    # EIP-170: deployed code must stay under 24,576 bytes to be deployable at all.
    assert (len(artifact["deployedBytecode"]) - 2) // 2 < 24_576
    src = (CONTRACTS_DIR / "src" / "ZtbridgeRegistry.sol").read_text(encoding="utf-8")
    assert f"pragma solidity {artifact['dependencies']['solc']};" in src
