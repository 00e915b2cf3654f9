"""``multipart/related`` bodies (RFC 2387, PS3.18 8.6.1.2), written as they stream.

Each part is its headers then its bytes as they come from the read funnel; the closing
delimiter is written only after the last part is whole. So a body that stops early (an
instance failed a check, the iterator raised) has no closing delimiter and, because the
server then drops the connection, no client can take it for a complete answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator


def new_boundary() -> str:
    """A random boundary: 32 hex digits can never occur by chance in a part."""
    return secrets.token_hex(16)


def content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    """The response's Content-Type header."""
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def part_head(boundary: str, content_type: str, location: str | None = None) -> bytes:
    """A part's delimiter and headers (before its first byte)."""
    head = f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
    if location:
        head += f"Content-Location: {location}\r\n"
    return (head + "\r\n").encode("ascii")


def closing(boundary: str) -> bytes:
    """The closing delimiter."""
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def stream_parts(
    boundary: str, parts: Iterable[tuple[str, str | None, Iterable[bytes]]]
) -> Iterator[bytes]:
    """The body of ``(content type, location, chunks)`` parts; the closing delimiter last."""
    for media_type, location, chunks in parts:
        yield part_head(boundary, media_type, location)
        yield from chunks
    yield closing(boundary)
