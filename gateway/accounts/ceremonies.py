"""The two admin ceremonies that need the custodian passphrase: recovering an account, and
linking a patient account to a Patient ID. ``ztbridge user recover``, ``ztbridge patient
link`` and the admin pages all call these, so the CLI and the portal cannot drift apart.

The passphrase unlocks the custodian key for this call only and is never logged. The link
ceremony moves earlier records on-chain, which needs the ledger: a process that already
holds it (a running portal, whose worker keeps the one writable session) runs the ceremony
on that session (``run_on_ledger``); any other process takes the ledger lock for the
ceremony itself (``link_patient``), and is told to stop ``ztbridge up`` if that one holds it.
"""

from __future__ import annotations

from gateway.accounts.links import LinkReport, link_patient
from gateway.accounts.users import Invitation
from gateway.errors import ConfigError, InvalidInputError
from gateway.keys import unlock_custodian
from gateway.service import Gateway


def recover_account(gw: Gateway, username: str, passphrase: str | None, actor: str) -> Invitation:
    """A new one-time enrollment link from the escrow (old credentials and sessions end)."""
    gw.users.get(username)  # an unknown account is named before the passphrase is asked for
    pair = unlock_custodian(gw.keys_dir, passphrase)
    return gw.users.recover(username, pair, actor)


def link_account(
    gw: Gateway,
    username: str,
    patient_id: str,
    issuer: str | None,
    passphrase: str | None,
    actor: str,
) -> LinkReport:
    """Link ``username`` to the Patient ID; studies that arrived before are re-sealed to the
    patient and their records moved on-chain (that needs the custodian passphrase)."""
    account = gw.users.get(username)
    pid = patient_id.strip()
    if not pid:
        raise InvalidInputError("give the Patient ID (0010,0020) to link")
    earlier = gw.patient_links.studies_of(pid, issuer)
    pair = None
    if earlier:
        if not passphrase:
            raise ConfigError(
                f"{len(earlier)} study(ies) of this Patient ID arrived before the link and are"
                " re-sealed to the patient: the custodian passphrase is needed"
                " (ZTBRIDGE_CUSTODIAN_PASSPHRASE for the CLI, or the admin page's form)"
            )
        pair = unlock_custodian(gw.keys_dir, passphrase)
    anchoring = gw.anchoring
    if earlier and anchoring is not None and anchoring.lock.held:
        return anchoring.run_on_ledger(
            lambda s: link_patient(
                gw.patient_links, account, pid, issuer, anchoring, pair, actor, gw.audit, s
            )
        )
    return link_patient(gw.patient_links, account, pid, issuer, anchoring, pair, actor, gw.audit)
