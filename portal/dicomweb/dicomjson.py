"""Records as PS3.18 F.2 DICOM JSON: ``{"0020000D": {"vr": "UI", "Value": [...]}}``.

Its own module so that QIDO's results and WADO's metadata render alike. Attributes arrive as
keyword -> ``Value`` list (``gateway.qido_search.Attributes``); tags and VRs come from
pydicom's data dictionary. An empty attribute is rendered as ``{"vr": ...}`` without
``Value`` (F.2.5), which is how a required return key with no value is still present.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

#: Return keys PS3.18 requires at each level (Tables 6.7.1-2, -2a, -2b), besides any key
#: used for matching. StudyDescription is not required but every viewer shows it.
STUDY_RETURN = (
    "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
    "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName",
    "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyDescription",
)  # fmt: skip
SERIES_RETURN = (
    "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
    "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RequestAttributesSequence", "TimezoneOffsetFromUTC",
    "RetrieveURL", "SeriesDate", "SeriesTime",
)  # fmt: skip
INSTANCE_RETURN = (
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
    "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
)  # fmt: skip


def tag_of(keyword: str) -> int | None:
    """The tag of a dictionary keyword, or None."""
    tag = tag_for_keyword(keyword)
    return None if tag is None else int(tag)


def keyword_of(key: str) -> str | None:
    """A query key as a keyword: a keyword itself, or eight hex digits of a tag (either
    case, as OHIF sends them); None when neither names a dictionary attribute."""
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        found = keyword_for_tag(int(key, 16))
        return found or None
    return key if tag_for_keyword(key) is not None else None


def vr_of(keyword: str) -> str:
    """The attribute's VR (the first, for the dictionary's ambiguous ones like US or SS)."""
    tag = tag_of(keyword)
    if tag is None:
        return "UN"
    return str(dictionary_VR(tag)).split(" or ")[0]


def element(keyword: str, values: list[Any]) -> dict[str, Any]:
    """One attribute's JSON object (no ``Value`` when empty: F.2.5)."""
    vr = vr_of(keyword)
    out: dict[str, Any] = {"vr": vr}
    kept = [v for v in values if v is not None and v != "" and v != {}]
    if kept and vr != "SQ":
        out["Value"] = kept
    return out


def render(attrs: Mapping[str, list[Any]], keywords: Iterable[str]) -> dict[str, Any]:
    """The DICOM JSON object of ``keywords`` (sorted by tag, as F.2 asks), each present even
    when the record has no value for it."""
    out: dict[str, Any] = {}
    for kw in sorted(set(keywords), key=lambda k: tag_of(k) or 0):
        tag = tag_of(kw)
        if tag is None:
            continue
        out[f"{tag:08X}"] = element(kw, list(attrs.get(kw, [])))
    return out
