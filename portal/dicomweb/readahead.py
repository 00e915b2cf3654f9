"""Read ahead: the next writes of a response made on a thread of their own.

Why: a WADO-RS body is CPU work twice over, the read funnel (block CIDs, AES-GCM, the data
set's SHA-256) and then the connection (TLS). Run one after the other on one thread, each
waits for the other; with the read funnel a few writes ahead on its own thread (hashlib,
AES-GCM and the TLS layer all release the GIL on large buffers), both run at once. Memory is
bounded by ``depth`` writes; an exception in the producer reaches the consumer in order,
after the writes made before it; a consumer that stops early (the client went away) stops
the producer, which closes its source.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def readahead(chunks: Iterable[bytes], depth: int = 4) -> Iterator[bytes]:
    """``chunks``, produced up to ``depth`` ahead on a daemon thread."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(chunks)
        try:
            for chunk in source:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failed(e))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[bytes]:
        worker = threading.Thread(target=produce, name="wado-readahead", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                assert isinstance(item, bytes)
                yield item
        finally:
            stop.set()

    return consume()
