"""Getting studies back out: decrypted Part-10 files (custodian key) or ciphertext as CAR."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from gateway import crypto
from gateway.dataset import split_part10
from gateway.errors import IntegrityError, InvalidEnvelopeError, NotFoundError
from gateway.index.models import instances
from gateway.keys import study_key_info, unlock_custodian
from gateway.keywraps import CUSTODIAN, study_key_ids, wraps_for
from gateway.service import Gateway
from gateway.validation import is_valid_uid


@dataclass(frozen=True)
class ExportedFile:
    """One file written by an export."""

    path: Path
    sop_instance_uid: str
    version: int


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


def export_study(
    gw: Gateway,
    study_uid: str,
    out_dir: Path,
    passphrase: str | None,
    progress: Callable[[ExportedFile], None] | None = None,
) -> list[ExportedFile]:
    """Decrypt every stored instance (every version) of a study into ``out_dir``.

    Files are named by series and order of arrival, never by UID: UIDs come from outside.
    Each object is checked on the way: blocks against their CID (store), the envelope's
    authentication tag (crypto), and the plaintext's SHA-256 against the index.
    """
    rows = _study_rows(gw, study_uid)
    custodian = unlock_custodian(gw.keys_dir, passphrase)
    with gw.db.read() as conn:
        found = wraps_for(conn, study_key_ids(conn, study_uid), CUSTODIAN)
        wraps = {key_id: w.wrap for key_id, w in found.items()}
    keys: dict[str, bytes] = {}
    series_numbers: dict[str, int] = {}
    instance_numbers: dict[str, int] = {}  # SOP Instance UID -> its number in its series
    per_series: dict[str, int] = {}
    seen_paths: set[Path] = set()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for row in rows:
        key_id = str(row["key_id"])
        if key_id not in keys:
            try:
                keys[key_id] = crypto.unwrap(custodian, wraps[key_id], study_key_info(key_id))
            except (KeyError, InvalidEnvelopeError) as e:
                raise IntegrityError(f"study key {key_id} cannot be unwrapped") from e
        sop = str(row["sop_instance_uid"])
        try:
            obj = crypto.open_sealed(keys[key_id], gw.store.get(str(row["cid"])))
        except InvalidEnvelopeError as e:
            raise IntegrityError(f"instance {sop}: ciphertext fails authentication") from e
        if hashlib.sha256(split_part10(obj).dataset).hexdigest() != row["sha256"]:
            raise IntegrityError(f"instance {sop}: plaintext hash differs from the index")
        series = str(row["series_uid"])
        number = series_numbers.setdefault(series, len(series_numbers) + 1)
        if sop not in instance_numbers:
            per_series[series] = per_series.get(series, 0) + 1
            instance_numbers[sop] = per_series[series]
        version = int(str(row["version"]))
        name = f"IM{instance_numbers[sop]:06d}" + (f".v{version}" if version > 1 else "")
        path = out_dir / f"series-{number:03d}" / f"{name}.dcm"
        if path in seen_paths:  # cannot happen: names are per instance and version
            raise IntegrityError(f"export would overwrite {path}")
        seen_paths.add(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(obj)
        os.replace(tmp, path)
        item = ExportedFile(path, sop, version)
        written.append(item)
        if progress is not None:
            progress(item)
    return written


def export_car(gw: Gateway, study_uid: str, out: BinaryIO) -> tuple[int, int]:
    """Write the study's ciphertext objects as a CARv1; return (objects, blocks)."""
    rows = _study_rows(gw, study_uid)
    roots = list(dict.fromkeys(str(r["cid"]) for r in rows))
    blocks = gw.store.export_car(roots, out)
    return len(roots), blocks
