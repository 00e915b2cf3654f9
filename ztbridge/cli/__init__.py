"""The ``ztbridge`` command line, one module per command group, above ``gateway``.

``gateway`` is the core and imports nothing from here (nor ``portal`` nor ``dicom_scp``);
these modules only parse arguments, call a core service and print. ``main`` is the console
script (``ztbridge = "ztbridge.cli:main"``).
"""

from __future__ import annotations

import os
import sys

#: Commands run with only their own module loaded: ``agent`` runs on a modality's host,
#: where the server's dependencies (``ztbridge[server]``) are not installed.
LIGHT_COMMANDS = ("agent",)


def main() -> None:
    """Console entry point.

    Everything ztbridge writes (index, keys, exports) may hold patient data or key
    material: files are created readable by their owner only.
    """
    from ztbridge.cli.app import build
    from ztbridge.cli.console import run

    os.umask(0o077)
    first = sys.argv[1] if len(sys.argv) > 1 else None
    run(build(first if first in LIGHT_COMMANDS else None))
