"""``ztbridge study transfer UID --to ADDRESS``: hand a custodian-owned study to its patient.

Thin: all logic is ``gateway.anchoring.transfer.transfer_now`` (an admin page calls the same).
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from ztbridge.cli.console import actor, fail, out
from ztbridge.cli.context import gateway

app = typer.Typer(help="Studies: hand a study from the custodian to its patient.")


@app.command("transfer")
def study_transfer(
    study: Annotated[str, typer.Argument(help="Study Instance UID")],
    to: Annotated[str, typer.Option("--to", help="the patient's registry account (0x…)")],
    kem: Annotated[
        str, typer.Option("--kem", help="KEM of the patient's HPKE key: x25519 or mlkem768-x25519")
    ] = "x25519",
) -> None:
    """Move every record of a study from the custodian to the patient's account (admin-signed,
    one transaction per anchored batch); later batches are anchored to the patient directly.

    Needs ZTBRIDGE_CUSTODIAN_PASSPHRASE (the study keys are re-wrapped to the patient) and the
    ledger (stop 'ztbridge up' first: one process signs at a time).
    """
    from gateway.anchoring.transfer import transfer_now
    from gateway.keys import unlock_custodian

    if kem not in ("x25519", "mlkem768-x25519"):
        raise fail(f"unknown KEM {kem!r}: use x25519 or mlkem768-x25519")
    chosen: Literal["x25519", "mlkem768-x25519"] = (
        "x25519" if kem == "x25519" else "mlkem768-x25519"
    )
    with gateway("write") as gw:
        if gw.anchoring is None:
            raise fail("the ledger is turned off ([ledger] enabled = false)")
        p = gw.settings.custodian_passphrase
        pair = unlock_custodian(gw.keys_dir, p.get_secret_value() if p else None)
        report = transfer_now(gw.anchoring, pair, study, to, chosen, actor())
    out.print(
        f"study {study} is now owned by {to}: {report.transferred} record(s) moved on-chain,"
        f" {report.resealed} pending batch(es) re-sealed, {report.wraps_added} key wrap(s)"
        f" added, {report.skipped} left where they are (older registry or conflict)"
    )
