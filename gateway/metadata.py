"""The attributes the index keeps, read straight from the encoded bytes as DICOM JSON.

The index holds what QIDO-RS searches match on and return (PS3.18 10.6): patient, study,
series and instance keys. Full metadata comes from the stored object at retrieval time. These
values are read from the positions ``dataset.scan`` reported, with a small decoder per VR,
because pydicom's generic ``to_json_dict`` costs ~2 ms per instance on the ingest path.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes

from gateway.dataset import Element, Scan

# tag -> (keyword, VR from the data dictionary, used when the encoding is implicit)
INDEXED: dict[int, tuple[str, str]] = {
    0x00080005: ("SpecificCharacterSet", "CS"),
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080020: ("StudyDate", "DA"),
    0x00080021: ("SeriesDate", "DA"),
    0x00080023: ("ContentDate", "DA"),
    0x00080030: ("StudyTime", "TM"),
    0x00080031: ("SeriesTime", "TM"),
    0x00080033: ("ContentTime", "TM"),
    0x00080050: ("AccessionNumber", "SH"),
    0x00080060: ("Modality", "CS"),
    0x00080080: ("InstitutionName", "LO"),
    0x00080090: ("ReferringPhysicianName", "PN"),
    0x00080201: ("TimezoneOffsetFromUTC", "SH"),
    0x00081030: ("StudyDescription", "LO"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x00100010: ("PatientName", "PN"),
    0x00100020: ("PatientID", "LO"),
    0x00100021: ("IssuerOfPatientID", "LO"),
    0x00100030: ("PatientBirthDate", "DA"),
    0x00100040: ("PatientSex", "CS"),
    0x00180015: ("BodyPartExamined", "CS"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200010: ("StudyID", "SH"),
    0x00200011: ("SeriesNumber", "IS"),
    0x00200013: ("InstanceNumber", "IS"),
    0x00280002: ("SamplesPerPixel", "US"),  # with the next four: gateway/pixels.py
    0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"),
    0x00280011: ("Columns", "US"),
    0x00280100: ("BitsAllocated", "US"),
    0x00400244: ("PerformedProcedureStepStartDate", "DA"),
    0x00400245: ("PerformedProcedureStepStartTime", "TM"),
}
WANTED = frozenset(INDEXED)
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UC", "UT", "PN"}
_ASCII_VRS = {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"}
_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


def _vr(tag: int, element: Element) -> str:
    if element.vr is not None:
        return element.vr.decode("ascii")
    return INDEXED[tag][1]


def _strings(raw: bytes | memoryview, vr: str, encodings: list[str]) -> list[str]:
    raw = bytes(raw)  # a small value: the data set itself may be a view of the receive buffer
    if vr in _ASCII_VRS:
        text = raw.decode("ascii", "replace")
    else:
        try:
            text = raw.decode(encodings[0]) if len(encodings) == 1 else ""
        except (UnicodeDecodeError, LookupError):
            text = ""
        if not text and raw:
            text = decode_bytes(raw, encodings, {0x5C, 0x3D, 0x5E})
    text = text.rstrip("\0 ")
    if vr in ("ST", "LT", "UT", "UR"):
        return [text] if text else []
    return [v.strip(" \0") for v in text.split("\\")]


def _value(vr: str, raw: bytes | memoryview, little: bool, encodings: list[str]) -> list[Any]:
    if vr in _BINARY:
        fmt = _BINARY[vr]
        count = len(raw) // struct.calcsize(fmt)
        return list(
            struct.unpack(
                ("<" if little else ">") + fmt * count, raw[: count * struct.calcsize(fmt)]
            )
        )
    values: list[Any] = _strings(raw, vr, encodings)
    if vr == "IS":
        return [int(float(v)) if v else None for v in values]
    if vr == "DS":
        return [float(v) if v else None for v in values]
    if vr == "PN":
        out: list[Any] = []
        for v in values:
            groups = v.split("=")
            names = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False))
            out.append({k: g for k, g in names.items() if g})
        return out
    return values


def read_indexed(data: bytes | memoryview, layout: Scan) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) of the indexed attributes present in the data set."""
    charset_el = layout.found.get(0x00080005)
    terms = (
        _strings(data[charset_el.offset : charset_el.offset + charset_el.length], "CS", [])
        if charset_el
        else []
    )
    try:
        encodings = convert_encodings(terms or ["ISO_IR 6"])
    except (LookupError, ValueError):
        encodings = ["iso8859"]
    doc: dict[str, Any] = {}
    for tag in sorted(layout.found):
        element = layout.found[tag]
        vr = _vr(tag, element)
        raw = data[element.offset : element.offset + element.length]
        try:
            value = _value(vr, raw, layout.little_endian, encodings) if raw else []
        except (ValueError, ArithmeticError, struct.error, UnicodeDecodeError, LookupError):
            value = []  # an unreadable optional value is indexed as empty, not refused
        entry: dict[str, Any] = {"vr": vr}
        if value and any(v not in ("", None, {}) for v in value):
            entry["Value"] = value
        doc[f"{tag:08X}"] = entry
    return doc


def first_strings(doc: Mapping[str, Any]) -> dict[str, str]:
    """keyword -> first value as text, for the identifiers validation checks."""
    out = {}
    for tag, (keyword, _) in INDEXED.items():
        entry = doc.get(f"{tag:08X}")
        if entry and entry.get("Value"):
            first = entry["Value"][0]
            out[keyword] = first.get("Alphabetic", "") if isinstance(first, dict) else str(first)
    return out


def to_json(doc: Mapping[str, Any]) -> str:
    """Compact JSON for the index."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
