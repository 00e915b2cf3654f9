"""``ztbridge patient link``: tie a patient account to a DICOM Patient ID.

Thin: ``gateway.accounts.links.link_patient`` does the ceremony (an admin page calls it too).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ztbridge.cli.console import actor, fail, out
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
    ZTBRIDGE_CUSTODIAN_PASSPHRASE and the ledger: stop 'ztbridge up' for that)."""
    from gateway.accounts.links import link_patient
    from gateway.accounts.onchain import sync_now
    from gateway.keys import unlock_custodian

    with gateway("read") as gw:
        account = gw.users.get(username)
        earlier = gw.patient_links.studies_of(patient_id, issuer)
        pair = None
        if earlier:
            passphrase = custodian_passphrase(gw)
            if not passphrase:
                raise fail(
                    f"{len(earlier)} study(ies) of this Patient ID arrived before the link and"
                    " are re-sealed to the patient: set ZTBRIDGE_CUSTODIAN_PASSPHRASE"
                )
            pair = unlock_custodian(gw.keys_dir, passphrase)
        report = link_patient(
            gw.patient_links, account, patient_id, issuer, gw.anchoring, pair, actor(), gw.audit
        )
        out.print(
            f"{escape(account.username)} is linked to Patient ID {escape(patient_id)}"
            + (f" (issuer {escape(issuer)})" if issuer else " (any issuer)")
            + f": {len(report.studies)} earlier study(ies) handed over,"
            f" {report.records_moved} record(s) moved on-chain, {report.wraps_added} key"
            " wrap(s) added",
            highlight=False,
        )
        if not earlier and gw.anchoring is not None and not sync_now(gw.anchoring):
            out.print("registry: the running 'ztbridge up' registers the account", highlight=False)
