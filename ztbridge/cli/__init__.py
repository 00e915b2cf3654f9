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
    from ztbridge.cli.console import err, run

    os.umask(0o077)
    first = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        tree = build(first if first in LIGHT_COMMANDS else None)
    except ModuleNotFoundError as e:
        # An agent-only install (pip install ztbridge[agent]) lacks the server's libraries.
        err.print(
            f"error: this ztbridge is installed for the posture agent only (no module"
            f" {e.name!r}): 'ztbridge agent' works here; the other commands need"
            " pip install 'ztbridge[server]'",
            highlight=False,
            markup=False,
        )
        raise SystemExit(1) from None
    run(tree)
