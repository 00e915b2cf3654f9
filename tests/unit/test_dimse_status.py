"""Every DIMSE status ztbridge answers is defined once, and means what the standard says."""

from __future__ import annotations

import ast
from pathlib import Path

import pynetdicom.status as standard

from gateway import dimse_status

ROOT = Path(__file__).resolve().parents[2]

# Our name -> the meaning pynetdicom's tables (transcribed from PS3.4 / PS3.7) give the code.
EXPECTED = {
    "STATUS_SUCCESS": ("Success", ""),
    "STATUS_PROCESSING_FAILURE": ("Failure", "Processing Failure"),
    "STATUS_OUT_OF_RESOURCES": ("Failure", "Refused: Out of Resources"),
    "STATUS_DATASET_MISMATCH": ("Failure", "Data Set Does Not Match SOP Class"),
    "STATUS_CANNOT_UNDERSTAND": ("Failure", "Cannot Understand"),
    "STATUS_SOP_CLASS_NOT_SUPPORTED": ("Failure", "Refused: SOP Class Not Supported"),
}


def test_codes_mean_what_the_standard_says() -> None:
    for name, meaning in EXPECTED.items():
        code = getattr(dimse_status, name)
        assert standard.STORAGE_SERVICE_CLASS_STATUS.get(code) == meaning, (name, hex(code))
    assert set(dimse_status.__all__) == set(EXPECTED)


def test_each_status_constant_is_assigned_only_in_dimse_status() -> None:
    found = []
    for package in ("gateway", "dicom_scp", "portal", "ztbridge"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                targets = (
                    node.targets
                    if isinstance(node, ast.Assign)
                    else [node.target]
                    if isinstance(node, ast.AnnAssign)
                    else []
                )
                for t in targets:
                    if isinstance(t, ast.Name) and t.id.startswith("STATUS_"):
                        found.append(f"{path.relative_to(ROOT)}:{t.id}")
    assert sorted(found) == sorted(f"gateway/dimse_status.py:{n}" for n in EXPECTED)


def test_old_import_locations_still_work() -> None:
    from dicom_scp.handlers import STATUS_PROCESSING_FAILURE
    from gateway.dataset import (
        STATUS_CANNOT_UNDERSTAND,
        STATUS_DATASET_MISMATCH,
        STATUS_OUT_OF_RESOURCES,
    )
    from gateway.ingest import STATUS_SUCCESS

    assert (STATUS_CANNOT_UNDERSTAND, STATUS_DATASET_MISMATCH, STATUS_OUT_OF_RESOURCES) == (
        0xC000,
        0xA900,
        0xA700,
    )
    assert (STATUS_PROCESSING_FAILURE, STATUS_SUCCESS) == (0x0110, 0x0000)
