"""An identical copy that lands between ingest's pre-check and its transaction.

Two associations sending the same instance at the same moment both pass the pre-check; the
second to commit must answer with the copy that is indexed (its CID and version), and audit
the duplicate, not hand out the CID of its own ciphertext, which no row references.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.dataset import split_part10
from gateway.index.models import instances
from gateway.ingest import Incoming, Origin, Outcome, Receipt
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series

FIRST = Origin(kind="dimse", actor="CT01@10.0.0.5")
SECOND = Origin(kind="dimse", actor="CT01@10.0.0.6")


class SendsFirstAtPut:
    """The real store; on the first put (``put_many_nowait``: the instance with its header
    object) the other sender's copy is ingested and
    committed first (in its own thread, as a second association would), then the put runs."""

    def __init__(self, gw: Gateway, incoming: Incoming) -> None:
        self._store = gw.store
        self._gw = gw
        self._incoming = incoming
        self.other: Receipt | None = None

    def put_many_nowait(self, objects: Any) -> Any:
        if self.other is None:
            done: list[Receipt] = []
            t = threading.Thread(
                target=lambda: done.append(self._gw.ingestor.ingest(self._incoming, FIRST))
            )
            self.other = Receipt(Outcome.REFUSED, 0)  # only once: the inner ingest puts too
            t.start()
            t.join(timeout=60)
            self.other = done[0]
        return self._store.put_many_nowait(objects)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(
        load_settings(home=tmp_path / "home", custodian_passphrase="p", ledger={"enabled": False})
    )
    yield g
    g.close()


def test_copy_landing_meanwhile_answers_with_the_indexed_copy(gw: Gateway, tmp_path: Path) -> None:
    f = make_ct_series(tmp_path / "ct", 1).files[0]
    part = split_part10(f.read_bytes())
    incoming = Incoming(part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance)
    racer = SendsFirstAtPut(gw, incoming)
    gw.ingestor._store = racer  # type: ignore[assignment]

    receipt = gw.ingestor.ingest(incoming, SECOND)

    other = racer.other
    assert other is not None and other.outcome is Outcome.STORED
    assert receipt.outcome is Outcome.DUPLICATE
    assert (receipt.cid, receipt.version) == (other.cid, other.version)
    with gw.db.read() as conn:
        indexed = conn.execute(select(instances.c.cid)).scalars().all()
        assert conn.execute(select(func.count()).select_from(instances)).scalar_one() == 1
    assert indexed == [receipt.cid]
    assert gw.store.has(str(receipt.cid))
    events = [(e.kind, e.actor) for e in gw.audit.entries()]
    assert events == [
        ("instance.stored", FIRST.actor),
        ("instance.duplicate", SECOND.actor),
    ]
    duplicate = list(gw.audit.entries())[-1]
    orphan = json.loads(duplicate.detail)["unreferenced_cid"]
    assert orphan != receipt.cid  # the object no row references is named, for a collector
    assert gw.audit.verify() is None
