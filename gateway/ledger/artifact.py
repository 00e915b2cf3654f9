"""The committed contract artifact, loaded once.

Why from ``contracts/build`` next to the package rather than package data: the artifact is
built by the pinned solc toolchain and committed there; copying it into the package would make
a second copy that could go stale. Python never needs node or solc to use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gateway.ledger.errors import LedgerConfigError

ARTIFACT_DIR = Path(__file__).resolve().parents[2] / "contracts" / "build"
REGISTRY_ARTIFACT = ARTIFACT_DIR / "ZtbridgeRegistry.json"


@dataclass(frozen=True)
class Artifact:
    """What deploying and calling the registry needs: ABI, creation bytecode, compiler."""

    contract_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_hash: str


def load_artifact(path: Path = REGISTRY_ARTIFACT) -> Artifact:
    """Parse an artifact file; a missing or malformed one is a configuration error."""
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return Artifact(
            contract_name=str(raw["contractName"]),
            abi=list(raw["abi"]),
            bytecode=str(raw["bytecode"]),
            deployed_bytecode=str(raw["deployedBytecode"]),
            compiler_version=str(raw["compiler"]["version"]),
            source_hash=str(raw.get("sourceHash", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LedgerConfigError(
            f"cannot load contract artifact {path}: {e} (ztbridge runs from its source tree, or"
            " an editable install of it: contracts/build must sit beside gateway/)"
        ) from e


@lru_cache(maxsize=1)
def registry_artifact() -> Artifact:
    """The registry artifact, read once per process."""
    return load_artifact()
