"""docs/conformance.md stays true: the QIDO-RS and WADO-RS resources it lists are the routes
registered."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.routing import APIRoute

from gateway.qido_search import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS
from portal.dicomweb import PREFIX, qido, wado
from portal.dicomweb.dicomjson import keyword_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def _section(name: str) -> str:
    text = DOC.read_text()
    found = re.search(rf"<!-- {name} -->(.*?)<!-- /{name} -->", text, re.S)
    assert found, f"docs/conformance.md has no {name} block"
    return found.group(1)


def test_qido_resources_are_the_registered_routes() -> None:
    listed = set(re.findall(r"`(GET) (/dicom-web/[^`]+)`", _section("qido-resources")))
    registered = {
        (m, PREFIX + re.sub(r"\{(\w+)_uid\}", r"{\1}", r.path))
        for r in qido.router.routes
        if isinstance(r, APIRoute)
        for m in r.methods
    }
    assert listed == registered


def test_qido_matching_keys_are_the_indexed_ones() -> None:
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| (study|series|instance) \([^)]*\) \| ([^|]+) \|$", text, re.M))
    for level, keys in (
        ("study", STUDY_KEYS),
        ("series", SERIES_KEYS),
        ("instance", INSTANCE_KEYS),
    ):
        documented = {k.strip() for k in rows[level].split(",")}
        assert documented == set(keys), level
        assert all(keyword_of(k) == k for k in documented)


def test_wado_resources_are_the_registered_routes() -> None:
    listed = set(re.findall(r"`(GET) (/dicom-web/[^`]+)`", _section("wado-resources")))
    registered = {
        (m, PREFIX + r.path.replace("{path:path}", "{path}"))
        for r in wado.router.routes
        if isinstance(r, APIRoute)
        for m in r.methods
    }
    assert listed == registered
