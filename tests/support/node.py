"""Tests that need npm packages: skip on a developer machine without them, fail in CI.

A skipped reference check in CI would be a silent pass, so with ``CI`` set a missing
package is a failure that names the npm command to run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def in_ci() -> bool:
    """Whether the CI environment variable is set to something true."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_node_package(node_modules: Path, package: str, npm_command: str) -> str:
    """Path to ``node`` once ``package`` is installed under ``node_modules``."""
    exe = shutil.which("node")
    problem = None
    if exe is None:
        problem = "node is not installed"
    elif not (node_modules / package).is_dir():
        problem = f"{node_modules} is missing {package}: run `{npm_command}`"
    if problem is not None:
        if in_ci():
            pytest.fail(f"{problem} (CI is set, so this check may not be skipped)")
        pytest.skip(problem)
    assert exe is not None
    return exe
