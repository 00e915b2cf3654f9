"""Tests that need npm packages or peer binaries: a missing one is a failure, never a skip.

``make test`` installs every peer (npm packages, DCMTK, anvil), so a missing one means the
set-up is broken; a skipped reference check would be a silent pass that hides exactly that.
The failure names the command that installs what is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def missing_peer(problem: str) -> None:
    """Fail the test: a peer the suite needs is not installed (``problem`` names the fix)."""
    pytest.fail(f"{problem} (`make test` installs every test peer)", pytrace=False)


def require_node_package(node_modules: Path, package: str, npm_command: str) -> str:
    """Path to ``node`` once ``package`` is installed under ``node_modules``."""
    exe = shutil.which("node")
    if exe is None:
        missing_peer("node is not installed")
    elif not (node_modules / package).is_dir():
        missing_peer(f"{node_modules} is missing {package}: run `{npm_command}`")
    assert exe is not None
    return exe
