"""Refused posture reports, counted without letting every poster write to the index.

Anyone who can reach the portal can post a report in any device's name. Writing a row (and an
fsynced audit entry) for each refusal let 600 unauthenticated posts make 600 audit rows and
slow every C-STORE sharing the index (a 100-instance push took 1.49 s instead of 0.77 s at
144 posts/s). So a refusal is *noted* here, in memory: the first of each kind (device,
problem) in a window is reported at once (the caller logs it, and persists it if the report's
signature verified); the rest are counted, and one summary per window says how many there
were and from where. Memory is bounded: past ``max_keys`` kinds, more are folded into one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

OTHER = "(other)"  # the device name refusals are folded under once the table is full
MAX_PEERS = 4  # addresses named per kind in a summary


@dataclass
class _Kind:
    count: int = 0  # noted in this window, the first (reported at once) included
    peers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Suppressed:
    """Refusals of one kind that were counted but not reported one by one."""

    device: str
    problem: str
    count: int
    peers: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    """What a window held beyond what was reported at once."""

    started: datetime
    ended: datetime
    suppressed: tuple[Suppressed, ...]

    @property
    def total(self) -> int:
        """How many refusals were counted and not reported one by one."""
        return sum(s.count for s in self.suppressed)


class RefusalTally:
    """Counts refusals per (device, problem) in fixed windows; thread-safe."""

    def __init__(self, window: timedelta = timedelta(seconds=60), max_keys: int = 256) -> None:
        self._window = window
        self._max_keys = max_keys
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._started: datetime | None = None
        self._lock = threading.Lock()

    def note(self, now: datetime, device: str, problem: str, peer: str) -> bool:
        """Count one refusal; True if it is the first of its kind in this window (the caller
        reports it now), False if it is only counted (it appears in the summary)."""
        with self._lock:
            if self._started is None:
                self._started = now
            key = (device, problem)
            if key not in self._kinds and len(self._kinds) >= self._max_keys:
                key = (OTHER, problem)
            kind = self._kinds.setdefault(key, _Kind())
            kind.count += 1
            if peer not in kind.peers and len(kind.peers) < MAX_PEERS:
                kind.peers.append(peer)
            return kind.count == 1

    def take_summary(self, now: datetime, force: bool = False) -> Summary | None:
        """Once the window has run out (or with ``force``, at shutdown): what it counted
        beyond the first of each kind (None if nothing), and a fresh window. Before that:
        None, and nothing changes."""
        with self._lock:
            if self._started is None or (not force and now - self._started < self._window):
                return None
            started, kinds = self._started, self._kinds
            self._started, self._kinds = None, {}
        suppressed = tuple(
            Suppressed(device, problem, k.count - 1, tuple(k.peers))
            for (device, problem), k in sorted(kinds.items())
            if k.count > 1
        )
        return Summary(started, now, suppressed) if suppressed else None
