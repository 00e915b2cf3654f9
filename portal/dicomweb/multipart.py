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


#: What one write to the connection gathers: each chunk handed to Starlette costs a hop to
#: the thread pool, an ASGI message and a TLS record, so 64 KiB segments one by one run at
#: half the speed of the decryption behind them.
WRITE_BYTES = 1 << 20


def coalesce(
    chunks: Iterable[bytes], size: int = WRITE_BYTES, first: int = 1 << 16
) -> Iterator[bytes]:
    """``chunks`` regrouped into writes of about ``size`` bytes (the first already at
    ``first`` bytes, so the first byte leaves early; the last may be shorter); memory is
    bounded by one write. An exception from ``chunks`` passes through at once, with what was
    gathered before it dropped (never sent as if it were complete)."""
    buf = bytearray()
    limit = first
    for chunk in chunks:
        buf += chunk
        if len(buf) >= limit:
            yield bytes(buf)
            buf.clear()
            limit = size
    if buf:
        yield bytes(buf)


def stream_parts(
    boundary: str, parts: Iterable[tuple[str, str | None, Iterable[bytes]]]
) -> Iterator[bytes]:
    """The body of ``(content type, location, chunks)`` parts; the closing delimiter last."""
    for media_type, location, chunks in parts:
        yield part_head(boundary, media_type, location)
        yield from chunks
    yield closing(boundary)
