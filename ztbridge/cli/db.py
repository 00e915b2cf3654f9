"""``ztbridge db upgrade`` / ``ztbridge db current``: the index schema, deliberately.

Standalone, not registered: the coordinator mounts it with
``app.add_typer(db_app, name="db")``. Logic in ``gateway.index.maintenance``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from gateway.errors import ZtbridgeError
from ztbridge.cli.context import settings as configured

if TYPE_CHECKING:
    from gateway.settings import Settings

db_app = typer.Typer(no_args_is_help=True, help="The index schema (Alembic revisions).")
_out = Console()
_err = Console(stderr=True)


def _settings(config: Path | None) -> Settings:
    """``--config`` given here, else the root's ``--config`` / ``$ZTBRIDGE_CONFIG``."""
    from gateway.settings import load_settings

    return load_settings(config) if config is not None else configured()


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(1)


@db_app.command("current")
def db_current(
    config: Annotated[Path | None, typer.Option("--config", "-c", hidden=True)] = None,
) -> None:
    """Show the index's schema revision and this code's; exit 1 if the index is newer."""
    from gateway.index.maintenance import index_revision

    try:
        rev = index_revision(_settings(config))
    except ZtbridgeError as e:
        raise _fail(str(e)) from None
    state = "up to date" if rev.up_to_date else "needs upgrade" if rev.known else "NEWER than code"
    _out.print(f"index revision {rev.current or '(empty)'}, code head {rev.head}: {state}")
    if not rev.known:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(
    config: Annotated[Path | None, typer.Option("--config", "-c", hidden=True)] = None,
) -> None:
    """Upgrade the index to this code's schema (also done by every open); back it up first."""
    from gateway.index.maintenance import upgrade_index

    try:
        before, after = upgrade_index(_settings(config))
    except ZtbridgeError as e:
        raise _fail(str(e)) from None
    if before == after:
        _out.print(f"index already at revision {after}")
    else:
        _out.print(f"index upgraded from revision {before or '(empty)'} to {after}")
