"""Getting studies back out: decrypted Part-10 files (custodian key) or ciphertext as CAR.

Every instance is read through ``gateway.retrieve`` (blocks against CIDs, envelope tags, the
index's size and SHA-256), streamed to its file, so memory stays flat whatever its size.
An export never overwrites a file and never stops at the first bad instance: every good one
is written, every bad one is named in the result, so the caller can exit non-zero and say
which instances to look at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from gateway.durable import create_streamed
from gateway.errors import InvalidInputError, NotFoundError, RetrieveError
from gateway.index.models import instances
from gateway.keys import unlock_custodian
from gateway.retrieve import CustodianKeys, InstanceRef, retrieve
from gateway.service import Gateway
from gateway.validation import is_valid_uid


@dataclass(frozen=True)
class ExportedFile:
    """One file written by an export."""

    path: Path
    sop_instance_uid: str
    version: int


@dataclass(frozen=True)
class FailedInstance:
    """One instance an export could not write, and why (the message names no key)."""

    sop_instance_uid: str
    version: int
    reason: str


@dataclass
class ExportReport:
    """What an export wrote and what it could not; ``len()`` is the number of files written
    (what the ``export`` command printed before failures were reported)."""

    written: list[ExportedFile] = field(default_factory=list)
    failed: list[FailedInstance] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.written)

    @property
    def ok(self) -> bool:
        """Whether every instance of the study was written."""
        return not self.failed


def _study_rows(gw: Gateway, study_uid: str) -> list[dict[str, object]]:
    if not is_valid_uid(study_uid):
        raise NotFoundError(f"{study_uid!r} is not a valid Study Instance UID")
    with gw.db.read() as conn:
        rows = conn.execute(
            select(instances)
            .where(instances.c.study_uid == study_uid)
            .order_by(instances.c.series_uid, instances.c.id)
        ).all()
    if not rows:
        raise NotFoundError(f"no study {study_uid} in the index ('ztbridge status' lists counts)")
    return [dict(r._mapping) for r in rows]


def instance_path(out_dir: Path, ref: InstanceRef) -> Path:
    """``<out>/<Study UID>/<Series UID>/<SOP Instance UID>[.vN].dcm``.

    UIDs come from outside (through the index), so each is checked to be a valid UID (digits
    and dots, at most 64 characters) before it becomes a path component: never ``..``, a
    slash or an empty name. InvalidInputError otherwise.
    """
    parts = [ref.study_uid or "", ref.series_uid or "", ref.sop_instance_uid]
    for uid in parts:
        if not is_valid_uid(uid) or uid in (".", ".."):
            raise InvalidInputError(f"the index holds a UID unusable as a file name: {uid!r}")
    suffix = f".v{ref.version}" if ref.version > 1 else ""
    return out_dir / parts[0] / parts[1] / f"{parts[2]}{suffix}.dcm"


def write_new_file(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path``, which must not exist (FileExistsError), through the one
    durable writer: fsync'd, linked into place, never over a file, no partial file left."""

    def fill(f: BinaryIO) -> None:
        for chunk in chunks:
            f.write(chunk)

    create_streamed(path, fill)


def export_study(
    gw: Gateway,
    study_uid: str,
    out_dir: Path,
    passphrase: str | None,
    progress: Callable[[ExportedFile], None] | None = None,
) -> ExportReport:
    """Decrypt every stored instance (every version) of a study into ``out_dir``.

    Layout: ``instance_path``. Each instance is streamed through ``retrieve`` and written
    only if it verifies whole (the last bytes are held back until its hash is checked, and
    the file is linked into place only after that); one that fails, or whose file already
    exists, is recorded in ``failed`` and the export goes on with the next.
    """
    rows = _study_rows(gw, study_uid)
    keys = CustodianKeys(gw.db, unlock_custodian(gw.keys_dir, passphrase))
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    for row in rows:
        ref = InstanceRef.from_row(row)
        try:
            path = instance_path(out_dir, ref)
            write_new_file(path, retrieve(ref, gw.store, keys))
        except RetrieveError as e:
            report.failed.append(FailedInstance(ref.sop_instance_uid, ref.version, e.what))
            continue
        except InvalidInputError as e:
            report.failed.append(FailedInstance(ref.sop_instance_uid, ref.version, str(e)))
            continue
        except FileExistsError:
            why = f"{path} exists; not overwritten"
            report.failed.append(FailedInstance(ref.sop_instance_uid, ref.version, why))
            continue
        item = ExportedFile(path, ref.sop_instance_uid, ref.version)
        report.written.append(item)
        if progress is not None:
            progress(item)
    return report


def export_car(gw: Gateway, study_uid: str, out: BinaryIO) -> tuple[int, int]:
    """Write the study's ciphertext objects as a CARv1; return (objects, blocks)."""
    rows = _study_rows(gw, study_uid)
    roots = list(dict.fromkeys(str(r["cid"]) for r in rows))
    blocks = gw.store.export_car(roots, out)
    return len(roots), blocks


def export_car_file(gw: Gateway, study_uid: str, path: Path) -> tuple[int, int]:
    """``export_car`` into a new file ``path``; refuses (InvalidInputError) if it exists.

    Written to a temporary name and linked into place, so a failure part-way (a missing or
    damaged block) leaves nothing, and an existing file is never replaced.
    """
    if path.exists():
        raise InvalidInputError(f"{path} exists: choose another --out (it is never overwritten)")
    if not path.parent.is_dir():
        raise InvalidInputError(
            f"folder {path.parent} does not exist: create it or choose another --out"
        )
    try:
        return create_streamed(path, lambda f: export_car(gw, study_uid, f))
    except FileExistsError as e:
        raise InvalidInputError(f"{path} appeared meanwhile; not overwritten") from e
