"""A deflated data set checked in bounded memory: keep the header, count the rest, discard it.

Why: Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99) deflates the whole data set,
so a few megabytes on the wire can claim gigabytes of zeros (a deflate bomb: ~1030:1 at most).
Inflating it whole held the inflated data set in memory, up to the instance limit, per
association. But ztbridge stores the deflated stream exactly as received; the index and the
header object need only the elements before the cut (``gateway.header``). So this module
inflates chunk by chunk (``zlib.decompressobj`` with ``max_length``), keeps the top-level
elements the header object keeps, and walks every other byte only to check it: element
tags ascending, lengths tiling the stream exactly, encapsulated fragments well formed, the
deflate stream ended. What it holds is a chunk of inflated output plus the header.

Limits (``InflateLimits``, settings ``ingest.max_inflated_mb`` and
``ingest.max_inflate_ratio``): the inflated size, and its ratio to the deflated size once past
``RATIO_FLOOR`` (small data sets of empty frames deflate far better than images do); each
bounds the CPU a sender can make us spend per byte it sends. Beyond either, the refusal is
0xA700 (Refused: Out of Resources), checked while inflating, so a bomb costs at most its
limit. A header (what is kept) over ``max_header_bytes`` is refused the same way.

What is kept is exactly ``header.header_parts`` of the inflated data set: every top-level
element before the first one of group 7FE0 or later, except large bulk ones (bulk VR and over
``BULK_MIN_BYTES``, or encapsulated). ``scan`` of it then gives the index's attributes and the
same header object as before, without the pixels ever being in memory.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from gateway.dataset import (
    _LONG_VRS,
    BULK_MIN_BYTES,
    BULK_VRS,
    PIXEL_DATA,
    PIXEL_GROUP_START,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    _Walker,
    meta_in_dataset,
)
from gateway.errors import DatasetRefusedError

RATIO_FLOOR = 64 << 20
"""Inflated bytes allowed whatever the ratio: the ratio limit applies beyond this."""
MAX_HEADER_BYTES = 64 << 20
"""Most bytes of header (the elements kept) a deflated data set may inflate to."""
_CHUNK = 1 << 20  # inflated bytes produced per zlib call
_FEED = 64 << 10  # deflated bytes handed to zlib per call (its unconsumed tail is a copy)
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_SEQ_END = 0xFFFEE0DD
_HEAD = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")
_ITEM_HEAD = struct.Struct("<HHI")


@dataclass(frozen=True)
class InflateLimits:
    """How far a deflated data set may expand (settings ``ingest.max_inflated_mb``,
    ``ingest.max_inflate_ratio``)."""

    max_inflated_bytes: int = 2048 << 20
    max_ratio: int = 200
    max_header_bytes: int = MAX_HEADER_BYTES


@dataclass(frozen=True)
class Inflated:
    """What a checked deflated data set gave: the header data set and the facts about the rest."""

    header: bytes  # the kept top-level elements, in order, as the sender encoded them
    inflated_size: int  # bytes the whole data set inflates to
    pixel_length: int | None  # Pixel Data's value length; -1 encapsulated; None: absent
    pixel_fragments: int  # items of encapsulated Pixel Data (Basic Offset Table included)


def _refuse(reason: str) -> DatasetRefusedError:
    return DatasetRefusedError(reason, STATUS_CANNOT_UNDERSTAND)


def _too_big(reason: str) -> DatasetRefusedError:
    return DatasetRefusedError(reason, STATUS_OUT_OF_RESOURCES)


class _Inflater:
    """Inflated bytes on demand, counted against the limits as they are produced."""

    def __init__(self, raw: bytes | memoryview, limits: InflateLimits) -> None:
        self._src = memoryview(raw)
        self._fed = 0
        self._tail: bytes = b""
        self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()
        self._off = 0
        self._limits = limits
        self._ratio_cap = max(RATIO_FLOOR, limits.max_ratio * len(raw))
        self.produced = 0
        self.pos = 0  # offset in the inflated data set of the next unread byte
        self._done = False

    def _more(self) -> bool:
        """Inflate one more chunk into the buffer; False once the stream is exhausted."""
        while not self._done:
            if not self._tail and not self._d.eof and self._fed < len(self._src):
                self._tail = bytes(self._src[self._fed : self._fed + _FEED])
                self._fed += len(self._tail)
            if self._d.eof:
                self._finish()
                return False
            try:
                out = self._d.decompress(self._tail, _CHUNK)
            except zlib.error as e:
                raise _refuse(f"deflated data set does not inflate: {e}") from e
            drained = not self._tail
            self._tail = self._d.unconsumed_tail
            if self._d.eof:
                self._tail = b""
            if not out and drained and not self._tail and self._fed >= len(self._src):
                self._finish()  # all input in, no output pending: the stream must have ended
                return False
            if out:
                self._count(len(out))
                if self._off:
                    del self._buf[: self._off]
                    self._off = 0
                self._buf += out
                return True
        return False

    def _count(self, n: int) -> None:
        self.produced += n
        limits = self._limits
        if self.produced > limits.max_inflated_bytes:
            raise _too_big(
                f"deflated data set inflates beyond {limits.max_inflated_bytes} bytes"
                " (setting ingest.max_inflated_mb)"
            )
        if self.produced > self._ratio_cap:
            raise _too_big(
                f"deflated data set of {len(self._src)} bytes inflates beyond"
                f" {limits.max_ratio} times its size (setting ingest.max_inflate_ratio)"
            )

    def _finish(self) -> None:
        """The input is used up: the deflate stream must have ended. Bytes after its end are
        not part of the data set and are tolerated, as readers do (pydicom's own sample
        carries a gzip trailer there); they are stored with the rest, as received."""
        self._done = True
        if not self._d.eof:
            raise _refuse("deflated data set is truncated (the deflate stream does not end)")

    def available(self) -> int:
        return len(self._buf) - self._off

    def peek(self, n: int) -> memoryview:
        """Up to ``n`` unread bytes (fewer only at the end), not consumed."""
        while self.available() < n and self._more():
            pass
        return memoryview(self._buf)[self._off : self._off + n]

    def read(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes, or a refusal naming ``what`` was cut short."""
        with self.peek(n) as view:
            if len(view) < n:
                raise _refuse(f"{what} at byte {self.pos} is truncated (data set ends early)")
            data = bytes(view)
        self._off += n
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        """Inflate and discard ``n`` bytes (memory: one chunk)."""
        start = self.pos
        while n:
            if not self.available() and not self._more():
                raise _refuse(
                    f"{what} at byte {start} claims more bytes than remain (truncated data set)"
                )
            step = min(n, self.available())
            self._off += step
            self.pos += step
            n -= step

    def at_end(self) -> bool:
        """Whether every inflated byte was read (and the stream ended properly)."""
        return not self.available() and not self._more()


class _Checker:
    """Walks the top level of the inflated stream (explicit VR little endian, always)."""

    def __init__(self, raw: bytes | memoryview, limits: InflateLimits) -> None:
        self.s = _Inflater(raw, limits)
        self.limits = limits
        self.kept = bytearray()
        self.pixel_length: int | None = None
        self.fragments = 0

    def run(self) -> Inflated:
        s = self.s
        cut = False
        last = -1
        while not s.at_end():
            start = s.pos
            head = s.read(8, "element header")
            group, elem, vr, short = _HEAD.unpack(head)
            tag = (group << 16) | elem
            if group == 0xFFFE:
                raise _refuse(f"item tag ({group:04X},{elem:04X}) at the top level, byte {start}")
            if tag <= last:
                raise _refuse(f"element ({group:04X},{elem:04X}) out of order")
            last = tag
            if group == 0x0002:
                raise meta_in_dataset()
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise _refuse(f"invalid VR {vr!r} at byte {start}")
            if vr in _LONG_VRS:
                extra = s.read(4, "element header")
                head += extra
                length = _U32.unpack(extra)[0]
            else:
                length = short
            cut = cut or tag >= PIXEL_GROUP_START
            name = f"element ({group:04X},{elem:04X})"
            if length == _UNDEFINED:
                if tag == PIXEL_DATA or vr not in (b"SQ", b"UN"):
                    self._fragments(tag == PIXEL_DATA)  # encapsulated: never kept
                    if tag == PIXEL_DATA:
                        self.pixel_length = -1
                    continue
                body = self._undefined_sequence(vr == b"UN", name)
                if not cut:
                    self._keep(head + body)
                continue
            if tag == PIXEL_DATA:
                self.pixel_length = length
            if cut or (length > BULK_MIN_BYTES and vr in BULK_VRS):
                if vr == b"SQ":  # rare after the cut (Digital Signatures): walked, dropped
                    self._defined_sequence(self._bounded(length, name), name)
                else:
                    s.skip(length, name)
                continue
            value = s.read(self._bounded(length, name), name)
            self._keep(head + value)
        return Inflated(bytes(self.kept), s.produced, self.pixel_length, self.fragments)

    def _bounded(self, length: int, name: str) -> int:
        if len(self.kept) + length > self.limits.max_header_bytes:
            raise _too_big(
                f"{name} takes the data set's header beyond {self.limits.max_header_bytes}"
                " bytes (elements other than pixel data and large bulk values)"
            )
        return length

    def _keep(self, element: bytes) -> None:
        self._bounded(len(element), "the data set")
        self.kept += element

    def _fragments(self, pixels: bool) -> None:
        """Encapsulated items until the sequence delimiter, each value skipped unread."""
        s = self.s
        while True:
            start = s.pos
            tag_group, tag_elem, length = _ITEM_HEAD.unpack(s.read(8, "encapsulated item"))
            tag = (tag_group << 16) | tag_elem
            if tag == _SEQ_END:
                return
            if tag != _ITEM or length == _UNDEFINED:
                raise _refuse(f"malformed encapsulated pixel data at byte {start}")
            if pixels:
                self.fragments += 1
            s.skip(length, "encapsulated fragment")

    def _defined_sequence(self, length: int, name: str) -> bytes:
        value = self.s.read(length, name)
        walker = _Walker(value, False, True, frozenset())
        walker.sequence(0, len(value), False, 1, len(value))
        return value

    def _undefined_sequence(self, implicit: bool, name: str) -> bytes:
        """An undefined-length sequence's bytes through its delimiter, found by walking a
        window that doubles until the walk completes (bounded by the header limit)."""
        s, want = self.s, 64 << 10
        while True:
            view = s.peek(want)
            try:
                walker = _Walker(view, implicit, True, frozenset())
                end = walker.sequence(0, len(view), implicit, 1, None)
            except DatasetRefusedError:
                if len(view) < want:  # the whole rest of the data set: the error stands
                    view.release()
                    raise
                if want >= self.limits.max_header_bytes:
                    view.release()
                    raise _too_big(
                        f"{name} is longer than {self.limits.max_header_bytes} bytes"
                    ) from None
                view.release()
                want *= 2
                continue
            view.release()
            return s.read(self._bounded(end, name), name)


def inflate_checked(raw: bytes | memoryview, limits: InflateLimits) -> Inflated:
    """Inflate a deflated data set in bounded memory, checking all of it; keep the header.

    Refusals: 0xA700 past a limit (``InflateLimits``), 0xC000 for anything malformed. Memory:
    a chunk of inflated output plus the kept header, whatever the data set claims.
    """
    if not len(raw):
        raise _refuse("empty data set")
    return _Checker(raw, limits).run()
