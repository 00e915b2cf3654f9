"""``ztbridge status``: where data lives, what is stored, whether ``up`` runs."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ztbridge.cli.console import out
from ztbridge.cli.context import gateway


def status() -> None:
    """Show where data lives, what is stored, the listeners and whether 'up' runs."""
    from gateway.status import gather

    with gateway() as gw:
        found = gather(gw)
    table = Table(show_header=False, box=None)
    for k, v in found.rows():
        table.add_row(f"[bold]{k}[/]", escape(v))
    out.print(table)
