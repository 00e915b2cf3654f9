"""What a data set must carry before ztbridge will keep it. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.dimse_status import STATUS_DATASET_MISMATCH
from gateway.errors import DatasetRefusedError, UidRefusedError

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def is_valid_uid(value: str) -> bool:
    """PS3.5 9.1: digits and dots, no leading zeros in a component, at most 64 characters."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def _uid_fault(value: str) -> str:
    """Why ``value`` is not a UID, for the sender to fix."""
    if len(value) > 64:
        return f"{len(value)} characters, at most 64"
    return "digits and dots only, no empty or zero-led component"


def _text(values: Mapping[str, str], keyword: str) -> str:
    return values.get(keyword, "").strip("\0 ")


def required_identifiers(
    ds: Mapping[str, str],
    declared_sop_class: str | None,
    declared_sop_instance: str | None,
    require_patient_id: bool = False,
) -> dict[str, str]:
    """The identifiers ingest keys on, checked; refuses with 0xA900 naming what is wrong.

    Patient ID is Type 2 in the storage IODs (present, may be empty): an empty one is
    returned as "" (ingest stores the instance and flags its study for reconciliation)
    unless ``require_patient_id`` (setting ``ingest.require_patient_id``) asks for refusal.
    """
    found: dict[str, str] = {}
    for keyword in REQUIRED_UIDS:
        value = _text(ds, keyword)
        if not value:
            raise UidRefusedError(f"{keyword} is missing", STATUS_DATASET_MISMATCH)
        if not is_valid_uid(value):
            raise UidRefusedError(
                f"{keyword} {value[:80]!r} is not a valid UID ({_uid_fault(value)})",
                STATUS_DATASET_MISMATCH,
            )
        found[keyword] = value
    patient_id = _text(ds, "PatientID")
    if not patient_id and require_patient_id:
        raise DatasetRefusedError("PatientID is missing or empty", STATUS_DATASET_MISMATCH)
    if len(patient_id) > 64:
        raise DatasetRefusedError("PatientID is longer than 64 characters", STATUS_DATASET_MISMATCH)
    found["PatientID"] = patient_id
    if declared_sop_class and declared_sop_class != found["SOPClassUID"]:
        raise DatasetRefusedError(
            f"SOP Class UID in the data set ({found['SOPClassUID']}) differs from the"
            f" one in the request ({declared_sop_class})",
            STATUS_DATASET_MISMATCH,
        )
    if declared_sop_instance and declared_sop_instance != found["SOPInstanceUID"]:
        raise DatasetRefusedError(
            f"SOP Instance UID in the data set ({found['SOPInstanceUID']}) differs from the"
            f" one in the request ({declared_sop_instance})",
            STATUS_DATASET_MISMATCH,
        )
    return found
