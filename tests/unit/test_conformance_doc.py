"""docs/conformance.md says what the code registers, no more and no less.

The statement's machine-read tables sit between ``<!-- conformance:NAME -->`` and
``<!-- /conformance:NAME -->``: the SCP's SOP classes and transfer syntaxes (compared with
``dicom_scp/contexts.py``, what the AE is given), and the ``/dicom-web`` routes (compared
with the FastAPI app's routes). A row marked ``planned`` is a route issue 10 promises and
nobody serves yet: it must not be registered (flip it to ``served`` in the change that
registers it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_scp.contexts import TRANSFER_SYNTAXES, storage_contexts, verification_context
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from portal.app import create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def table(name: str) -> list[dict[str, str]]:
    """The rows of the marked table ``name``, as {column header: cell}."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- conformance:{name} -->\n(.*?)\n<!-- /conformance:{name} -->", text, re.S
    )
    assert found, f"docs/conformance.md has no table marked conformance:{name}"
    lines = [line.strip() for line in found.group(1).strip().splitlines()]
    assert lines and all(line.startswith("|") and line.endswith("|") for line in lines), lines

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split("|")]

    header = cells(lines[0])
    assert set(lines[1]) <= set("|-: "), f"{name}: the second line must be the separator"
    rows = [dict(zip(header, cells(line), strict=True)) for line in lines[2:]]
    assert rows, f"{name}: empty table"
    return rows


def _difference(what: str, doc: set[str], code: set[str]) -> str:
    return (
        f"{what}: in the code, not in docs/conformance.md: {sorted(code - doc)};"
        f" in docs/conformance.md, not in the code: {sorted(doc - code)}"
    )


def test_sop_classes_are_those_the_scp_registers() -> None:
    rows = table("sop-classes")
    doc = [r["UID"] for r in rows]
    assert len(doc) == len(set(doc)), "a SOP class is listed twice"
    code = {str(c.abstract_syntax) for c in storage_contexts()}
    code.add(str(verification_context().abstract_syntax))
    assert set(doc) == code, _difference("SOP classes", set(doc), code)
    assert {r["Role"] for r in rows} == {"SCP"}


def test_transfer_syntaxes_are_those_the_scp_offers() -> None:
    rows = table("transfer-syntaxes")
    doc = {r["UID"] for r in rows if r["Storage"] == "yes"}
    assert doc == set(TRANSFER_SYNTAXES), _difference(
        "storage syntaxes", doc, set(TRANSFER_SYNTAXES)
    )
    assert {r["UID"] for r in rows} == doc, "a syntax listed that no storage context offers"
    for c in storage_contexts():  # every context offers every syntax, as the doc says
        assert set(c.transfer_syntax) == set(TRANSFER_SYNTAXES), c.abstract_syntax
    echo = {r["UID"] for r in rows if r["Verification"] == "yes"}
    code = {str(t) for t in verification_context().transfer_syntax}
    assert echo == code, _difference("verification syntaxes", echo, code)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("conformance")
    gw = open_gateway(
        load_settings(
            home=tmp / "home", custodian_passphrase="unit-test", ledger={"enabled": False}
        )
    )
    try:
        yield gw
    finally:
        gw.close()


def _shape(path: str) -> str:
    """Path parameters compared by position, not by name."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def _registered(gw: Gateway) -> set[str]:
    """``METHOD /path`` of every /dicom-web operation of the app.

    From its OpenAPI document, the public list of every route with its methods: FastAPI
    includes routers lazily (``app.routes`` holds one entry per included router, not its
    routes). Every DICOMweb route is in the schema (none sets ``include_in_schema=False``;
    the check below would miss one that did)."""
    out = set()
    for path, operations in create_app(gw).openapi()["paths"].items():
        if path.startswith("/dicom-web"):
            for method in operations:
                if method.upper() in {"GET", "POST", "PUT", "DELETE", "PATCH"}:
                    out.add(f"{method.upper()} {_shape(path)}")
    return out


def test_dicomweb_routes_are_those_the_app_serves(gateway: Gateway) -> None:
    rows = table("dicomweb-routes")
    assert {r["Status"] for r in rows} <= {"served", "planned"}, "Status: served or planned"
    assert {r["Service"] for r in rows} <= {"QIDO-RS", "WADO-RS", "STOW-RS"}
    keys = [f"{r['Method']} {_shape(r['Path'])}" for r in rows]
    assert len(keys) == len(set(keys)), "a route is listed twice"
    served = {k for k, r in zip(keys, rows, strict=True) if r["Status"] == "served"}
    planned = {k for k, r in zip(keys, rows, strict=True) if r["Status"] == "planned"}
    code = _registered(gateway)
    assert code, "the app registers no /dicom-web route"
    for module in (DOC.parents[1] / "portal" / "dicomweb").glob("*.py"):
        assert "include_in_schema=False" not in module.read_text(), f"{module}: hidden route"
    assert served == code, _difference("DICOMweb routes served", served, code)
    assert not planned & code, f"registered, still marked planned: {sorted(planned & code)}"


def test_every_stow_status_the_doc_lists_is_one_a_test_checks() -> None:
    """The STOW status table is the error matrix of tests/dicomweb/test_stow.py."""
    statuses = {int(r["Status"]) for r in table("stow-status")}
    assert statuses == {200, 202, 400, 401, 403, 406, 408, 409, 413, 415}
    tests = (DOC.parents[1] / "tests" / "dicomweb" / "test_stow.py").read_text()
    edge = (DOC.parents[1] / "tests" / "unit" / "test_portal_edge.py").read_text()
    for status in statuses - {408}:  # 408: the guard's, tested with raw sockets
        assert f"== {status}" in tests, f"no STOW test asserts {status}"
    assert "status == 408" in edge
