"""``ztbridge verify``: recompute every study from the store and check it against the chain."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from gateway.anchoring.service import Anchoring
from gateway.keys import unlock_custodian
from gateway.ledger.errors import LedgerError
from gateway.service import Gateway
from gateway.verify import Verifier
from ztbridge.cli.chain import anchoring_of
from ztbridge.cli.console import fail, out, progress
from ztbridge.cli.context import custodian_passphrase, gateway

if TYPE_CHECKING:
    from gateway.anchoring.session import Session
    from gateway.ledger.ledger import Ledger


@contextmanager
def _ledgers(
    gw: Gateway, anchoring: Anchoring, *, full_replay: bool = False
) -> Iterator[tuple[Session | None, Any]]:
    """The active registry (or None if unreachable) and a deployment-id -> Ledger lookup."""
    from gateway.anchoring.session import open_deployment
    from gateway.ledger.deployment import list_deployments

    sessions: dict[int, Session] = {}
    active: Session | None = None
    error: str | None = None
    try:
        active = anchoring.connect(read_only=True, full_replay=full_replay)
        sessions[active.deployment.id] = active
    except LedgerError as e:
        error = str(e)
    deployments = {d.id: d for d in list_deployments(gw.db)}

    def ledger_for(deployment_id: int) -> Ledger:
        if deployment_id not in sessions:
            if deployment_id not in deployments:
                raise LedgerError(f"unknown deployment {deployment_id}")
            if active is None and error is not None:
                raise LedgerError(error)
            sessions[deployment_id] = open_deployment(
                gw.settings, deployments[deployment_id], full_replay=full_replay
            )
        return sessions[deployment_id].ledger

    try:
        yield active, ledger_for
    finally:
        for session in sessions.values():
            session.close()


def verify_cmd(
    study: Annotated[
        str | None, typer.Option("--study", help="Study Instance UID to verify")
    ] = None,
    all_studies: Annotated[
        bool, typer.Option("--all", help="every study, the chain's records and the audit log")
    ] = False,
    full_replay: Annotated[
        bool,
        typer.Option(
            "--full-replay",
            help="rebuild the embedded chain from its journal alone, not its snapshot (slow)",
        ),
    ] = False,
) -> None:
    """Recompute every study from the store and check it against the chain; exit 1 on mismatch.

    Needs the custodian passphrase (ZTBRIDGE_CUSTODIAN_PASSPHRASE) to decrypt.
    """
    if (study is None) == (not all_studies):
        raise fail("give either --study UID or --all")
    with gateway() as gw:
        anchoring = anchoring_of(gw)
        pair = unlock_custodian(gw.keys_dir, custodian_passphrase(gw))
        ledgers = _ledgers(gw, anchoring, full_replay=full_replay)
        with ledgers as (active, ledger_for), progress() as bar:
            task = bar.add_task("verifying", total=None)
            verifier = Verifier(gw, pair, ledger_for, lambda: bar.advance(task))
            verifier.check_studies(study)
            if all_studies:
                if active is None:
                    verifier.problem("the chain is unreachable: records and audit not checked")
                else:
                    verifier.check_chain_records(active)
                    verifier.check_audit(active)
        report = verifier.report
    for problem in report.problems:
        out.print(f"[red]MISMATCH[/] {escape(str(problem))}", highlight=False, soft_wrap=True)
    for note in report.notes:
        out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    summary = (
        f"{report.batches} batches, {report.instances} instances,"
        f" {report.audit_ranges} audit ranges checked"
    )
    if report.problems:
        raise fail(f"{len(report.problems)} mismatches; {summary}")
    out.print(f"verified: {summary}; everything matches the chain")
