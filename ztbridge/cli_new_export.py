"""Thin ``export`` and ``store export-car`` commands over ``gateway.export`` (not registered).

They replace the two commands of the same names in ``gateway/cli.py``. All logic is in the
core (``export_study``, ``export_car_file``); these only print and choose the exit code.
Register, where the CLI's ``app`` and ``store_app`` live, instead of the old functions::

    from ztbridge.cli_new_export import export_cmd, store_export_car
    app.command("export")(export_cmd)
    store_app.command("export-car")(store_export_car)

The helpers imported below (``gateway``, ``out``, ``fail``, ``_progress``, ``_passphrase``)
are the CLI's own; point the import at wherever the CLI package keeps them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from gateway.cli import _passphrase, _progress, fail, gateway, out
from gateway.errors import InvalidInputError
from gateway.export import export_car_file, export_study

EXIT_SOME_FAILED = 2
"""``export`` wrote what it could but some instances failed (named on stderr)."""


def export_cmd(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write Part-10 files into")],
) -> None:
    """Decrypt a study with the custodian key into <out>/<study>/<series>/<SOP>.dcm files.

    Never overwrites a file. Every instance that verifies is written; each one that does not
    (damaged, missing, or its file already exists) is named, and the exit code is 2.
    """
    with gateway() as gw:
        with _progress() as bar:
            task = bar.add_task("exporting", total=None)
            report = export_study(gw, study, out_dir, _passphrase(gw), lambda _f: bar.advance(task))
        out.print(f"{len(report.written)} files written under {out_dir}")
        if report.failed:
            for f in report.failed:
                version = "" if f.version == 1 else f" (version {f.version})"
                out.print(  # one line each, never wrapped: scripts grep for the UID
                    f"FAILED instance {f.sop_instance_uid}{version}: {escape(f.reason)}",
                    highlight=False,
                    soft_wrap=True,
                )
            raise fail(
                f"{len(report.failed)} instance(s) not exported (listed above)", EXIT_SOME_FAILED
            )


def store_export_car(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID")],
    out_file: Annotated[Path, typer.Option("--out", help="CAR file to write (must not exist)")],
) -> None:
    """Write a study's ciphertext objects as a CARv1 file ('ipfs dag import' accepts it).

    Refuses an existing file; a failure part-way leaves no file.
    """
    with gateway() as gw:
        try:
            objects, blocks = export_car_file(gw, study, out_file)
        except InvalidInputError as e:
            raise fail(str(e)) from e
        out.print(f"{objects} objects, {blocks} blocks written to {out_file}")
