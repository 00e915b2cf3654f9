"""Content negotiation for WADO-RS (PS3.18 8.7): the Accept header, parsed and matched.

Why our own parser: the media ranges WADO-RS clients send carry parameters that decide the
answer (``type`` and ``transfer-syntax`` of a ``multipart/related`` range, ``q``), and the
standard's rules (8.7.3: the highest q wins; ``*`` for a transfer syntax means "as stored";
an absent one means the resource's default) are not what a web framework's negotiation
does. ``email.message`` would parse the parameters, but not a comma-separated list with
quoted commas; this module does exactly that, no more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r'\s*([^\s;,="]+)\s*')
_PARAM = re.compile(r'\s*;\s*([^\s;,="]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;,"]*)\s*')


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header: ``type/subtype`` and its parameters."""

    media_type: str  # lower case, e.g. "multipart/related", "*/*"
    params: dict[str, str] = field(default_factory=dict)  # names lower case, values unquoted
    q: float = 1.0

    @property
    def part_type(self) -> str | None:
        """The ``type`` parameter of a multipart range (lower case), else None."""
        value = self.params.get("type")
        return value.lower() if value else None

    @property
    def transfer_syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter ("*", a UID), or None when absent."""
        return self.params.get("transfer-syntax")

    def covers(self, media_type: str) -> bool:
        """Whether this range names ``media_type`` (``*/*`` and ``type/*`` included)."""
        if self.media_type == "*/*" or self.media_type == media_type:
            return True
        major, _, minor = self.media_type.partition("/")
        return minor == "*" and media_type.partition("/")[0] == major


class AcceptError(ValueError):
    """The Accept header does not parse (answered as 400)."""


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, highest q first (stable otherwise); an absent
    or empty header is ``*/*``. q=0 ranges are dropped (they mean "not this")."""
    if header is None or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    pos, end = 0, len(header)
    while pos < end:
        if header[pos] in ", \t":
            pos += 1
            continue
        m = _TOKEN.match(header, pos)
        if m is None or "/" not in m.group(1):
            raise AcceptError(f"malformed media range at {header[pos : pos + 40]!r}")
        media_type = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        q = 1.0
        while True:
            while pos < end and header[pos].isspace():
                pos += 1
            if pos >= end or header[pos] != ";":
                break
            p = _PARAM.match(header, pos)
            if p is None:
                raise AcceptError(f"malformed parameter at {header[pos : pos + 40]!r}")
            name, value = p.group(1).lower(), p.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    raise AcceptError(f"q value {value!r} is not a number") from None
                if not 0.0 <= q <= 1.0:
                    raise AcceptError(f"q value {value!r} is outside 0..1")
            else:
                params[name] = value.strip()
            pos = p.end()
        if pos < end and header[pos] != ",":
            raise AcceptError(f"malformed media range at {header[pos : pos + 40]!r}")
        if q > 0:
            ranges.append(MediaRange(media_type, params, q))
    ranges.sort(key=lambda r: -r.q)
    return ranges  # empty: every range had q=0, nothing is acceptable


@dataclass(frozen=True)
class Offer:
    """What a resource can answer: a media type (and the part type of a multipart)."""

    media_type: str
    part_type: str | None = None


@dataclass(frozen=True)
class Choice:
    """The negotiated answer: the offer, and the transfer syntax asked for ("*": as stored;
    None: the resource's default)."""

    offer: Offer
    transfer_syntax: str | None


def negotiate(ranges: list[MediaRange], offers: list[Offer]) -> Choice | None:
    """The first offer (in q order of the ranges, then the offers' order) some range
    accepts; None: nothing acceptable (406).

    A ``multipart/related`` range without ``type`` accepts the first multipart offer; a
    range for a part type directly (``application/dicom``) accepts the multipart offer of
    that part type too, as PS3.18 8.7.3.5 lets a server do for multi-part resources.
    """
    for r in ranges:
        for offer in offers:
            if offer.part_type is None:
                if r.covers(offer.media_type):
                    return Choice(offer, r.transfer_syntax)
                continue
            if r.media_type in ("multipart/related", "multipart/*"):
                wanted = r.part_type
                if wanted is None or wanted == offer.part_type or wanted == "*/*":
                    return Choice(offer, r.transfer_syntax)
                if MediaRange(wanted).covers(offer.part_type):
                    return Choice(offer, r.transfer_syntax)
            elif r.media_type == "*/*" or r.media_type == offer.part_type:
                return Choice(offer, r.transfer_syntax)
    return None
