"""``ztbridge import`` and ``ztbridge export``: Part-10 files in through ingest, and out again."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ztbridge.cli.console import actor, err, fail, out, progress
from ztbridge.cli.context import custodian_passphrase, gateway

if TYPE_CHECKING:
    from gateway.anchoring.service import Anchoring


def import_cmd(
    paths: Annotated[
        list[Path], typer.Argument(help="DICOM files, folders (recursed) or media (DICOMDIR)")
    ],
) -> None:
    """Import DICOM files and media through the same pipeline as C-STORE.

    What is not a DICOM instance (a DICOMDIR, README.txt, a viewer) is skipped and counted
    apart; a DICOMDIR's referenced files are imported. Exit code 2 only if something that is
    DICOM was refused.
    """
    from gateway.importer import SKIPPED, discover, import_paths
    from gateway.ingest import Outcome, Receipt

    with gateway("write", create=True) as gw:
        try:
            files = list(discover(paths))
        except FileNotFoundError as e:
            raise fail(str(e)) from None
        with progress() as bar:
            task = bar.add_task("importing", total=len(files))
            studies: set[str] = set()

            def tick(_path: Path, r: Receipt | None, total: int) -> None:
                bar.update(task, advance=1, total=total)
                if r is not None and r.study_uid is not None:
                    studies.add(r.study_uid)

            summary = import_paths(gw.ingestor, files, actor(), tick)
        c = summary.counts
        out.print(
            f"{summary.files} files: {c[Outcome.STORED.value]} stored,"
            f" {c[Outcome.NEW_VERSION.value]} stored as new versions,"
            f" {c[Outcome.DUPLICATE.value]} duplicates, {len(summary.refused)} refused,"
            f" {c[SKIPPED]} skipped (not DICOM instances)"
        )
        for path, reason in summary.skipped[:_SHOWN]:
            out.print(f"  skipped {path}: {reason}", highlight=False, markup=False, soft_wrap=True)
        if len(summary.skipped) > _SHOWN:
            out.print(f"  ... and {len(summary.skipped) - _SHOWN} more skipped", highlight=False)
        for path, reason in summary.refused:
            reason = reason.removeprefix(f"{path.name}: ")
            out.print(f"  refused {path}: {reason}", highlight=False, markup=False, soft_wrap=True)
        if gw.anchoring is not None and studies:
            _anchor_import(gw.anchoring, studies)
        if summary.refused:
            raise typer.Exit(2)


_SHOWN = 20  # skipped files listed by name; a DVD may hold hundreds of viewer files


def _anchor_import(anchoring: Anchoring, studies: set[str]) -> None:
    """Seal the imported studies into batches, then try to anchor them right away."""
    from gateway.anchoring.drain import drain

    sealed = anchoring.seal_studies(studies)
    result = drain(anchoring, seal_all=False)
    if result.error:
        err.print(
            f"anchoring: {len(sealed)} batches sealed, waiting in the outbox ({result.error});"
            " 'ztbridge up' or 'ztbridge chain drain' sends them",
            highlight=False,
        )
    else:
        out.print(f"anchoring: {len(sealed)} batches sealed, {result.batches} anchored")


EXIT_SOME_FAILED = 2
"""``export`` wrote what it could but some instances failed (named on stdout)."""


def export_cmd(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write Part-10 files into")],
) -> None:
    """Decrypt a study with the custodian key into <out>/<study>/<series>/<SOP>.dcm files.

    Never overwrites a file. Every instance that verifies is written; each one that does not
    (damaged, missing, or its file already exists) is named, and the exit code is 2.
    """
    from gateway.export import export_study

    with gateway() as gw:
        with progress() as bar:
            task = bar.add_task("exporting", total=None)
            report = export_study(
                gw, study, out_dir, custodian_passphrase(gw), lambda _f: bar.advance(task)
            )
        out.print(f"{len(report.written)} files written under {out_dir}")
        if report.failed:
            for f in report.failed:
                version = "" if f.version == 1 else f" (version {f.version})"
                out.print(  # one line each, never wrapped: scripts grep for the UID
                    f"FAILED instance {f.sop_instance_uid}{version}: {escape(f.reason)}",
                    highlight=False,
                    soft_wrap=True,
                )
            raise fail(
                f"{len(report.failed)} instance(s) not exported (listed above)", EXIT_SOME_FAILED
            )
