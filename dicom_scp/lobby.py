"""Connections that have not sent their A-ASSOCIATE-RQ yet: counted, capped, and held cheaply.

Why: pynetdicom gives every accepted connection a thread and an Association (two more
threads) at once, before the peer has said a word. A flood of bare connects then costs a
thread group each, and evicting one only shuts its socket while its threads wind down, so a
few local threads connecting in a loop took the gateway to 1840 threads, ~1.9 GiB and a DICOM
port nobody else could reach. Here:

* ``PendingConnections`` counts every connection from ``accept()`` until its A-ASSOCIATE-RQ
  arrives (or it closes), per source address and in total. Past a cap the oldest goes:
  first the oldest that has not sent a byte (a real modality sends its request the moment it
  connects, so silence is what a flood looks like), then the oldest of the rest. A source
  address past its own cap loses its own oldest, so one flooding host churns its own few
  slots and cannot push other hosts' modalities out.
* ``Lobby`` holds connections that have sent nothing yet in one ``selectors`` loop on one
  thread: no thread, no Association, nothing but a file descriptor until the first byte
  arrives (then the connection goes on to its own thread, as before). A connection that
  closes or is reset while waiting costs one ``recv``; one that stays silent is closed after
  the deadline (``dicom.acse_timeout``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("ztbridge.dicom")


@dataclass(eq=False)
class Pending:
    """One connection waiting for its association request."""

    sock: socket.socket  # replaced by the TLS-wrapped socket once wrapped
    ip: str
    spoke: bool = False  # has sent at least one byte
    since: float = field(default_factory=time.monotonic)

    def hang_up(self) -> None:
        """Wake whoever waits on this socket: the lobby loop or the connection's threads see
        end-of-file at once and let go of it (closing is theirs to do)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class PendingConnections:
    """Connections without an A-ASSOCIATE-RQ yet, oldest first; past a cap the oldest go."""

    def __init__(self, cap: int, per_ip: int) -> None:
        self._cap = cap
        self._per_ip = per_ip
        self._items: dict[Pending, None] = {}  # insertion order: oldest first
        self._by_ip: dict[str, dict[Pending, None]] = {}
        self._lock = threading.Lock()
        self.evicted = 0
        self._last_log = 0.0

    def add(self, item: Pending) -> None:
        """Track a new connection; hangs up on the oldest ones if over a cap."""
        victims: list[Pending] = []
        with self._lock:
            self._items[item] = None
            mine = self._by_ip.setdefault(item.ip, {})
            mine[item] = None
            if len(mine) > self._per_ip:
                victims.append(self._pop(_oldest(mine)))
            if len(self._items) > self._cap:
                victims.append(self._pop(_oldest(self._items)))
            self.evicted += len(victims)
            now = time.monotonic()
            report = bool(victims) and now - self._last_log > 10
            if report:
                self._last_log = now
        for victim in victims:
            victim.hang_up()
        if report:
            log.warning(
                "connections without an association request: dropped the oldest (more than %d"
                " in all, or %d from one address; %d dropped so far)",
                self._cap,
                self._per_ip,
                self.evicted,
            )

    def spoke(self, item: Pending) -> None:
        """The connection sent its first bytes: a silent flood no longer pushes it out first."""
        with self._lock:
            item.spoke = True

    def discard(self, item: Pending) -> None:
        """The connection sent its request, or closed (idempotent)."""
        with self._lock:
            if item in self._items:
                self._pop(item)

    def _pop(self, item: Pending) -> Pending:
        del self._items[item]
        mine = self._by_ip[item.ip]
        del mine[item]
        if not mine:
            del self._by_ip[item.ip]
        return item

    def __contains__(self, item: Pending) -> bool:
        with self._lock:
            return item in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def count(self, ip: str) -> int:
        """Connections pending from ``ip``."""
        with self._lock:
            return len(self._by_ip.get(ip, ()))


def _oldest(items: dict[Pending, None]) -> Pending:
    """The oldest silent connection, else the oldest."""
    for item in items:
        if not item.spoke:
            return item
    return next(iter(items))


# (pending connection, peer address): hand a connection that spoke to its own thread.
Proceed = Callable[[Pending, tuple[str, int]], None]


class Lobby:
    """One thread holding every connection that has not sent a byte yet (see module doc)."""

    def __init__(self, pending: PendingConnections, timeout: float) -> None:
        self._pending = pending
        self._timeout = timeout
        self._selector = selectors.DefaultSelector()
        self._arrivals: collections.deque[tuple[Pending, tuple[str, int], Proceed]] = (
            collections.deque()
        )
        self._waiting: dict[Pending, float] = {}  # deadline; insertion order is deadline order
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the lobby's thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="DicomLobby", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Close every waiting connection and end the thread."""
        self._stopping = True
        self._ring()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def admit(self, sock: socket.socket, address: tuple[str, int], proceed: Proceed) -> None:
        """On the accept thread: count the connection and queue it for the lobby."""
        item = Pending(sock, str(address[0]))
        self._pending.add(item)
        self._arrivals.append((item, address, proceed))
        self._ring()

    def _ring(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: already ringing
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._take_arrivals()
                for key, _ in self._selector.select(timeout=self._next_wait()):
                    if key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(4096):
                                pass
                        continue
                    self._ready(key)
                self._expire()
        finally:
            self._close_all()

    def _take_arrivals(self) -> None:
        while self._arrivals:
            item, address, proceed = self._arrivals.popleft()
            if item not in self._pending:  # evicted before it got here
                item.sock.close()
                continue
            try:
                self._selector.register(item.sock, selectors.EVENT_READ, (item, address, proceed))
            except (OSError, ValueError):
                self._drop(item)
                continue
            self._waiting[item] = item.since + self._timeout

    def _next_wait(self) -> float:
        for deadline in self._waiting.values():
            return max(0.0, min(1.0, deadline - time.monotonic()))
        return 1.0

    def _ready(self, key: selectors.SelectorKey) -> None:
        item, address, proceed = key.data
        self._selector.unregister(item.sock)
        try:
            first = item.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:  # spurious wake-up: keep waiting
            self._selector.register(item.sock, selectors.EVENT_READ, key.data)
            return
        except OSError:  # reset by the peer
            first = b""
        if not first or item not in self._pending:  # closed, reset, or evicted (shut down)
            self._drop(item)
            return
        del self._waiting[item]
        self._pending.spoke(item)
        try:
            proceed(item, address)
        except Exception:
            log.exception("could not start serving the connection from %s", address[0])
            self._drop(item)

    def _expire(self) -> None:
        now = time.monotonic()
        expired = []
        for item, deadline in self._waiting.items():
            if deadline > now:
                break
            expired.append(item)
        for item in expired:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(item.sock)
            log.debug("connection from %s sent nothing for %.0f s: closed", item.ip, self._timeout)
            self._drop(item)

    def _drop(self, item: Pending) -> None:
        self._waiting.pop(item, None)
        self._pending.discard(item)
        with contextlib.suppress(OSError):
            item.sock.close()

    def _close_all(self) -> None:
        for key in list(self._selector.get_map().values()):
            if key.fileobj is not self._wake_r:
                self._drop(key.data[0])
        while self._arrivals:
            self._drop(self._arrivals.popleft()[0])
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
