"""The two admin ceremonies a page runs with the custodian passphrase typed in its form:
recovering an account, and linking a patient account to a Patient ID.

The same core services as ``ztbridge user recover`` and ``ztbridge patient link``
(``Accounts.recover``, ``accounts.links.link_patient``); the only difference is where the
ledger session comes from: a running portal holds the process's one writable session, so
the link ceremony runs inside ``run_on_ledger`` instead of connecting a second one. The
passphrase is used to unlock the custodian key for this request only, never logged.
"""

from __future__ import annotations

from gateway.accounts.links import LinkReport, link_patient
from gateway.accounts.users import Invitation
from gateway.errors import InvalidInputError
from gateway.keys import unlock_custodian
from gateway.service import Gateway


def recover(gw: Gateway, username: str, passphrase: str, actor: str) -> Invitation:
    """New one-time enrollment link from the escrow (old credentials and sessions end)."""
    pair = unlock_custodian(gw.keys_dir, passphrase)
    return gw.users.recover(username, pair, actor)


def link(
    gw: Gateway, username: str, patient_id: str, issuer: str | None, passphrase: str, actor: str
) -> LinkReport:
    """Link ``username`` to the Patient ID; earlier studies are re-sealed to the patient and
    their records moved on-chain (which needs the custodian passphrase)."""
    account = gw.users.get(username)
    pid = patient_id.strip()
    if not pid:
        raise InvalidInputError("give the Patient ID (0010,0020) to link")
    earlier = gw.patient_links.studies_of(pid, issuer)
    pair = unlock_custodian(gw.keys_dir, passphrase) if earlier else None
    anchoring = gw.anchoring
    if earlier and anchoring is not None:
        return anchoring.run_on_ledger(
            lambda s: link_patient(
                gw.patient_links, account, pid, issuer, anchoring, pair, actor, gw.audit, s
            )
        )
    return link_patient(gw.patient_links, account, pid, issuer, anchoring, pair, actor, gw.audit)
