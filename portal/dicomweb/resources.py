"""What WADO-RS reads, for the routes in ``portal.dicomweb.wado`` (which only parse and answer).

Every function starts the same way: ``portal.authz.authorize`` (READ, or READ_METADATA for
metadata) on the study UID of the URL, then the study's newest instance versions
(``gateway.retrieve.study_refs``) narrowed to the series and instance of the URL; a study,
series or instance the caller may not see, or that does not exist, is the one 404 body of
an unknown study. Bytes come only from ``gateway.retrieve`` with the caller's own keys
(``caller.keys(gw)``), so every block, segment and hash is checked as it streams.

An instance that fails a check is never served: the failure is logged and audited
(``dicomweb.retrieve``, outcome ``error``) and the exception ends the response mid-stream,
so the server drops the connection before the closing multipart delimiter (a client sees
a broken transfer, never a short body that looks whole).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gateway.access import Action
from gateway.audit import AuditEvent
from gateway.errors import RetrieveError
from gateway.frames import (
    EXPLICIT_LE,
    FrameError,
    Frames,
    FrameSource,
    RangedFrames,
    frame_source,
    read_dataset,
)
from gateway.retrieve import (
    InstanceRef,
    KeyProvider,
    RangeUnavailableError,
    retrieve,
    retrieve_header,
    retrieve_range,
    study_refs,
)
from gateway.service import Gateway
from gateway.transcode import TranscodeError, transcode
from portal.authz import authorize
from portal.deps import Caller
from portal.problems import NOT_FOUND_DETAIL, ProblemError

log = logging.getLogger("ztbridge.dicomweb")

PIXEL_DATA = 0x7FE00010
RANGED_SYNTAXES = frozenset({EXPLICIT_LE, "1.2.840.10008.1.2"})


def not_found() -> ProblemError:
    """The one answer for anything the caller may not see or that does not exist."""
    return ProblemError("not-found", NOT_FOUND_DETAIL)


def not_acceptable(detail: str) -> ProblemError:
    """406: nothing the client accepts can be given."""
    return ProblemError("not-acceptable", detail)


@dataclass(frozen=True)
class Target:
    """A WADO-RS resource: a study, a series of it, or an instance of that series."""

    study: str
    series: str | None = None
    instance: str | None = None


def select(gw: Gateway, caller: Caller, action: Action, target: Target) -> list[InstanceRef]:
    """Decide, then the instances of ``target`` (newest versions); 404 if none."""
    authorize(gw, caller, action, target.study)
    refs = study_refs(gw.db, target.study)
    if target.series is not None:
        refs = [r for r in refs if r.series_uid == target.series]
    if target.instance is not None:
        refs = [r for r in refs if r.sop_instance_uid == target.instance]
    if not refs:
        raise not_found()
    return refs


def audit_failure(gw: Gateway, caller: Caller, ref: InstanceRef, e: RetrieveError) -> None:
    """An instance that failed a check while being served: logged and audited."""
    log.error("WADO-RS stopped at %s: %s", ref.sop_instance_uid, e)
    gw.audit.record(
        AuditEvent(
            "dicomweb.retrieve",
            caller.username,
            ref.sop_instance_uid,
            "error",
            {"kind": e.kind, "why": e.what},
        )
    )


def guarded(
    gw: Gateway, caller: Caller, ref: InstanceRef, chunks: Callable[[], Iterator[bytes]]
) -> Iterator[bytes]:
    """``chunks()`` with a RetrieveError audited before it ends the stream."""
    try:
        yield from chunks()
    except RetrieveError as e:
        audit_failure(gw, caller, ref, e)
        raise


def check_size(gw: Gateway, ref: InstanceRef) -> None:
    """406 for an instance too large to be decrypted whole (``dicomweb.max_decode_mb``)."""
    limit = gw.settings.dicomweb.max_decode_mb << 20
    if ref.size is not None and ref.size > limit:
        raise not_acceptable(
            f"the instance is larger than dicomweb.max_decode_mb ({limit >> 20} MiB);"
            " retrieve it as stored (transfer-syntax=*)"
        )


def whole(gw: Gateway, caller: Caller, ref: InstanceRef, keys: KeyProvider) -> bytes:
    """An instance decrypted and verified whole (bounded by ``check_size``); audited on
    failure."""
    check_size(gw, ref)
    try:
        return retrieve(ref, gw.store, keys).read()
    except RetrieveError as e:
        audit_failure(gw, caller, ref, e)
        raise


def instance_chunks(
    gw: Gateway, caller: Caller, ref: InstanceRef, keys: KeyProvider, syntax: str | None
) -> Iterator[bytes]:
    """An instance's bytes: as stored (streamed), or transcoded to ``syntax``."""
    if syntax is None or syntax == ref.transfer_syntax:
        return guarded(gw, caller, ref, lambda: iter(retrieve(ref, gw.store, keys)))

    def transcoded() -> Iterator[bytes]:
        data = whole(gw, caller, ref, keys)
        try:
            yield transcode(data, syntax)
        except TranscodeError as e:
            log.error("WADO-RS transcode of %s stopped: %s", ref.sop_instance_uid, e)
            raise

    return transcoded()


#: Instances up to this size are read whole ahead of the one being sent, on a small pool
#: (hashing and AES-GCM release the GIL, so two reads and the connection's TLS run at once);
#: larger ones stream one segment at a time, in order. Memory: at most PREFETCH_DEPTH of them.
PREFETCH_BYTES = 8 << 20
PREFETCH_DEPTH = 4
PREFETCH_THREADS = 2


def instance_bodies(
    gw: Gateway, caller: Caller, refs: list[InstanceRef], keys: KeyProvider, syntax: str | None
) -> Iterator[tuple[InstanceRef, Iterator[bytes]]]:
    """Each instance's bytes, in order (see ``PREFETCH_BYTES``). A failed check is audited
    and raised when its instance's turn comes, after every earlier one was given whole."""
    if syntax is not None:
        for ref in refs:
            yield ref, instance_chunks(gw, caller, ref, keys, syntax)
        return
    pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="wado-read")
    pending: deque[tuple[InstanceRef, Future[bytes] | None]] = deque()
    upcoming = iter(refs)

    def read_whole(ref: InstanceRef) -> bytes:
        return retrieve(ref, gw.store, keys).read()

    def fill() -> None:
        while len(pending) < PREFETCH_DEPTH:
            ref = next(upcoming, None)
            if ref is None:
                return
            if ref.size is None or ref.size > PREFETCH_BYTES:
                pending.append((ref, None))
                return  # streamed in its turn; nothing is read past it meanwhile
            pending.append((ref, pool.submit(read_whole, ref)))

    try:
        fill()
        while pending:
            ref, future = pending.popleft()
            if future is None:
                yield ref, instance_chunks(gw, caller, ref, keys, None)
            else:
                try:
                    data = future.result()
                except RetrieveError as e:
                    audit_failure(gw, caller, ref, e)
                    raise
                yield ref, iter((data,))
            fill()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# --- metadata ---------------------------------------------------------------------------


def _paths(ds: Any, prefix: str = "") -> dict[int, str]:
    """id(element) -> its bulk data path (``tag`` or ``tag/item/tag``...), for every element."""
    found: dict[int, str] = {}
    for elem in ds:
        path = f"{prefix}{elem.tag:08X}"
        found[id(elem)] = path
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                found.update(_paths(item, f"{path}/{i}/"))
    return found


def _pixel_vr(ds: Any, syntax: str) -> str:
    from gateway.frames import NATIVE

    if syntax not in NATIVE:
        return "OB"
    return "OW" if int(ds.get("BitsAllocated", 16) or 16) > 8 else "OB"


def metadata_json(header: bytes, base: str, threshold: int) -> dict[str, Any]:
    """One instance's DICOM JSON (PS3.18 F.2) from its header object: group 0002 left out,
    binary values over ``threshold`` bytes and the Pixel Data (never in a header) as
    BulkDataURIs ``base`` + ``bulkdata/<tag path>`` (``base`` is relative to the request)."""
    ds = read_dataset(header)
    paths = _paths(ds)

    def bulk(elem: Any) -> str:
        return f"{base}bulkdata/{paths.get(id(elem), f'{elem.tag:08X}')}"

    doc: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=threshold, bulk_data_element_handler=bulk
    )
    if "Rows" in ds and "Columns" in ds:
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        doc["7FE00010"] = {"vr": _pixel_vr(ds, syntax), "BulkDataURI": f"{base}bulkdata/7FE00010"}
    return doc


def relative_base(target: Target, ref: InstanceRef) -> str:
    """The instance's resource, relative to the URL of ``target``'s metadata request
    (RFC 3986 5.2): what a client resolving against the request URL, and OHIF resolving
    against the series (its default), both turn into the right absolute URL."""
    if target.instance is not None:
        return ""
    if target.series is not None:
        return f"instances/{ref.sop_instance_uid}/"
    return f"series/{ref.series_uid}/instances/{ref.sop_instance_uid}/"


def metadata(gw: Gateway, caller: Caller, target: Target) -> Iterator[bytes]:
    """The JSON array of the target's instances' metadata, one instance at a time, from the
    sealed header objects only (no pixel is decrypted)."""
    refs = select(gw, caller, Action.READ_METADATA, target)
    keys = caller.keys(gw)
    threshold = gw.settings.dicomweb.bulk_data_threshold

    def body() -> Iterator[bytes]:
        yield b"["
        for i, ref in enumerate(refs):
            try:
                header = retrieve_header(ref, gw.store, keys)
            except RetrieveError as e:
                audit_failure(gw, caller, ref, e)
                raise
            doc = metadata_json(header, relative_base(target, ref), threshold)
            yield (b"," if i else b"") + json.dumps(doc, separators=(",", ":")).encode()
        yield b"]"

    return body()


# --- pixels -----------------------------------------------------------------------------


def instance_dataset(gw: Gateway, caller: Caller, target: Target) -> tuple[InstanceRef, Any]:
    """One instance, decided, decrypted whole and parsed (frames, bulk data, rendering)."""
    refs = select(gw, caller, Action.READ, target)
    ref = refs[len(refs) // 2] if target.instance is None else refs[0]
    return ref, read_dataset(whole(gw, caller, ref, caller.keys(gw)))


def ranged_frames(gw: Gateway, caller: Caller, target: Target) -> Frames:
    """The instance's frames, read by range when its pixels are native little-endian and
    located from its header (only the segments a frame spans are decrypted), else out of
    the instance read whole (``instance_dataset``)."""
    refs = select(gw, caller, Action.READ, target)
    ref, keys = refs[0], caller.keys(gw)
    if ref.transfer_syntax in RANGED_SYNTAXES:

        def read(a: int, b: int) -> bytes:
            try:
                return retrieve_range(ref, gw.store, keys, a, b)
            except RangeUnavailableError:
                raise
            except RetrieveError as e:
                audit_failure(gw, caller, ref, e)
                raise

        try:
            header = retrieve_header(ref, gw.store, keys)
        except RetrieveError as e:
            audit_failure(gw, caller, ref, e)
            raise
        try:
            found = RangedFrames.locate(header, read)
        except RangeUnavailableError:
            found = None
        if found is not None:
            return found
    check_size(gw, ref)
    return frames_of(read_dataset(whole(gw, caller, ref, keys)))


def frames_of(ds: Any) -> FrameSource:
    """The instance's checked frame source; 404 for no pixels, 406 for bad geometry."""
    try:
        return frame_source(ds)
    except FrameError as e:
        if e.missing:
            raise not_found() from e
        raise not_acceptable(e.reason) from e


def element_value(ds: Any, path: str) -> Any:
    """The element at a bulk data path (``7FE00010``, ``00540016/0/00181072``); 404 if none."""
    parts = path.strip("/").split("/")
    node = ds
    try:
        for i, part in enumerate(parts):
            if i % 2 == 0:
                elem = node[int(part, 16)]
                if i == len(parts) - 1:
                    return elem
                node = elem
            else:
                node = node.value[int(part)]
    except (KeyError, ValueError, IndexError, TypeError, AttributeError):
        pass
    raise not_found()
