"""``ztbridge store export-car|verify``: the content store (ciphertext objects by CID)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from gateway.errors import InvalidInputError
from ztbridge.cli.console import fail, out
from ztbridge.cli.context import gateway

app = typer.Typer(help="The content store (ciphertext objects addressed by CID).")


@app.command("export-car")
def store_export_car(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID")],
    out_file: Annotated[Path, typer.Option("--out", help="CAR file to write (must not exist)")],
) -> None:
    """Write a study's ciphertext objects as a CARv1 file ('ipfs dag import' accepts it).

    Refuses an existing file; a failure part-way leaves no file.
    """
    from gateway.export import export_car_file

    with gateway() as gw:
        try:
            objects, blocks = export_car_file(gw, study, out_file)
        except InvalidInputError as e:
            raise fail(str(e)) from e
        out.print(f"{objects} objects, {blocks} blocks written to {out_file}")


@app.command("verify")
def store_verify() -> None:
    """Re-read every stored block and check it against its CID; check every index row."""
    from gateway.store_check import StoreCheck

    with gateway() as gw:
        check = StoreCheck(gw.store, gw.db)
        problems = 0
        for finding in check.findings():
            problems += 1
            out.print(f"[red]{escape(str(finding))}[/]", highlight=False)
        if problems:
            raise fail(f"{problems} problems found")
        out.print(f"store verified: every block matches its CID; {check.rows} index rows resolve")
