"""The store/index cross-check behind ``ztbridge store verify`` (and, later, an admin page).

Two questions: does every stored block still match its CID (bit rot, tampering), and does
every index row's object still resolve (a lost pack, a restore from the wrong backup). The
second needs the index, so it is not the store's own ``verify``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select

from gateway.index.database import Database
from gateway.index.models import instances
from gateway.store.base import ContentStore


@dataclass(frozen=True)
class Finding:
    """One problem: what it is about (a block or an instance) and what is wrong."""

    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


class StoreCheck:
    """Run ``findings()`` to the end; ``rows`` then says how many index rows were checked."""

    def __init__(self, store: ContentStore, db: Database) -> None:
        self._store = store
        self._db = db
        self.rows = 0

    def findings(self) -> Iterator[Finding]:
        """Every bad block, then every index row whose object is missing, as found."""
        for p in self._store.verify():
            yield Finding(f"block {p.cid}", p.problem)
        with self._db.read() as conn:
            rows = conn.execute(
                select(instances.c.cid, instances.c.sop_instance_uid, instances.c.version)
            ).all()
        self.rows = len(rows)
        for row in rows:
            if not self._store.has(row.cid):
                yield Finding(
                    f"instance {row.sop_instance_uid} v{row.version}",
                    f"object {row.cid} is missing",
                )
