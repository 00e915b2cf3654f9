"""``ztbridge audit verify``: the hash-chained audit log."""

from __future__ import annotations

import typer

from ztbridge.cli.console import fail, out
from ztbridge.cli.context import gateway

app = typer.Typer(help="The hash-chained audit log.")


@app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; name the first edited, reordered or missing entry."""
    with gateway() as gw:
        problem = gw.audit.verify()
        if problem is not None:
            raise fail(f"audit chain broken at entry {problem.seq}: {problem.problem}")
        head = gw.audit.head()
        out.print(f"audit chain intact: {head[0] if head else 0} entries")
