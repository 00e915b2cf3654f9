"""The ``ztbridge`` command tree: the root options and where every command is registered.

Registering a command or a command group is one line in ``COMMANDS`` or ``GROUPS`` below:
a module exposes a plain function (a top-level command) or a ``typer.Typer`` (a group), and
never imports this module, so command modules cannot form an import cycle through it.
Entries are "module:attribute" strings, imported when the tree is built, so that a command
with light dependencies (``agent``) can be run without importing the others.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer

#: Top-level commands: (name, "module:function").
COMMANDS: list[tuple[str, str]] = [
    ("up", "ztbridge.cli.up:up"),
    ("status", "ztbridge.cli.status:status"),
    ("import", "ztbridge.cli.import_export:import_cmd"),
    ("export", "ztbridge.cli.import_export:export_cmd"),
    ("verify", "ztbridge.cli.verify:verify_cmd"),
    ("agent", "ztbridge.cli.agent:agent_cmd"),
]

#: Command groups: (name, "module:typer app").
GROUPS: list[tuple[str, str]] = [
    ("device", "ztbridge.cli.device:app"),
    ("ca", "ztbridge.cli.ca:app"),
    ("store", "ztbridge.cli.store:app"),
    ("audit", "ztbridge.cli.audit:app"),
    ("chain", "ztbridge.cli.chain:app"),
    ("study", "ztbridge.cli.study:app"),
    ("studies", "ztbridge.cli.studies:studies_app"),
    ("db", "ztbridge.cli.db:db_app"),
    ("user", "ztbridge.cli.user:app"),
    ("patient", "ztbridge.cli.patient:app"),
]


def command_names() -> set[str]:
    """Every top-level command and group name."""
    return {name for name, _ in COMMANDS} | {name for name, _ in GROUPS}


def _load(ref: str) -> Any:
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _main_options(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (default: $ZTBRIDGE_CONFIG)"),
    ] = None,
) -> None:
    """ztbridge."""
    from ztbridge.cli.console import set_config

    set_config(config)


def build(only: str | None = None) -> typer.Typer:
    """The command tree; with ``only``, just that one top-level command (and the root)."""
    root = typer.Typer(
        name="ztbridge",
        help="Zero-trust PACS bridge: DICOM in, encrypted and content-addressed at rest.",
        no_args_is_help=True,
        add_completion=False,
    )
    root.callback()(_main_options)
    for name, ref in COMMANDS:
        if only is None or name == only:
            root.command(name)(_load(ref))
    for name, ref in GROUPS:
        if only is None or name == only:
            root.add_typer(_load(ref), name=name)
    return root
