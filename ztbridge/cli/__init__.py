"""The ``ztbridge`` command line, one module per command group, above ``gateway``.

``gateway`` is the core and imports nothing from here (nor ``portal`` nor ``dicom_scp``);
these modules only parse arguments, call a core service and print. ``main`` is the console
script (``ztbridge = "ztbridge.cli:main"``).
"""

from __future__ import annotations

import os
import sys

#: The root's options that take a value (``--config FILE``), skipped to find the command.
_VALUED_OPTIONS = ("--config", "-c")


def command_named(argv: list[str]) -> str | None:
    """The command or group the arguments run, if one can be told without parsing them all.

    Why: building the whole tree imports every command's module; a command run with only its
    own module loaded starts in a fraction of the time (integration tests run ``ztbridge``
    dozens of times). ``None`` (the root's ``--help``, no command, anything unusual) builds
    the whole tree, so help, suggestions and usage errors read exactly as before.
    """
    from ztbridge.cli.app import command_names

    args = iter(argv)
    for arg in args:
        if arg in _VALUED_OPTIONS:
            next(args, None)
        elif arg.startswith("--config=") or (arg.startswith("-c") and len(arg) > 2):
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg if arg in command_names() else None
    return None


def main() -> None:
    """Console entry point.

    Everything ztbridge writes (index, keys, exports) may hold patient data or key
    material: files are created readable by their owner only.
    """
    from ztbridge.cli.app import build
    from ztbridge.cli.console import err, run

    os.umask(0o077)
    try:
        # Only the command's own module is imported (``ztbridge agent`` runs on a modality's
        # host, where the server's dependencies, ztbridge[server], are not installed), and a
        # command module imports its heavy libraries when it runs: both steps may find one
        # missing.
        run(build(command_named(sys.argv[1:])))
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
