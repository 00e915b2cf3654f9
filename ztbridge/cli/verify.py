"""``ztbridge verify``: recompute every study from the store and check it against the chain."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ztbridge.cli.chain import anchoring_of
from ztbridge.cli.console import fail, out, progress
from ztbridge.cli.context import custodian_passphrase, gateway


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
    from gateway.keys import unlock_custodian
    from gateway.ledger_status import open_ledgers
    from gateway.verify import Verifier

    if (study is None) == (not all_studies):
        raise fail("give either --study UID or --all")
    with gateway() as gw:
        anchoring = anchoring_of(gw)
        pair = unlock_custodian(gw.keys_dir, custodian_passphrase(gw))
        ledgers = open_ledgers(gw, anchoring, full_replay=full_replay)
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
