"""Reading just enough of an encoded DICOM data set, strictly, without trusting it.

pydicom is lenient by design: a truncated element or garbage after the header decodes with a
warning. Ingest must refuse those, so ``scan`` walks every element's tag and length (nested
sequences and encapsulated fragments included) and demands that they tile the buffer exactly.
It touches no values, so it costs microseconds even for a large image. pydicom then decodes
only the part before Pixel Data, which is all the index needs.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

# Re-exported (``as``): callers import the statuses from here too.
from gateway.dimse_status import STATUS_CANNOT_UNDERSTAND as STATUS_CANNOT_UNDERSTAND
from gateway.dimse_status import STATUS_DATASET_MISMATCH as STATUS_DATASET_MISMATCH
from gateway.dimse_status import STATUS_OUT_OF_RESOURCES as STATUS_OUT_OF_RESOURCES
from gateway.errors import DatasetRefusedError

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
# Only this syntax deflates the whole data set; Deflated Image Frame Compression
# (1.2.840.10008.1.2.8.1) is an ordinary explicit VR LE data set with encapsulated frames.
DEFLATED = {"1.2.840.10008.1.2.1.99"}

IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.10.1433.1.1")
IMPLEMENTATION_VERSION = "ZTBRIDGE_010"

_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
_MAX_DEPTH = 32
PIXEL_GROUP_START = 0x7FE00000
"""Top-level elements from here on (Float / Double Float / Pixel Data, Extended Offset Table,
trailing padding, signatures) are bulk: left out of the header object."""
BULK_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"})
BULK_MIN_BYTES = 64 * 1024
"""A top-level element with a bulk VR and a value longer than this is left out of the header
object (an overlay, an encapsulated document, a large private blob)."""
_BULK_DICT_VRS = frozenset(v.decode() for v in BULK_VRS)


def _dictionary_vr(tag: int) -> str | None:
    """The data dictionary's VR for a tag, None for private or unknown ones."""
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _refuse(reason: str) -> DatasetRefusedError:
    return DatasetRefusedError(reason, STATUS_CANNOT_UNDERSTAND)


def encoding_of(transfer_syntax: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) for a transfer syntax; unknown ones are explicit LE."""
    if transfer_syntax == IMPLICIT_LE:
        return True, True
    if transfer_syntax == EXPLICIT_BE:
        return False, False
    return False, True


def inflate(data: bytes | memoryview, limit: int) -> bytes:
    """Inflate a deflated data set, refusing one that expands beyond ``limit`` bytes."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise _refuse(f"deflated data set does not inflate: {e}") from e
    if len(out) > limit or d.unconsumed_tail:
        raise DatasetRefusedError(
            f"deflated data set expands beyond {limit} bytes", STATUS_OUT_OF_RESOURCES
        )
    return out


@dataclass(frozen=True)
class Element:
    """A top-level element's place in the buffer (VR None when the encoding is implicit)."""

    vr: bytes | None
    offset: int
    length: int


@dataclass(frozen=True)
class Scan:
    """Where things are in a well-formed data set."""

    pixel_offset: int  # offset of the Pixel Data element's tag, or len(data) if absent
    pixel_length: int  # value length, or -1 when encapsulated / absent
    elements: int
    found: dict[int, Element]  # the top-level elements that were asked for
    little_endian: bool = True
    # Where the header object's cut falls (gateway/header.py): the first top-level element of
    # group 7FE0 or later (Pixel Data and its float siblings), and the (start, end) of every
    # large top-level bulk element before it.
    header_end: int = -1
    bulk: tuple[tuple[int, int], ...] = ()
    pixel_fragments: int = 0  # items of encapsulated Pixel Data (Basic Offset Table included)


class _Walker:
    def __init__(
        self, data: bytes | memoryview, implicit: bool, little: bool, wanted: frozenset[int]
    ) -> None:
        self.data = data
        self.wanted = wanted
        self.found: dict[int, Element] = {}
        self.implicit = implicit
        e = "<" if little else ">"
        self.tag_len_implicit = struct.Struct(e + "HHI")
        self.tag_vr_short = struct.Struct(e + "HH2sH")
        self.u32 = struct.Struct(e + "I")
        self.elements = 0
        self.pixel_offset = -1
        self.pixel_length = -1
        self.header_end = -1
        self.bulk: list[tuple[int, int]] = []
        self.pixel_fragments = 0

    def header(self, pos: int, end: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, vr, length, value offset) of the element at ``pos``."""
        data = self.data
        if pos + 8 > end:
            raise _refuse(f"truncated element header at byte {pos}")
        group, elem, length = self.tag_len_implicit.unpack_from(data, pos)
        tag = (group << 16) | elem
        if implicit or group == 0xFFFE:
            return tag, None, length, pos + 8
        _, _, vr, short_len = self.tag_vr_short.unpack_from(data, pos)
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise _refuse(f"truncated element header at byte {pos}")
            return tag, vr, self.u32.unpack_from(data, pos + 8)[0], pos + 12
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise _refuse(f"invalid VR {vr!r} at byte {pos}")
        return tag, vr, short_len, pos + 8

    def dataset(self, pos: int, end: int, implicit: bool, depth: int, in_item: bool) -> int:
        """Walk elements from ``pos``; stop at ``end`` or an item delimiter when in an item."""
        if depth > _MAX_DEPTH:
            raise _refuse("sequences nested too deeply")
        last_tag = -1
        while pos < end:
            tag, vr, length, value = self.header(pos, end, implicit)
            if tag == _ITEM_END:
                if not in_item:
                    raise _refuse(f"item delimiter outside an item at byte {pos}")
                return value
            if tag <= last_tag:
                raise _refuse(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) out of order")
            last_tag = tag
            self.elements += 1
            start = pos
            if depth == 0:
                if tag == PIXEL_DATA:
                    self.pixel_offset = pos
                if tag >= PIXEL_GROUP_START and self.header_end < 0:
                    self.header_end = pos
            if length == _UNDEFINED:
                if tag == PIXEL_DATA or (vr is not None and vr not in (b"SQ", b"UN")):
                    pos = self.fragments(value, end, depth == 0 and tag == PIXEL_DATA)
                    if depth == 0 and self.header_end < 0:  # encapsulated bulk, not pixels
                        self.bulk.append((start, pos))
                else:
                    nested_implicit = implicit or vr == b"UN"
                    pos = self.sequence(value, end, nested_implicit, depth + 1, None)
                continue
            if value + length > end:
                raise _refuse(
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) claims {length} bytes,"
                    f" only {end - value} remain (truncated data set)"
                )
            if depth == 0:
                if tag == PIXEL_DATA:
                    self.pixel_length = length
                elif tag in self.wanted:
                    self.found[tag] = Element(vr, value, length)
                if length > BULK_MIN_BYTES and self.header_end < 0 and self._bulk(tag, vr):
                    self.bulk.append((start, value + length))
            if vr == b"SQ":
                self.sequence(value, value + length, implicit, depth + 1, value + length)
            elif vr is None and tag != PIXEL_DATA and self._implicit_sq(tag, value, length):
                # Implicit VR: a sequence by the dictionary, or a private/unknown element
                # that looks like one. A value that merely starts like an item but does not
                # walk as one is taken as opaque bytes, not refused.
                try:
                    self.sequence(value, value + length, implicit, depth + 1, value + length)
                except DatasetRefusedError:
                    if _dictionary_vr(tag) == "SQ":
                        raise
            pos = value + length
        if in_item:
            raise _refuse("item without its delimiter (truncated data set)")
        return pos

    @staticmethod
    def _bulk(tag: int, vr: bytes | None) -> bool:
        """A bulk VR; in implicit VR, one the dictionary gives or a tag it does not know."""
        if vr is not None:
            return vr in BULK_VRS
        known = _dictionary_vr(tag)  # "OB or OW" for overlays and the like
        return known is None or any(v in _BULK_DICT_VRS for v in known.split(" or "))

    def _implicit_sq(self, tag: int, value: int, length: int) -> bool:
        # Known non-sequence elements are never walked; others are if they start with an item.
        known = _dictionary_vr(tag)
        if known is not None and known != "SQ":
            return False
        if length < 8:
            return False
        return bool(self.tag_len_implicit.unpack_from(self.data, value)[:2] == (0xFFFE, 0xE000))

    def sequence(
        self, pos: int, end: int, implicit: bool, depth: int, defined_end: int | None
    ) -> int:
        """Walk items until the sequence delimiter (undefined length) or ``defined_end``."""
        while True:
            if defined_end is not None and pos == defined_end:
                return pos
            tag, _, length, value = self.header(pos, end, True)
            if tag == _SEQ_END and defined_end is None:
                return value
            if tag != _ITEM:
                raise _refuse(f"expected a sequence item at byte {pos}")
            if length == _UNDEFINED:
                pos = self.dataset(value, end, implicit, depth, in_item=True)
            else:
                if value + length > end:
                    raise _refuse(f"sequence item at byte {pos} overruns its sequence")
                self.dataset(value, value + length, implicit, depth, in_item=False)
                pos = value + length

    def fragments(self, pos: int, end: int, count: bool = False) -> int:
        """Walk encapsulated pixel data fragments until the sequence delimiter (counted in
        ``pixel_fragments`` when ``count``: the top-level Pixel Data's)."""
        items = 0
        while True:
            tag, _, length, value = self.header(pos, end, True)
            if tag == _SEQ_END:
                if count:
                    self.pixel_fragments = items
                return value
            if tag != _ITEM or length == _UNDEFINED or value + length > end:
                raise _refuse(f"malformed encapsulated pixel data at byte {pos}")
            items += 1
            pos = value + length


def scan(
    data: bytes | memoryview, transfer_syntax: str, wanted: frozenset[int] = frozenset()
) -> Scan:
    """Check that ``data`` is a structurally complete data set in ``transfer_syntax``.

    The top-level elements whose tags are in ``wanted`` are reported by position, so their
    values can be read without decoding the data set.
    """
    implicit, little = encoding_of(transfer_syntax)
    if not data:
        raise _refuse("empty data set")
    w = _Walker(data, implicit, little, wanted)
    w.dataset(0, len(data), implicit, 0, in_item=False)
    offset = w.pixel_offset if w.pixel_offset >= 0 else len(data)
    header_end = w.header_end if w.header_end >= 0 else len(data)
    return Scan(
        offset,
        w.pixel_length,
        w.elements,
        w.found,
        little,
        header_end,
        tuple(w.bulk),
        w.pixel_fragments,
    )


def meta_in_dataset() -> DatasetRefusedError:
    """The refusal for File Meta Information elements (group 0002) inside a data set."""
    return _refuse(
        "the data set holds File Meta Information elements (group 0002), which belong only"
        " in a Part-10 file's meta header: a reader of the stored file would take them for"
        " the file's own and read another SOP class, instance or transfer syntax; remove"
        " them at the sender"
    )


def refuse_file_meta(data: bytes | memoryview, transfer_syntax: str) -> None:
    """Refuse a data set (already ``scan``-ned) whose top level holds group 0002 elements.

    Why refuse rather than keep: the instance is stored as received and returned as a
    Part-10 file whose meta group ztbridge writes. Group 0002 elements at the start of the
    data set would then follow that meta group, and every Part-10 reader (pydicom, DCMTK)
    reads them as part of it: another SOP class, instance or transfer syntax than the one
    indexed, so the file could not be read back as what was acknowledged. Costs a look at
    the first element (past any group 0000 ones, which sort first); elements ascend.
    """
    implicit, little = encoding_of(transfer_syntax)
    if len(data) >= 2 and int.from_bytes(data[:2], "little" if little else "big") > 0x0002:
        return  # the common case: the first element is of group 0008 or so
    w = _Walker(data, implicit, little, frozenset())
    pos, end = 0, len(data)
    while pos < end:
        tag, _, length, value = w.header(pos, end, implicit)
        group = tag >> 16
        if group == 0x0002:
            raise meta_in_dataset()
        if group != 0x0000 or length == _UNDEFINED:
            return
        pos = value + length


def decode_header(data: bytes, transfer_syntax: str, end: int) -> Dataset:
    """Decode the elements before ``end`` (the Pixel Data offset) with pydicom."""
    implicit, little = encoding_of(transfer_syntax)
    try:
        return read_dataset(io.BytesIO(data[:end]), implicit, little)
    except Exception as e:  # pydicom raises many kinds; all mean the same here
        raise _refuse(f"data set does not decode: {e}") from e


def _meta_element(group_elem: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2sHI", *group_elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", *group_elem, vr, len(value)) + value


def file_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str | None
) -> bytes:
    """Preamble, 'DICM' and the file meta group (PS3.10 7.1), encoded directly.

    Hand-encoded because it is on the ingest hot path: pydicom's writer costs ~1 ms here.
    """
    body = b"".join(
        [
            _meta_element((0x0002, 0x0001), b"OB", b"\x00\x01"),
            _meta_element((0x0002, 0x0002), b"UI", sop_class.encode("ascii")),
            _meta_element((0x0002, 0x0003), b"UI", sop_instance.encode("ascii")),
            _meta_element((0x0002, 0x0010), b"UI", transfer_syntax.encode("ascii")),
            _meta_element((0x0002, 0x0012), b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _meta_element((0x0002, 0x0013), b"SH", IMPLEMENTATION_VERSION.encode("ascii")),
            *(
                [_meta_element((0x0002, 0x0016), b"AE", source_ae.encode("ascii", "replace"))]
                if source_ae
                else []
            ),
        ]
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\0" * 128 + b"DICM" + group_length + body


def part10(
    dataset: bytes, sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str | None
) -> bytes:
    """A Part-10 file built with pydicom: preamble, file meta group, the data set as received.

    The reference ``file_meta`` is tested against.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    buf.write(dataset)
    return buf.getvalue()


@dataclass(frozen=True)
class Part10:
    """A Part-10 file split into its meta information and its data set bytes."""

    transfer_syntax: str
    sop_class: str | None
    sop_instance: str | None
    dataset: bytes
    source_ae: str | None


def split_part10(content: bytes) -> Part10:
    """Separate the file meta group from the data set, refusing what is not Part-10."""
    if len(content) < 132 or content[128:132] != b"DICM":
        raise _refuse("not a DICOM Part-10 file (no 'DICM' marker after the 128-byte preamble)")
    fp = io.BytesIO(content)
    try:
        preamble = read_preamble(fp, False)
        if preamble is None:
            raise _refuse("not a DICOM Part-10 file (no 'DICM' marker after the preamble)")
        from pydicom.filereader import _read_file_meta_info

        meta = _read_file_meta_info(fp)
    except DatasetRefusedError:
        raise
    except Exception as e:
        # pydicom's advice to the programmer ("Use force=True ...") is no help to an admin.
        detail = str(e).split(" Use force=True")[0]
        raise _refuse(f"file meta information does not decode: {detail}") from e
    declared = meta.get("FileMetaInformationGroupLength")
    if isinstance(declared, int) and fp.tell() > 144 + declared:
        # pydicom reads group 0002 up to the first other group: elements past the declared
        # end of the meta group are the data set's own (see refuse_file_meta).
        raise _refuse(
            f"group 0002 elements run for {fp.tell() - 144} bytes past the preamble, but the"
            f" file meta group length says {declared}: the data set holds File Meta"
            " Information elements of its own (or the length is wrong); fix the file at its"
            " source"
        )
    ts = meta.get("TransferSyntaxUID")
    if not ts:
        raise _refuse("file meta information has no Transfer Syntax UID")
    return Part10(
        transfer_syntax=str(ts),
        sop_class=str(meta.get("MediaStorageSOPClassUID", "")) or None,
        sop_instance=str(meta.get("MediaStorageSOPInstanceUID", "")) or None,
        dataset=content[fp.tell() :],
        source_ae=str(meta.get("SourceApplicationEntityTitle", "")).strip() or None,
    )
