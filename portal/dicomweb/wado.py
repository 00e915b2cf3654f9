"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered and thumbnails.

Thin routes: parse the URL, the Accept header (``portal.dicomweb.accept``) and the query,
then ``portal.dicomweb.resources`` decides, reads and streams. The routes are plain ``def``
(FastAPI runs them on its thread pool) and answer with a ``StreamingResponse`` over a
synchronous iterator (Starlette iterates it on the thread pool too), so decryption never
runs on the event loop and the first part leaves before the last instance is decrypted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response, StreamingResponse

from gateway.access import Action
from gateway.errors import RetrieveError
from gateway.frames import EXPLICIT_LE, FrameError, Frames
from gateway.rendering import RenderParamError, parse_params, placeholder, render
from gateway.retrieve import retrieve_header
from gateway.service import Gateway
from gateway.transcode import can_transcode
from portal import library
from portal.deps import Caller, GatewayDep
from portal.dicomweb import multipart
from portal.dicomweb.accept import (
    AcceptError,
    MediaRange,
    Offer,
    negotiate,
    parse_accept,
)
from portal.dicomweb.deps import DicomwebCallerDep
from portal.dicomweb.readahead import readahead
from portal.dicomweb.resources import (
    PIXEL_DATA,
    Target,
    audit_failure,
    element_value,
    instance_bodies,
    instance_dataset,
    metadata,
    not_acceptable,
    not_found,
    ranged_frames,
    select,
)
from portal.problems import ProblemError

log = logging.getLogger("ztbridge.dicomweb")

router = APIRouter()

AcceptDep = Annotated[str | None, Header()]
DICOM = "application/dicom"
OCTETS = "application/octet-stream"
DICOM_JSON = "application/dicom+json"
STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


def _ranges(accept: str | None) -> list[MediaRange]:
    try:
        return parse_accept(accept)
    except AcceptError as e:
        raise ProblemError("invalid-input", f"Accept: {e}") from e


# --- instances --------------------------------------------------------------------------


def _retrieve(gw: Gateway, caller: Caller, target: Target, accept: str | None) -> Response:
    offers = [Offer("multipart/related", DICOM)]
    if target.instance is None:
        offers.append(Offer("application/zip"))
    choice = negotiate(_ranges(accept), offers)
    if choice is None:
        raise not_acceptable(
            'retrieve answers multipart/related; type="application/dicom"'
            + ("" if target.instance else " or application/zip")
        )
    if choice.offer.media_type == "application/zip":
        chunks = library.archive(gw, caller, target.study, target.series)
        name = (target.series or target.study) + ".zip"
        return StreamingResponse(
            chunks,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    refs = select(gw, caller, Action.READ, target)
    syntax = None if choice.transfer_syntax in (None, "*") else choice.transfer_syntax
    if syntax is not None:
        for ref in refs:
            if not can_transcode(ref.transfer_syntax or "", syntax):
                raise not_acceptable(
                    f"an instance stored as {ref.transfer_syntax} cannot be given as {syntax};"
                    " ask for transfer-syntax=* (as stored)"
                )
    keys = caller.keys(gw)
    boundary = multipart.new_boundary()

    def parts() -> Iterator[tuple[str, str | None, Iterator[bytes]]]:
        for ref, chunks in instance_bodies(gw, caller, refs, keys, syntax):
            yield f"{DICOM}; transfer-syntax={syntax or ref.transfer_syntax}", None, chunks

    return StreamingResponse(
        readahead(multipart.coalesce(multipart.stream_parts(boundary, parts()))),
        media_type=multipart.content_type(DICOM, boundary),
    )


@router.get(STUDY, summary="WADO-RS: the study's instances")
def retrieve_study(
    study: str, caller: DicomwebCallerDep, gw: GatewayDep, accept: AcceptDep = None
) -> Response:
    return _retrieve(gw, caller, Target(study), accept)


@router.get(SERIES, summary="WADO-RS: the series' instances")
def retrieve_series(
    study: str, series: str, caller: DicomwebCallerDep, gw: GatewayDep, accept: AcceptDep = None
) -> Response:
    return _retrieve(gw, caller, Target(study, series), accept)


@router.get(INSTANCE, summary="WADO-RS: one instance")
def retrieve_instance(
    study: str,
    series: str,
    instance: str,
    caller: DicomwebCallerDep,
    gw: GatewayDep,
    accept: AcceptDep = None,
) -> Response:
    return _retrieve(gw, caller, Target(study, series, instance), accept)


# --- metadata ---------------------------------------------------------------------------


def _metadata(gw: Gateway, caller: Caller, target: Target, accept: str | None) -> Response:
    choice = negotiate(_ranges(accept), [Offer(DICOM_JSON), Offer("application/json")])
    if choice is None:
        raise not_acceptable("metadata is application/dicom+json")
    body = multipart.coalesce(metadata(gw, caller, target), 1 << 18, 1 << 12)
    return StreamingResponse(body, media_type=DICOM_JSON)


@router.get(STUDY + "/metadata", summary="WADO-RS: the study's metadata (DICOM JSON)")
def study_metadata(
    study: str, caller: DicomwebCallerDep, gw: GatewayDep, accept: AcceptDep = None
) -> Response:
    return _metadata(gw, caller, Target(study), accept)


@router.get(SERIES + "/metadata", summary="WADO-RS: the series' metadata")
def series_metadata(
    study: str, series: str, caller: DicomwebCallerDep, gw: GatewayDep, accept: AcceptDep = None
) -> Response:
    return _metadata(gw, caller, Target(study, series), accept)


@router.get(INSTANCE + "/metadata", summary="WADO-RS: one instance's metadata")
def instance_metadata(
    study: str,
    series: str,
    instance: str,
    caller: DicomwebCallerDep,
    gw: GatewayDep,
    accept: AcceptDep = None,
) -> Response:
    return _metadata(gw, caller, Target(study, series, instance), accept)


# --- frames and bulk data ---------------------------------------------------------------


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(p) for p in text.replace("%2C", ",").split(",") if p.strip()]
    except ValueError:
        raise ProblemError(
            "invalid-input", "frames are a comma-separated list of numbers"
        ) from None
    if not numbers or any(n < 1 for n in numbers):
        raise ProblemError("invalid-input", "frame numbers start at 1")
    return numbers


def _frame_plan(source: Frames, ranges: list[MediaRange]) -> tuple[str, str, bool] | None:
    """(part media type, part transfer syntax, decode to native LE) for the first acceptable
    range, else None. Absent transfer-syntax on octet-stream: Explicit VR LE (PS3.18 8.7.3.5);
    ``*``: as stored, compressed frames in their own media type."""
    stored = source.transfer_syntax
    for r in ranges:
        wanted = r.part_type if r.media_type == "multipart/related" else r.media_type
        wanted = wanted or OCTETS
        ts = r.transfer_syntax
        if wanted in (OCTETS, "*/*", "application/*"):
            if ts == "*" or (ts is None and wanted != OCTETS):
                if source.native:
                    return OCTETS, stored if stored != "1.2.840.10008.1.2" else EXPLICIT_LE, False
                return source.stored_media_type(), stored, False
            if ts in (None, EXPLICIT_LE):
                if source.native or can_transcode(stored, EXPLICIT_LE):
                    return OCTETS, EXPLICIT_LE, True
                continue
            if ts == stored:
                return OCTETS, stored, False
            continue
        if not source.native:
            try:
                own = source.stored_media_type()
            except FrameError:
                continue
            if MediaRange(wanted).covers(own) and ts in (None, "*", stored):
                return own, stored, False
    return None


def _frames_response(
    gw: Gateway, caller: Caller, source: Frames, numbers: list[int], accept: str | None
) -> Response:
    plan = _frame_plan(source, _ranges(accept))
    if plan is None:
        raise not_acceptable(
            f"frames of this instance ({source.transfer_syntax}) are multipart/related;"
            f' type="{OCTETS}" (native, or transfer-syntax=* as stored)'
        )
    media, ts, decode = plan
    try:
        frames = [source.native_little_endian(n) if decode else source.stored(n) for n in numbers]
    except FrameError as e:
        if e.missing:
            raise not_found() from e
        raise not_acceptable(e.reason) from e
    boundary = multipart.new_boundary()
    body = b"".join(
        multipart.part_head(boundary, f"{media}; transfer-syntax={ts}") + f for f in frames
    ) + multipart.closing(boundary)
    return Response(body, media_type=multipart.content_type(media, boundary))


@router.get(INSTANCE + "/frames/{frames}", summary="WADO-RS: frames of an instance")
def retrieve_frames(
    study: str,
    series: str,
    instance: str,
    frames: str,
    caller: DicomwebCallerDep,
    gw: GatewayDep,
    accept: AcceptDep = None,
) -> Response:
    numbers = _frame_numbers(frames)
    source = ranged_frames(gw, caller, Target(study, series, instance))
    return _frames_response(gw, caller, source, numbers, accept)


def _bulk_part(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise not_found()


@router.get(INSTANCE + "/bulkdata/{path:path}", summary="WADO-RS: a bulk data value")
def retrieve_bulkdata(
    study: str,
    series: str,
    instance: str,
    path: str,
    caller: DicomwebCallerDep,
    gw: GatewayDep,
    accept: AcceptDep = None,
) -> Response:
    target = Target(study, series, instance)
    if path.strip("/").upper() == f"{PIXEL_DATA:08X}":
        source = ranged_frames(gw, caller, target)
        return _frames_response(gw, caller, source, list(range(1, source.frames + 1)), accept)
    ranges = _ranges(accept)
    if negotiate(ranges, [Offer("multipart/related", OCTETS), Offer(OCTETS)]) is None:
        raise not_acceptable(f'bulk data is multipart/related; type="{OCTETS}"')
    refs = select(gw, caller, Action.READ, target)
    try:
        header = retrieve_header(refs[0], gw.store, caller.keys(gw))
    except RetrieveError as e:
        audit_failure(gw, caller, refs[0], e)
        raise
    from gateway.frames import read_dataset

    try:
        value = element_value(read_dataset(header), path).value
    except ProblemError:  # cut from the header object (over 64 KiB): read the instance
        _, ds = instance_dataset(gw, caller, target)
        value = element_value(ds, path).value
    boundary = multipart.new_boundary()
    body = multipart.part_head(boundary, OCTETS) + _bulk_part(value) + multipart.closing(boundary)
    return Response(body, media_type=multipart.content_type(OCTETS, boundary))


# --- rendered and thumbnails ------------------------------------------------------------

IMAGE_OFFERS = [Offer("image/jpeg"), Offer("image/png")]


def _image(
    gw: Gateway,
    caller: Caller,
    target: Target,
    frame: int | None,
    accept: str | None,
    query: dict[str, str | None],
    thumbnail: bool,
) -> Response:
    choice = negotiate(_ranges(accept), IMAGE_OFFERS)
    if choice is None:
        raise not_acceptable("rendered images are image/jpeg or image/png")
    media = choice.offer.media_type
    try:
        params = parse_params(query.get("window"), query.get("viewport"), query.get("quality"))
    except RenderParamError as e:
        raise ProblemError("invalid-input", str(e)) from e
    if thumbnail and params.viewport is None:
        params = parse_params(query.get("window"), "128,128", query.get("quality"))
    try:
        _, ds = instance_dataset(gw, caller, target)
        if frame is None:
            frame = 1
        image = render(ds, frame, media, params)
    except ProblemError as e:
        if not thumbnail or e.slug != "not-acceptable":
            raise
        image = placeholder(media)
    except FrameError as e:
        if e.missing and frame is not None and frame > 1:
            raise not_found() from e
        if not thumbnail:
            raise not_acceptable(f"this image cannot be rendered: {e.reason}") from e
        image = placeholder(media)  # a thumbnail stands in a list: show that there is one
    except RenderParamError as e:
        raise ProblemError("invalid-input", str(e)) from e
    return Response(image, media_type=media)


WindowQ = Annotated[str | None, Query()]


def _q(window: str | None, viewport: str | None, quality: str | None) -> dict[str, str | None]:
    return {"window": window, "viewport": viewport, "quality": quality}


def _make(thumb: bool, kind: str) -> None:
    @router.get(STUDY + f"/{kind}", summary=f"WADO-RS: the study {kind}")
    def study_image(
        study: str,
        caller: DicomwebCallerDep,
        gw: GatewayDep,
        accept: AcceptDep = None,
        window: WindowQ = None,
        viewport: WindowQ = None,
        quality: WindowQ = None,
    ) -> Response:
        q = _q(window, viewport, quality)
        return _image(gw, caller, Target(study), None, accept, q, thumb)

    @router.get(SERIES + f"/{kind}", summary=f"WADO-RS: the series {kind}")
    def series_image(
        study: str,
        series: str,
        caller: DicomwebCallerDep,
        gw: GatewayDep,
        accept: AcceptDep = None,
        window: WindowQ = None,
        viewport: WindowQ = None,
        quality: WindowQ = None,
    ) -> Response:
        q = _q(window, viewport, quality)
        return _image(gw, caller, Target(study, series), None, accept, q, thumb)

    @router.get(INSTANCE + f"/{kind}", summary=f"WADO-RS: the instance {kind}")
    def instance_image(
        study: str,
        series: str,
        instance: str,
        caller: DicomwebCallerDep,
        gw: GatewayDep,
        accept: AcceptDep = None,
        window: WindowQ = None,
        viewport: WindowQ = None,
        quality: WindowQ = None,
    ) -> Response:
        q = _q(window, viewport, quality)
        return _image(gw, caller, Target(study, series, instance), None, accept, q, thumb)

    @router.get(INSTANCE + "/frames/{frames}" + f"/{kind}", summary=f"WADO-RS: frame {kind}")
    def frame_image(
        study: str,
        series: str,
        instance: str,
        frames: str,
        caller: DicomwebCallerDep,
        gw: GatewayDep,
        accept: AcceptDep = None,
        window: WindowQ = None,
        viewport: WindowQ = None,
        quality: WindowQ = None,
    ) -> Response:
        q = _q(window, viewport, quality)
        number = _frame_numbers(frames)[0]
        target = Target(study, series, instance)
        return _image(gw, caller, target, number, accept, q, thumb)


for _kind in ("rendered", "thumbnail"):
    _make(_kind == "thumbnail", _kind)
