"""``ztbridge import``: files, folders and DICOM media through the same ingest pipeline.

Real media hold more than instances: a DICOMDIR (the media's index), a README, a viewer.
Those are *skipped*, counted apart, and never make the import fail; a *refusal* is kept for
a file that is DICOM (or claims to be) and cannot be stored, and every refusal is audited
like a C-STORE refused on the wire. A DICOMDIR is read: the files it references are imported
even where a folder walk would not find them (names in another case, ISO 9660 ``;1``
suffixes), and a referenced file missing from the media is a refusal.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from gateway.dataset import split_part10
from gateway.dimse_status import STATUS_CANNOT_UNDERSTAND, STATUS_OUT_OF_RESOURCES
from gateway.errors import DatasetRefusedError
from gateway.ingest import Incoming, Ingestor, Origin, Outcome, Receipt

log = logging.getLogger("ztbridge.import")

MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (the DICOMDIR)
SKIPPED = "skipped"
_VR = re.compile(rb"[A-Z]{2}")


class Kind(StrEnum):
    """What a file on the media is, from its first bytes."""

    PART10 = "part10"  # preamble + 'DICM': an instance (or a DICOMDIR)
    BARE = "bare"  # a DICOM data set without the Part-10 header: DICOM, but not importable
    OTHER = "other"  # not DICOM at all: README.txt, autorun.inf, a viewer


def classify(head: bytes) -> Kind:
    """Tell a Part-10 file, a bare data set and anything else apart by the first 132 bytes."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return Kind.PART10
    # A bare data set starts with a group 0002/0008 element, little endian, and (explicit VR)
    # two capital letters, or (implicit VR) a 4-byte length.
    starts = len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3] == 0
    if starts and (_VR.fullmatch(head[4:6]) or head[6:8] == b"\x00\x00"):
        return Kind.BARE
    return Kind.OTHER


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
    """Counts by outcome (``skipped`` among them), and the reason for each refused or
    skipped file."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    files: int = 0


def _origin(actor: str) -> Origin:
    return Origin(kind="import", actor=actor)


def import_file(ingestor: Ingestor, path: Path, actor: str) -> Receipt:
    """Ingest one Part-10 file; a file that cannot be read or is not Part-10 is refused,
    and the refusal audited."""
    try:
        content = path.read_bytes()
    except OSError as e:
        return ingestor.refuse(
            f"{path}: cannot read: {e.strerror}", STATUS_OUT_OF_RESOURCES, _origin(actor), None
        )
    return _import_bytes(ingestor, path, content, actor)


def _import_bytes(ingestor: Ingestor, path: Path, content: bytes, actor: str) -> Receipt:
    try:
        part = split_part10(content)
    except DatasetRefusedError as e:
        return ingestor.refuse(f"{path.name}: {e.reason}", e.status, _origin(actor), None)
    return ingestor.ingest(
        Incoming(
            dataset=part.dataset,
            transfer_syntax=part.transfer_syntax,
            declared_sop_class=part.sop_class,
            declared_sop_instance=part.sop_instance,
            source_ae=part.source_ae,
        ),
        _origin(actor),
    )


def _resolve(base: Path, components: list[str]) -> Path | None:
    """A DICOMDIR's ReferencedFileID below ``base``, matching names case-insensitively and
    without ISO 9660 version suffixes (``IM0001;1``), as media are often mounted."""
    here = base
    for part in components:
        want = part.strip().split(";")[0].upper()
        exact = here / part.strip()
        if exact.exists():
            here = exact
            continue
        try:
            found = next((c for c in here.iterdir() if c.name.split(";")[0].upper() == want), None)
        except OSError:
            return None
        if found is None:
            return None
        here = found
    return here if here.is_file() else None


def dicomdir_references(path: Path) -> tuple[list[Path], list[str]]:
    """The files a DICOMDIR references (found on the media) and the references not found."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as e:
        raise DatasetRefusedError(
            f"DICOMDIR does not decode: {str(e).split(' Use force=True')[0]}",
            STATUS_CANNOT_UNDERSTAND,
        ) from e
    found: list[Path] = []
    missing: list[str] = []
    for record in ds.get("DirectoryRecordSequence", []):
        ref = record.get("ReferencedFileID")
        if ref is None:
            continue
        components = [str(ref)] if isinstance(ref, str) else [str(c) for c in ref]
        target = _resolve(path.parent, components)
        if target is None:
            missing.append("\\".join(components))
        else:
            found.append(target)
    return found, missing


def import_paths(
    ingestor: Ingestor,
    files: list[Path],
    actor: str,
    progress: Callable[[Path, Receipt | None, int], None] | None = None,
) -> ImportSummary:
    """Ingest every DICOM instance; skip what is not one; one bad file never stops the rest.

    ``progress(path, receipt or None when skipped, total so far)``: the total grows when a
    DICOMDIR names files the walk did not find.
    """
    summary = ImportSummary()
    queue = list(files)
    seen = {p.resolve() for p in queue}
    i = 0
    while i < len(queue):
        path = queue[i]
        i += 1
        receipt = _one(ingestor, path, actor, summary, queue, seen)
        if receipt is None:
            summary.counts[SKIPPED] += 1
        else:
            summary.counts[receipt.outcome.value] += 1
            if receipt.outcome is Outcome.REFUSED:
                summary.refused.append((path, receipt.reason or "refused"))
        if progress is not None:
            progress(path, receipt, len(queue))
    summary.files = len(queue)
    return summary


def _one(
    ingestor: Ingestor,
    path: Path,
    actor: str,
    summary: ImportSummary,
    queue: list[Path],
    seen: set[Path],
) -> Receipt | None:
    """One file: a Receipt, or None when it is skipped (the reason noted in ``summary``)."""
    try:
        content = path.read_bytes()
    except OSError as e:
        return ingestor.refuse(
            f"{path}: cannot read: {e.strerror}", STATUS_OUT_OF_RESOURCES, _origin(actor), None
        )
    kind = classify(content[:132])
    if kind is Kind.OTHER:
        summary.skipped.append((path, "not a DICOM file"))
        return None
    if kind is Kind.BARE:
        return ingestor.refuse(
            f"{path.name}: a DICOM data set without the Part-10 header (no preamble and"
            " 'DICM'): export it from its source as a DICOM file",
            STATUS_CANNOT_UNDERSTAND,
            _origin(actor),
            None,
        )
    try:
        sop_class = split_part10(content).sop_class
    except DatasetRefusedError as e:
        return ingestor.refuse(f"{path.name}: {e.reason}", e.status, _origin(actor), None)
    if sop_class != MEDIA_DIRECTORY:
        return _import_bytes(ingestor, path, content, actor)
    try:
        found, missing = dicomdir_references(path)
    except DatasetRefusedError as e:
        return ingestor.refuse(f"{path.name}: {e.reason}", e.status, _origin(actor), None)
    added = 0
    for target in found:
        if target.resolve() not in seen:
            seen.add(target.resolve())
            queue.append(target)
            added += 1
    summary.skipped.append(
        (path, f"DICOMDIR (the media's index): {len(found)} referenced files imported")
    )
    for ref in missing:
        receipt = ingestor.refuse(
            f"{path.name} references {ref}, which is not on the media",
            STATUS_OUT_OF_RESOURCES,
            _origin(actor),
            None,
        )
        summary.counts[receipt.outcome.value] += 1
        summary.refused.append((path.parent / ref.replace("\\", "/"), receipt.reason or ""))
    log.info("%s: %d referenced files, %d not yet found by the walk", path, len(found), added)
    return None
