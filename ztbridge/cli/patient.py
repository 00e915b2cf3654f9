"""``ztbridge patient link``: tie a patient account to a DICOM Patient ID.

Thin: ``gateway.accounts.ceremonies.link_account`` does the ceremony (the admin page's
Patient ID links form calls it too).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ztbridge.cli.console import actor, out
from ztbridge.cli.context import custodian_passphrase, gateway

app = typer.Typer(help="Patient accounts and the DICOM Patient IDs they own.")


@app.command("link")
def patient_link(
    username: Annotated[str, typer.Option("--username", help="the patient's login name")],
    patient_id: Annotated[str, typer.Option("--patient-id", help="DICOM Patient ID (0010,0020)")],
    issuer: Annotated[
        str | None,
        typer.Option("--issuer", help="Issuer of Patient ID (0010,0021); default: any issuer"),
    ] = None,
) -> None:
    """Link the account to the Patient ID: new studies are sealed and anchored to the patient;
    earlier ones are re-sealed to the patient and their records moved on-chain (needs
    ZTBRIDGE_CUSTODIAN_PASSPHRASE and the ledger: stop 'ztbridge up' for that, or use the
    admin page's Patient ID links form, which runs in 'up')."""
    from gateway.accounts.ceremonies import link_account
    from gateway.accounts.onchain import sync_now

    with gateway("read") as gw:
        report = link_account(gw, username, patient_id, issuer, custodian_passphrase(gw), actor())
        account = gw.users.get(username)
        out.print(
            f"{escape(account.username)} is linked to Patient ID {escape(patient_id)}"
            + (f" (issuer {escape(issuer)})" if issuer else " (any issuer)")
            + f": {len(report.studies)} earlier study(ies) handed over,"
            f" {report.records_moved} record(s) moved on-chain, {report.wraps_added} key"
            " wrap(s) added",
            highlight=False,
        )
        if not report.studies and gw.anchoring is not None and not sync_now(gw.anchoring):
            out.print("registry: the running 'ztbridge up' registers the account", highlight=False)
