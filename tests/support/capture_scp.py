"""A pynetdicom SCP that records exactly what a sender put on the wire, for comparisons.

DCMTK's storescu re-encodes a file's data set when it sends it, so "byte-identical to what
was sent" must be checked against the bytes it actually transmits, not the file it read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt

from dicom_scp.contexts import storage_contexts
from tests.support.gateway_proc import free_port


@dataclass
class Captured:
    """SOP Instance UID -> (transfer syntax, data set bytes) as received."""

    port: int
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)


@contextmanager
def capture_scp(ae_title: str = "ZTBRIDGE") -> Iterator[Captured]:
    """Run a recording SCP on a free loopback port for the duration of the block."""
    captured = Captured(free_port())

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        captured.received[uid] = (
            str(event.context.transfer_syntax),
            event.request.DataSet.getvalue(),
        )
        return 0x0000

    ae = AE(ae_title=ae_title)
    ae.supported_contexts = storage_contexts()
    server = ae.start_server(
        ("127.0.0.1", captured.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield captured
    finally:
        server.shutdown()
