"""``ztbridge verify`` names the culprit: a stored block, an index row, a manifest, an audit entry.

Three studies are imported (and anchored on the embedded chain by the import itself), then
each is damaged in a different place, as an attacker with write access to the data folder but
not to the chain could. One ``verify --all`` must report every one of them, by study and
instance, and exit non-zero; ``verify --study`` reports only that study's.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.audit import GENESIS, entry_hash
from gateway.store.blockstore import PackBlockStore
from tests.support.dicomgen import Series, make_ct_series
from tests.support.gateway_proc import GatewayProcess, make_gateway

pytestmark = pytest.mark.integration


def flip_stored_byte(home: Path, cid: str) -> None:
    """Change one byte of a stored single-block object inside its pack file."""
    store = PackBlockStore(home / "store", read_only=True)
    try:
        data = store.get(cid)
    finally:
        store.close()
    assert len(data) < 262144, "the test objects are single blocks"
    for pack in sorted((home / "store" / "packs").glob("pack-*.dat")):
        raw = bytearray(pack.read_bytes())
        at = raw.find(data)
        if at >= 0:
            raw[at + len(data) // 2] ^= 0x01
            pack.write_bytes(bytes(raw))
            return
    raise AssertionError(f"object {cid} not found in any pack")


def sql(home: Path, statement: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(home / "index.sqlite3")
    try:
        rows = conn.execute(statement, args).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


@pytest.fixture
def anchored(tmp_path: Path) -> tuple[GatewayProcess, list[Series]]:
    gw = make_gateway(tmp_path)
    studies = [
        make_ct_series(tmp_path / name, 3, rows=32, columns=32, seed=n)
        for n, name in enumerate(("a", "b", "c"))
    ]
    imported = gw.cli("import", *(str(tmp_path / n) for n in ("a", "b", "c")))
    assert "3 batches sealed, 3 anchored" in imported.stdout, imported.stdout
    clean = gw.cli("verify", "--all")
    assert "3 batches, 9 instances, 1 audit ranges checked" in clean.stdout
    return gw, studies


def test_verify_names_each_culprit(anchored: tuple[GatewayProcess, list[Series]]) -> None:
    gw, (a, b, c) = anchored
    home = gw.home
    # A: one stored block of one instance.
    sop_a, cid_a = sql(
        home,
        "SELECT sop_instance_uid, cid FROM instances WHERE study_uid = ? ORDER BY id LIMIT 1",
        a.study_uid,
    )[0]
    flip_stored_byte(home, str(cid_a))
    # B: one index row (its recorded hash).
    (sop_b,) = sql(
        home,
        "SELECT sop_instance_uid FROM instances WHERE study_uid = ? ORDER BY id DESC LIMIT 1",
        b.study_uid,
    )[0]
    sql(home, "UPDATE instances SET sha256 = ? WHERE sop_instance_uid = ?", "0" * 64, sop_b)
    # C: its stored manifest.
    ((manifest_c,),) = sql(
        home, "SELECT manifest_cid FROM anchor_batches WHERE study_uid = ?", c.study_uid
    )
    flip_stored_byte(home, str(manifest_c))
    # The audit log: one entry inside the anchored range.
    sql(home, "UPDATE audit_events SET actor = 'cli:mallory' WHERE seq = 2")

    result = gw.cli("verify", "--all", check=False)
    assert result.returncode != 0
    report = result.stdout
    lines = [line for line in report.splitlines() if line.startswith("MISMATCH")]
    assert any(
        f"study {a.study_uid} instance {sop_a}: stored object {cid_a} is damaged" in line
        for line in lines
    ), report
    assert any(
        f"study {b.study_uid} instance {sop_b}: index row differs from the anchored manifest"
        " (SHA-256)" in line
        for line in lines
    ), report
    assert any(
        f"study {c.study_uid}: batch 1" in line and f"manifest: stored object {manifest_c}" in line
        for line in lines
    ), report
    assert any("audit entry 2: entry 2 was edited" in line for line in lines), report
    assert any("audit entries 1.." in line and "root anchored on-chain" in line for line in lines)
    # Nothing else is blamed: the untouched instances of A and B verify.
    others = [a.study_uid, b.study_uid, c.study_uid]
    assert all(any(s in line for s in others) or "audit" in line for line in lines), report
    assert len(lines) == 5, report

    only_b = gw.cli("verify", "--study", b.study_uid, check=False)
    assert only_b.returncode != 0
    b_lines = [line for line in only_b.stdout.splitlines() if line.startswith("MISMATCH")]
    assert len(b_lines) == 1 and sop_b in b_lines[0], only_b.stdout


def test_a_consistent_audit_rewrite_is_caught_by_the_anchor(
    anchored: tuple[GatewayProcess, list[Series]],
) -> None:
    gw, _ = anchored
    home = gw.home
    # Rewrite entry 1 and re-chain every later entry and the head: the log's own check passes.
    rows = sql(
        home,
        "SELECT seq, ts, kind, actor, subject, outcome, detail FROM audit_events ORDER BY seq",
    )
    prev = GENESIS
    for seq, ts, kind, actor, subject, outcome, detail in rows:
        if seq == 1:
            detail = json.dumps({"note": "nothing to see"})
        digest = entry_hash(
            int(seq),  # type: ignore[call-overload]
            str(ts),
            str(kind),
            str(actor),
            str(subject),
            str(outcome),
            str(detail),
            prev,
        )
        sql(
            home,
            "UPDATE audit_events SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            detail,
            prev,
            digest,
            seq,
        )
        prev = digest
    sql(home, "UPDATE audit_head SET hash = ?", prev)
    assert gw.cli("audit", "verify").returncode == 0

    result = gw.cli("verify", "--all", check=False)
    assert result.returncode != 0
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("MISMATCH")]
    assert "audit entries 1.." in line and "root anchored on-chain" in line
