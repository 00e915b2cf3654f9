"""The header object: an instance's data set without its bulk data, sealed on its own.

Why: metadata requests (QIDO/WADO metadata, a viewer's study list, re-indexing) need a few
kilobytes of attributes, not the hundreds of kilobytes to gigabytes of pixels. Ingest seals
this small Part-10 file as a second store object (``instances.header_cid``), so a metadata
read touches one small object and never decrypts a pixel.

The cut, exactly (computed by ``gateway.dataset.scan`` during validation, at no extra pass):

* every top-level element before the first top-level element of group 7FE0 or later is kept,
  in order, byte for byte as the sender encoded it; that first element and everything after
  it are left out: Extended Offset Table (7FE0,0001/0002), Float Pixel Data (7FE0,0008),
  Double Float Pixel Data (7FE0,0009), Pixel Data (7FE0,0010), and whatever follows
  (Digital Signatures, Data Set Trailing Padding);
* except that a top-level element before the cut whose VR is OB, OD, OF, OL, OV, OW or UN
  (in implicit VR: whose dictionary VR is one of these, or which the dictionary does not
  know) and whose value is longer than 64 KiB, or which is encapsulated (undefined length),
  is left out too: overlays, encapsulated documents, large private blobs;
* nested elements are never cut: a sequence is kept or dropped whole with its element.

What remains is a well-formed data set in the same transfer syntax (elements still ascending).
A deflated data set is cut after inflating; its header object says Explicit VR Little Endian.
The header object's plaintext is file meta + that data set: a Part-10 file without bulk data.
Its integrity rests on the store (blocks against the CID recorded in the index), the envelope
(AEAD under the study key) and its file meta naming the instance's SOP Instance UID, which
the reader checks, so a header cannot be passed off as another instance's.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from gateway.dataset import (
    DEFLATED,
    PIXEL_GROUP_START,
    STATUS_CANNOT_UNDERSTAND,
    Scan,
    _Walker,
    encoding_of,
    file_meta,
    scan,
    split_part10,
)
from gateway.errors import DatasetRefusedError

EXPLICIT_LE = "1.2.840.10008.1.2.1"

Buffer = bytes | bytearray | memoryview


def _cut_error(reason: str) -> DatasetRefusedError:
    return DatasetRefusedError(reason, STATUS_CANNOT_UNDERSTAND)


def header_transfer_syntax(transfer_syntax: str) -> str:
    """The transfer syntax of the header data set: the instance's, inflated if deflated."""
    return EXPLICIT_LE if transfer_syntax in DEFLATED else transfer_syntax


def header_parts(dataset: Buffer, layout: Scan) -> list[memoryview]:
    """Zero-copy views of ``dataset`` that make up the header data set (see module doc).

    ``dataset`` is the (inflated) data set and ``layout`` its ``scan``.
    """
    view = memoryview(dataset)
    end = layout.header_end if layout.header_end >= 0 else len(view)
    parts: list[memoryview] = []
    pos = 0
    for start, stop in layout.bulk:
        if start > pos:
            parts.append(view[pos:start])
        pos = stop
    if end > pos:
        parts.append(view[pos:end])
    return parts


def header_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str | None
) -> bytes:
    """The header object's file meta: the instance's, with the header's transfer syntax."""
    return file_meta(sop_class, sop_instance, header_transfer_syntax(transfer_syntax), source_ae)


def header_sections(
    meta: bytes,
    transfer_syntax: str,
    dataset: Buffer,
    layout: Scan,
    sop_class: str,
    sop_instance: str,
    source_ae: str | None,
) -> list[Buffer]:
    """The header object's plaintext as parts for ``crypto.seal_parts`` (no copy of the data
    set): the instance's own file meta ``meta``, or for a deflated one a meta naming Explicit
    VR Little Endian, then ``header_parts``."""
    if transfer_syntax in DEFLATED:
        meta = header_meta(sop_class, sop_instance, transfer_syntax, source_ae)
    return [meta, *header_parts(dataset, layout)]


def _top_level_cut(data: bytearray, transfer_syntax: str) -> int | None:
    """Offset of the first top-level element of group 7FE0 or later in a data set prefix,
    the length if the data set is complete and has none, None if more bytes are needed.

    Walks element headers only; the bytes are already authenticated (they come out of a
    verified envelope), so a walk running off the end means "not arrived yet".
    """
    implicit, little = encoding_of(transfer_syntax)
    with memoryview(data) as view:
        return _walk_top_level(_Walker(view, implicit, little, frozenset()), implicit)


def _walk_top_level(w: _Walker, implicit: bool) -> int | None:
    pos, end = 0, len(w.data)
    while pos < end:
        if end - pos < 12:
            return None
        try:
            tag, vr, length, value = w.header(pos, end, implicit)
        except DatasetRefusedError:
            return None
        if tag >= PIXEL_GROUP_START:
            return pos
        if length == 0xFFFFFFFF:
            try:
                if vr is not None and vr not in (b"SQ", b"UN"):
                    pos = w.fragments(value, end)
                else:
                    pos = w.sequence(value, end, implicit or vr == b"UN", 1, None)
            except DatasetRefusedError:
                return None
        else:
            pos = value + length
    return None


def header_from_part10(chunks: Iterable[Buffer], limit: int) -> bytes:
    """The header object's plaintext computed from a Part-10 stream (rows without a header
    object): reads only up to the cut, so pixel data is neither held nor decrypted past the
    segment the cut falls in. ``limit`` bounds what is buffered (a header longer than that
    is refused). Gives the same bytes ingest would have sealed. Every failure is a
    DatasetRefusedError (the bytes are authentic but do not make a data set).
    """
    buf = bytearray()
    source = iter(chunks)
    meta_end: int | None = None
    part = None
    inflater: zlib._Decompress | None = None
    data = bytearray()
    ts = ""
    for chunk in source:
        if meta_end is None:
            buf += chunk
            if len(buf) < 144:
                continue
            meta_end = 144 + int.from_bytes(buf[140:144], "little")
            if len(buf) < meta_end:
                meta_end = None
                continue
            part = split_part10(bytes(buf[:meta_end]))
            ts = part.transfer_syntax
            rest: Buffer = buf[meta_end:]
            if ts in DEFLATED:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        else:
            rest = chunk
        if inflater is not None:
            try:
                rest = inflater.decompress(rest, limit + 1)
            except zlib.error as e:
                raise _cut_error(f"deflated data set does not inflate: {e}") from e
        data += rest
        if _top_level_cut(data, header_transfer_syntax(ts)) is not None:
            break
        if len(data) > limit:
            raise _cut_error(f"no end of the header within {limit} bytes")
    if part is None or meta_end is None:
        raise _cut_error("object is shorter than a Part-10 file meta group")
    hts = header_transfer_syntax(ts)
    cut = _top_level_cut(data, hts)
    prefix = bytes(data[: cut if cut is not None else len(data)])
    layout = scan(prefix, hts) if prefix else Scan(0, -1, 0, {}, True, 0, ())
    if ts in DEFLATED:
        meta = header_meta(part.sop_class or "", part.sop_instance or "", ts, part.source_ae)
    else:
        meta = bytes(buf[:meta_end])  # the object's own file meta, as ingest used it
    return meta + b"".join(header_parts(prefix, layout))
