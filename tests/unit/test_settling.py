"""The commit-before-durable window (gateway/settling.py): nothing acknowledged or built on a
row whose ciphertext is still flushing, and a crash inside the window leaves no such row.

Each case holds an ingest inside that window on purpose: the store's flush is made to wait
on an event (or never to write at all, which is what a crash leaves behind), so the test
controls exactly when the ciphertext becomes durable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.anchoring.batches import BatchSealer, RecordOwner
from gateway.dataset import split_part10
from gateway.errors import StorageError
from gateway.index.models import audit_events, instances, series, settling, studies, study_keys
from gateway.ingest import Incoming, Origin, Outcome, Receipt
from gateway.ledger.accounts import ensure_accounts
from gateway.service import Gateway, open_gateway
from gateway.settings import Settings, load_settings
from gateway.settling import Settling
from tests.support.dicomgen import make_ct_series

ORIGIN = Origin(kind="import", actor="test")
PASSPHRASE = "unit-test-passphrase"
NEVER_WRITTEN = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


class HeldFlush:
    """A pending put whose ``wait`` returns only once the test lets it (or fails then)."""

    def __init__(self, real: Any, gate: threading.Event, fail: list[bool]) -> None:
        self._real = real
        self._gate = gate
        self._fail = fail
        self.cid = real.cid if real is not None else NEVER_WRITTEN

    def wait(self) -> None:
        self._gate.wait(30)
        if self._fail[0]:
            raise StorageError("flushing pack-000001.dat: [Errno 5] Input/output error")
        if self._real is not None:
            self._real.wait()


class HeldStore:
    """The real store, but every flush is held until ``release``; with ``write=False`` the
    objects never reach the store at all (what a crash before the flush leaves)."""

    def __init__(self, real: Any, *, write: bool = True) -> None:
        self.real = real
        self.write = write
        self.gate = threading.Event()
        self.fail = [False]

    def put_many_nowait(self, objects: list[bytes]) -> list[HeldFlush]:
        puts = self.real.put_many_nowait(objects) if self.write else [None] * len(objects)
        return [HeldFlush(p, self.gate, self.fail) for p in puts]

    def release(self, *, fail: bool = False) -> None:
        self.fail[0] = fail
        self.gate.set()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def settings_for(home: Path) -> Settings:
    return load_settings(home=home, custodian_passphrase=PASSPHRASE, ledger={"enabled": False})


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(settings_for(tmp_path / "home"))
    yield g
    g.close()


def incoming(path: Path) -> Incoming:
    part = split_part10(path.read_bytes())
    return Incoming(part.dataset, part.transfer_syntax, part.sop_class, part.sop_instance)


def in_background(gw: Gateway, item: Incoming) -> tuple[threading.Thread, list[Receipt]]:
    out: list[Receipt] = []
    t = threading.Thread(target=lambda: out.append(gw.ingestor.ingest(item, ORIGIN)), daemon=True)
    t.start()
    return t, out


def committed_rows(gw: Gateway) -> list[Any]:
    with gw.db.read() as conn:
        return conn.execute(select(instances.c.id, instances.c.sop_instance_uid)).all()


def wait_for_commit(gw: Gateway, count: int) -> list[Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = committed_rows(gw)
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError("the ingest never committed its row")


def test_registry_tracks_the_lowest_unsettled_row() -> None:
    s = Settling()
    assert s.horizon() is None
    assert s.open(7) == 7
    assert s.open(9) == 7  # the watermark never passes an unsettled row
    s.close(7, durable=True)
    assert s.horizon() == 9 and s.wait(7) is True
    s.close(9, durable=False)
    assert s.horizon() is None and s.wait(9) is False  # withdrawn: nobody may answer for it
    assert s.wait(42) is True  # a row that was never unsettled is durable
    s.open(11)
    assert s.wait(11, timeout=0.05) is False  # not settled in time: not durable


def test_the_row_commits_during_the_flush_and_the_answer_waits_for_it(gw: Gateway) -> None:
    f = make_ct_series(gw.settings.home.parent / "ct", 1).files[0]
    held = HeldStore(gw.store)
    gw.ingestor._store = held  # type: ignore[assignment]
    thread, out = in_background(gw, incoming(f))
    (row,) = wait_for_commit(gw, 1)
    assert gw.ingestor.settling.horizon() == row.id
    with gw.db.read() as conn:  # the same transaction recorded a watermark at or below it
        assert conn.execute(select(settling.c.settled_below)).scalar_one() <= row.id
    time.sleep(0.2)
    assert out == []  # committed, but not answered while the ciphertext is not durable
    held.release()
    thread.join(10)
    assert out[0].outcome is Outcome.STORED and out[0].status == 0
    assert gw.ingestor.settling.horizon() is None


def test_an_identical_copy_is_answered_only_once_the_first_is_durable(gw: Gateway) -> None:
    f = make_ct_series(gw.settings.home.parent / "ct", 1).files[0]
    held = HeldStore(gw.store)
    gw.ingestor._store = held  # type: ignore[assignment]
    first, first_out = in_background(gw, incoming(f))
    wait_for_commit(gw, 1)
    second, second_out = in_background(gw, incoming(f))
    time.sleep(0.3)
    assert second_out == []  # the copy's row exists, but its ciphertext is not durable yet
    held.release()
    first.join(10)
    second.join(10)
    assert first_out[0].outcome is Outcome.STORED
    assert second_out[0].outcome is Outcome.DUPLICATE and second_out[0].status == 0
    assert second_out[0].cid == first_out[0].cid


def test_a_copy_of_a_row_whose_flush_fails_is_refused_not_acknowledged(gw: Gateway) -> None:
    f = make_ct_series(gw.settings.home.parent / "ct", 1).files[0]
    held = HeldStore(gw.store)
    gw.ingestor._store = held  # type: ignore[assignment]
    first, first_out = in_background(gw, incoming(f))
    wait_for_commit(gw, 1)
    second, second_out = in_background(gw, incoming(f))
    time.sleep(0.2)
    held.release(fail=True)
    first.join(10)
    second.join(10)
    assert (first_out[0].outcome, first_out[0].status) == (Outcome.REFUSED, 0xA700)
    assert (second_out[0].outcome, second_out[0].status) == (Outcome.REFUSED, 0xA700)
    assert committed_rows(gw) == []


def test_anchoring_never_seals_a_row_still_flushing(gw: Gateway, tmp_path: Path) -> None:
    ct = make_ct_series(tmp_path / "ct", 2)
    done = gw.ingestor.ingest(incoming(ct.files[0]), ORIGIN)
    assert done.outcome is Outcome.STORED
    accounts = ensure_accounts(gw.keys_dir, gw.custodian)
    sealer = BatchSealer(
        gw.db,
        gw.store,
        gw.custodian,
        accounts.record_secret,
        gw.clock,
        horizon=gw.ingestor.settling.horizon,
    )
    owner = RecordOwner(accounts.custodian_address, gw.custodian.public, gw.custodian.kem)
    held = HeldStore(gw.store)
    gw.ingestor._store = held  # type: ignore[assignment]
    thread, _ = in_background(gw, incoming(ct.files[1]))
    wait_for_commit(gw, 2)
    batch = sealer.seal(done.study_uid or "", owner)
    assert batch is not None and batch.instance_count == 1  # only the durable row
    held.release()
    thread.join(10)
    later = sealer.seal(done.study_uid or "", owner)
    assert later is not None and later.instance_count == 1  # the other, once durable


def test_a_crash_inside_the_window_is_withdrawn_at_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ct = make_ct_series(tmp_path / "ct", 2, study_uid=None)
    gw = open_gateway(settings_for(home))
    kept = gw.ingestor.ingest(incoming(ct.files[0]), ORIGIN)
    assert kept.outcome is Outcome.STORED
    held = HeldStore(gw.store, write=False)  # its ciphertext will never be durable
    gw.ingestor._store = held  # type: ignore[assignment]
    in_background(gw, incoming(ct.files[1]))  # "dies" waiting for its flush
    wait_for_commit(gw, 2)
    gw.store.close()  # the process is gone: nothing more reaches the disk
    gw.db.close()

    again = open_gateway(settings_for(home))
    try:
        left = committed_rows(again)
        assert [r.sop_instance_uid for r in left] == [kept.sop_instance_uid]
        with again.db.read() as conn:
            kinds = [r.kind for r in conn.execute(select(audit_events.c.kind))]
            counts = conn.execute(select(studies.c.num_instances, studies.c.num_series)).one()
            series_left = conn.execute(select(series.c.num_instances)).scalars().all()
            keys_left = conn.execute(select(study_keys.c.key_id)).scalars().all()
            below = conn.execute(select(settling.c.settled_below)).scalar_one()
        assert kinds == ["instance.stored", "instance.stored", "instance.withdrawn"]
        assert again.audit.verify() is None  # the chain holds: withdrawn by a new entry
        assert tuple(counts) == (1, 1) and series_left == [1]
        assert len(keys_left) == 1  # the study key is the acknowledged instance's
        assert below > max(r.id for r in left)  # the next start checks nothing again
        # the withdrawn instance, sent again by its unanswered modality, is stored afresh
        resent = again.ingestor.ingest(incoming(ct.files[1]), ORIGIN)
        assert (resent.outcome, resent.version) == (Outcome.STORED, 1)
    finally:
        held.release(fail=True)
        again.close()


def test_a_clean_start_withdraws_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ct = make_ct_series(tmp_path / "ct", 3)
    gw = open_gateway(settings_for(home))
    assert all(gw.ingestor.ingest(incoming(f), ORIGIN).outcome is Outcome.STORED for f in ct.files)
    gw.close()
    again = open_gateway(settings_for(home))
    try:
        left = committed_rows(again)
        with again.db.read() as conn:
            kinds = [r.kind for r in conn.execute(select(audit_events.c.kind))]
            below = conn.execute(select(settling.c.settled_below)).scalar_one()
        assert len(left) == 3 and "instance.withdrawn" not in kinds
        assert below > max(r.id for r in left)
    finally:
        again.close()
