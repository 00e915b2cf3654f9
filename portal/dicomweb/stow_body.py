"""The STOW-RS request body: ``multipart/related; type="application/dicom"``, parsed as it
streams.

python-multipart's ``MultipartParser`` does the framing (it is the parser Starlette's forms
use, and it does not care about the subtype, only the boundary); this module adds what
STOW-RS needs around it: the request's media type and the parts' (415 for anything but
application/dicom), a limit per part (``ingest.max_instance_mb``: 413, since ingest would
refuse a larger instance anyway), each part spooled as it arrives (``gateway.spool``:
encrypted, one file per request), and a body that ends before its closing boundary or holds no
part refused (400). The whole body is in before anything is stored.
"""

from __future__ import annotations

from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.spool import Spool, SpoolFile
from portal.problems import ProblemError

DICOM = b"application/dicom"
RELATED = b"multipart/related"
STOW_MEDIA_TYPE = 'multipart/related; type="application/dicom"'


def boundary_of(content_type: str) -> bytes:
    """The boundary of a STOW-RS body, or the problem (415, 400) of its Content-Type."""
    media, params = parse_options_header(content_type)
    media = media.lower()
    if media != RELATED:
        raise ProblemError(
            "unsupported-media-type",
            f"STOW-RS takes {STOW_MEDIA_TYPE}, not {media.decode('latin-1') or 'no body type'}",
        )
    kind = params.get(b"type", DICOM).lower()
    if kind != DICOM:
        raise ProblemError(
            "unsupported-media-type",
            f"only application/dicom parts are supported, not {kind.decode('latin-1')}"
            " (PS3.18 10.5: the metadata and bulk data form is not)",
        )
    boundary = params.get(b"boundary", b"")
    if not boundary:
        raise ProblemError("invalid-input", "the multipart/related Content-Type has no boundary")
    return boundary


class RelatedBody:
    """A multipart/related body fed chunk by chunk; each part ends up in a ``Spool``."""

    def __init__(self, boundary: bytes, folder: Path, max_part_bytes: int) -> None:
        self._spool = SpoolFile(folder)
        self._max_part = max_part_bytes
        self.parts: list[Spool] = []
        self._current: Spool | None = None
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._ended = False
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._part_begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                    "on_part_data": self._part_data,
                    "on_part_end": self._part_end,
                    "on_end": self._end,
                },
            )
        except ValueError as e:  # FormParserError: a boundary over 70 characters
            raise ProblemError("invalid-input", f"bad multipart boundary: {e}") from e

    def _part_begin(self) -> None:
        self._headers = {}
        self._current = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        n = len(self.parts) + 1
        media, _ = parse_options_header(self._headers.get(b"content-type", DICOM))
        if media.lower() != DICOM:
            raise ProblemError(
                "unsupported-media-type",
                f"part {n} is {media.decode('latin-1') or 'untyped'}: STOW-RS takes"
                " application/dicom parts only",
            )
        self._current = self._spool.part()
        self.parts.append(self._current)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        assert part is not None
        part.write(memoryview(data)[start:end])
        if part.size > self._max_part:
            mb = self._max_part / (1 << 20)
            raise ProblemError(
                "too-large",
                f"part {len(self.parts)} exceeds the instance limit of {mb:g} MiB"
                " (ingest.max_instance_mb)",
            )

    def _part_end(self) -> None:
        if self._current is not None:
            self._current.finish()

    def _end(self) -> None:
        self._ended = True

    def feed(self, chunk: bytes) -> None:
        """Parse the next piece of the body; a malformed one is 400."""
        if not chunk:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError as e:
            raise ProblemError(
                "invalid-input",
                "the body is not multipart/related as its Content-Type says"
                f" (no preamble, CRLF line ends): {e}",
            ) from e

    def finish(self) -> list[Spool]:
        """The parts, once the body ended with its closing boundary (else 400)."""
        if not self._ended:
            raise ProblemError(
                "invalid-input", "the multipart body ends before its closing boundary"
            )
        if not self.parts:
            raise ProblemError("invalid-input", "the multipart body holds no part")
        return self.parts

    def close(self) -> None:
        """Forget every part (spooled files go, keys with them)."""
        self._spool.close()
        self.parts = []
