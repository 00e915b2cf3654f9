"""``ztbridge import``: files and folders of Part-10 DICOM through the same ingest pipeline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.dataset import split_part10
from gateway.dimse_status import STATUS_OUT_OF_RESOURCES
from gateway.errors import DatasetRefusedError
from gateway.ingest import Incoming, Ingestor, Origin, Outcome, Receipt


def discover(paths: list[Path]) -> Iterator[Path]:
    """Every regular file under the given files and folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path} does not exist")


@dataclass
class ImportSummary:
    """Counts by outcome and the reason for each refused file."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[Path, str]] = field(default_factory=list)


def import_file(ingestor: Ingestor, path: Path, actor: str) -> Receipt:
    """Ingest one Part-10 file."""
    try:
        content = path.read_bytes()
        part = split_part10(content)
    except OSError as e:
        return Receipt(
            Outcome.REFUSED, STATUS_OUT_OF_RESOURCES, reason=f"cannot read: {e.strerror}"
        )
    except DatasetRefusedError as e:
        return Receipt(Outcome.REFUSED, e.status, reason=e.reason)
    return ingestor.ingest(
        Incoming(
            dataset=part.dataset,
            transfer_syntax=part.transfer_syntax,
            declared_sop_class=part.sop_class,
            declared_sop_instance=part.sop_instance,
            source_ae=part.source_ae,
        ),
        Origin(kind="import", actor=actor),
    )


def import_paths(
    ingestor: Ingestor,
    files: list[Path],
    actor: str,
    progress: Callable[[Path, Receipt], None] | None = None,
) -> ImportSummary:
    """Ingest every file; one bad file never stops the rest."""
    summary = ImportSummary()
    for path in files:
        receipt = import_file(ingestor, path, actor)
        summary.counts[receipt.outcome.value] += 1
        if receipt.outcome is Outcome.REFUSED:
            summary.refused.append((path, receipt.reason or "refused"))
        if progress is not None:
            progress(path, receipt)
    return summary
