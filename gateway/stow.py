"""STOW-RS's core (PS3.18 10.5): check every part of a request, then store each through the
one ingest funnel, and say what happened in PS3.18's terms.

Why two passes. PS3.18 answers 400 for a request it cannot process at all, "before anything
is stored"; an instance that is understood but refused (its study belongs to another
patient, it is too large once inflated, its data set does not parse) is a failure listed in
the response (FailedSOPSequence) beside the instances that were stored. So every part is
checked first (``check_part``: Part-10 framing, and the UIDs the response names it by, with
exactly the checks ``Ingestor.ingest`` applies), and only then is each handed to
``Ingestor.ingest`` like a C-STORE: owned by the patient its Patient ID is linked to,
sealed, stored, indexed and audited with the uploader as the actor. A refusal by ingest is
audited there; a part refused in the first pass is audited here, the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.dataset import Part10, split_part10
from gateway.dimse_status import STATUS_CANNOT_UNDERSTAND, STATUS_DATASET_MISMATCH
from gateway.errors import DatasetRefusedError, InvalidInputError, UidRefusedError
from gateway.ingest import Incoming, Ingestor, Origin, Receipt
from gateway.spool import Spool
from gateway.validation import is_valid_uid

SPECIFIC_CHARACTER_SET = "00080005"
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"


class StowRequestError(InvalidInputError):
    """The request cannot be processed at all (PS3.18: 400): nothing of it is stored."""


@dataclass(frozen=True)
class Checked:
    """One part that passed the first pass: the UIDs the response will name it by."""

    index: int  # 1-based, as a person counts the parts of a request
    sop_class: str
    sop_instance: str
    study_uid: str | None  # None: its data set does not parse, ingest will refuse it
    series_uid: str | None


@dataclass(frozen=True)
class StowItem:
    """What became of one instance."""

    checked: Checked
    receipt: Receipt

    @property
    def stored(self) -> bool:
        """Stored, or already stored identically (C-STORE answers both with success)."""
        return self.receipt.ok


@dataclass(frozen=True)
class StowResult:
    """Every instance of one request, in the order of its parts."""

    items: tuple[StowItem, ...]

    @property
    def stored(self) -> list[StowItem]:
        """The instances the sender may consider stored."""
        return [i for i in self.items if i.stored]

    @property
    def failed(self) -> list[StowItem]:
        """The instances refused."""
        return [i for i in self.items if not i.stored]

    @property
    def studies(self) -> set[str]:
        """The studies that received an instance (for anchoring)."""
        return {i.receipt.study_uid for i in self.stored if i.receipt.study_uid}

    @property
    def http_status(self) -> int:
        """PS3.18 10.5.3: 200 all stored, 202 some stored and some not, 409 none stored."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409


def _incoming(part: Part10) -> Incoming:
    return Incoming(
        dataset=part.dataset,
        transfer_syntax=part.transfer_syntax,
        declared_sop_class=part.sop_class,
        declared_sop_instance=part.sop_instance,
        source_ae=part.source_ae,
    )


def check_part(ingestor: Ingestor, content: bytes, index: int, origin: Origin) -> Checked:
    """The first pass over one part; raises ``StowRequestError`` (audited as a refused
    instance) when the request must be refused as a whole."""

    def refuse(reason: str, status: int, sop: str | None = None) -> StowRequestError:
        ingestor.refuse(f"STOW-RS part {index}: {reason}", status, origin, sop)
        return StowRequestError(f"part {index}: {reason}")

    try:
        part = split_part10(content)
    except DatasetRefusedError as e:
        raise refuse(e.reason, e.status) from None
    try:
        ids: dict[str, str] | None = ingestor.identify(_incoming(part))
    except UidRefusedError as e:
        raise refuse(e.reason, e.status, part.sop_instance) from None
    except DatasetRefusedError:
        ids = None  # understood enough to be named: ingest refuses it, with its status
    if ids is not None:
        return Checked(
            index,
            ids["SOPClassUID"],
            ids["SOPInstanceUID"],
            ids["StudyInstanceUID"],
            ids["SeriesInstanceUID"],
        )
    for what, uid in (
        ("Media Storage SOP Class UID", part.sop_class),
        ("Media Storage SOP Instance UID", part.sop_instance),
    ):
        if uid is None or not is_valid_uid(uid):
            reason = f"its {what} is missing or not a valid UID, and its data set is refused"
            raise refuse(reason, STATUS_CANNOT_UNDERSTAND, part.sop_instance)
    assert part.sop_class is not None and part.sop_instance is not None
    return Checked(index, part.sop_class, part.sop_instance, None, None)


def store(
    ingestor: Ingestor, parts: Sequence[Spool], origin: Origin, study: str | None = None
) -> StowResult:
    """Check every part, then ingest each; ``study``: the request's target study (``POST
    /studies/{study}``), whose instances alone are stored (another study's is refused
    0xA900 and not stored). Raises ``StowRequestError`` before anything is stored."""
    if not parts:
        raise StowRequestError("the request holds no part")
    checked = [check_part(ingestor, p.read(), i, origin) for i, p in enumerate(parts, 1)]
    items = []
    for c, part in zip(checked, parts, strict=True):
        if study is not None and c.study_uid is not None and c.study_uid != study:
            receipt = ingestor.refuse(
                f"STOW-RS to study {study}: the instance belongs to study {c.study_uid}",
                STATUS_DATASET_MISMATCH,
                origin,
                c.sop_instance,
            )
        else:
            receipt = ingestor.ingest(_incoming(split_part10(part.read())), origin)
        items.append(StowItem(c, receipt))
    return StowResult(tuple(items))


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def _sequence(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}  # F.2.5: empty, no Value


def response_document(result: StowResult, base_url: str) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 10.5.3, DICOM JSON): a ReferencedSOP
    item with its RetrieveURL per stored instance, a FailedSOP item with its FailureReason
    per refused one (only when there is one), the study's RetrieveURL when one study."""
    doc: dict[str, Any] = {SPECIFIC_CHARACTER_SET: {"vr": "CS", "Value": ["ISO_IR 192"]}}
    if len(result.studies) == 1:
        (study,) = result.studies
        doc[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{base_url}/studies/{study}"]}
    failed = [
        {
            REFERENCED_SOP_CLASS_UID: _ui(i.checked.sop_class),
            REFERENCED_SOP_INSTANCE_UID: _ui(i.checked.sop_instance),
            FAILURE_REASON: {"vr": "US", "Value": [i.receipt.status]},
        }
        for i in result.failed
    ]
    if failed:
        doc[FAILED_SOP_SEQUENCE] = _sequence(failed)
    stored = []
    for i in result.stored:
        c = i.checked
        url = f"{base_url}/studies/{c.study_uid}/series/{c.series_uid}/instances/{c.sop_instance}"
        stored.append(
            {
                REFERENCED_SOP_CLASS_UID: _ui(c.sop_class),
                REFERENCED_SOP_INSTANCE_UID: _ui(c.sop_instance),
                RETRIEVE_URL: {"vr": "UR", "Value": [url]},
            }
        )
    doc[REFERENCED_SOP_SEQUENCE] = _sequence(stored)
    return doc


__all__ = [
    "Checked",
    "StowItem",
    "StowRequestError",
    "StowResult",
    "check_part",
    "response_document",
    "store",
]
