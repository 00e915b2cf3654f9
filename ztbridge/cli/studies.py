"""``ztbridge studies``: what arrived (list with filters, ``--json``) and ``studies show UID``.

Standalone, not registered: the coordinator mounts it with
``app.add_typer(studies_app, name="studies")``. All logic is in ``gateway.search``; this file
only parses options and prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway.errors import ZtbridgeError
from ztbridge.cli.context import settings as configured

if TYPE_CHECKING:
    from gateway.search import Search
    from gateway.settings import Settings

studies_app = typer.Typer(
    invoke_without_command=True, no_args_is_help=False, help="List and show stored studies."
)
_out = Console()
_err = Console(stderr=True)


def _settings(config: Path | None) -> Settings:
    """``--config`` given here, else the root's ``--config`` / ``$ZTBRIDGE_CONFIG``."""
    from gateway.settings import load_settings

    return load_settings(config) if config is not None else configured()


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(1)


@contextmanager
def _search(config: Path | None) -> Iterator[Search]:
    from gateway.search import open_search

    try:
        search, db = open_search(_settings(config))
    except ZtbridgeError as e:
        raise _fail(str(e)) from None
    try:
        yield search
    except ZtbridgeError as e:
        raise _fail(str(e)) from None
    finally:
        db.close()


def _date(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    digits = value.replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        raise _fail(f"{option} takes a date as YYYY-MM-DD or YYYYMMDD, not {value!r}")
    return digits


@studies_app.callback()
def studies_list(
    ctx: typer.Context,
    patient: Annotated[str | None, typer.Option("--patient", help="Patient ID (exact)")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="patient name, * and ? wildcards")
    ] = None,
    date_from: Annotated[str | None, typer.Option("--from", help="study date from")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="study date to (inclusive)")] = None,
    modality: Annotated[str | None, typer.Option("--modality", help="e.g. CT, MR")] = None,
    accession: Annotated[str | None, typer.Option("--accession")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", hidden=True)] = None,
) -> None:
    """List studies, newest first: patient, date, modalities, description, counts, anchored."""
    from gateway.search import StudyQuery

    if ctx.invoked_subcommand is not None:
        return
    query = StudyQuery(
        patient_id=patient,
        patient_name=name,
        date_from=_date(date_from, "--from"),
        date_to=_date(date_to, "--to"),
        modality=modality.upper() if modality else None,
        accession=accession,
        limit=limit,
    )
    with _search(config) as search:
        found = search.studies(query)
        states = search.anchor_state(s.study_uid for s in found)
    if as_json:
        rows = [{**s.as_dict(), "anchored": states.get(s.study_uid, "")} for s in found]
        typer.echo(json.dumps({"studies": rows}, indent=2, ensure_ascii=False))
        return
    if not found:
        _out.print("no studies match")
        return
    table = Table("Study UID", "Patient", "Name", "Date", "Mod", "Description", "Inst", "Anchored")
    for s in found:
        table.add_row(
            s.study_uid,
            s.patient_id or "[yellow](none)[/]",
            escape(s.patient_name or ""),
            s.study_date or "",
            ",".join(s.modalities),
            escape(s.description or ""),
            str(s.num_instances),
            states.get(s.study_uid, ""),
        )
    _out.print(table)


@studies_app.command("show")
def studies_show(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", hidden=True)] = None,
) -> None:
    """One study: its attributes and its series."""
    with _search(config) as search:
        detail = search.study_detail(study_uid)
    if as_json:
        doc = {**detail.study.as_dict(), "series": [x.as_dict() for x in detail.series]}
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    s = detail.study
    for label, value in [
        ("Study UID", s.study_uid),
        ("Patient ID", s.patient_id or "(none: flagged for reconciliation)"),
        ("Issuer", s.issuer or ""),
        ("Patient name", s.patient_name or ""),
        ("Birth date", s.birth_date or ""),
        ("Sex", s.sex or ""),
        ("Study date", f"{s.study_date or ''} {s.study_time or ''}".strip()),
        ("Accession", s.accession or ""),
        ("Description", s.description or ""),
        ("Referring", s.referring_physician or ""),
        ("Modalities", ",".join(s.modalities)),
        ("Series / instances", f"{s.num_series} / {s.num_instances}"),
        ("Anchored", s.anchored),
    ]:
        _out.print(f"{label:>19}: {escape(value)}", highlight=False)
    table = Table("#", "Series UID", "Mod", "Description", "Inst")
    for x in detail.series:
        table.add_row(
            "" if x.series_number is None else str(x.series_number),
            x.series_uid,
            x.modality or "",
            escape(x.description or ""),
            str(x.num_instances),
        )
    _out.print(table)
