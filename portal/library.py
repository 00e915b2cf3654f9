"""What a patient or doctor can do with studies, for the API and the pages alike.

Each function is decide (``portal.authz``) then one core service: ``gateway.search`` for
lists and details, ``gateway.retrieve`` with the user's own key provider for downloads,
``gateway.accounts.shares`` for share and revoke (on this process's one ledger session).
Routers only parse the request and render the result.
"""

from __future__ import annotations

import logging
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from stream_zip import ZIP_64, stream_zip

from gateway.access import Action, Role
from gateway.accounts.errors import UnknownAccountError
from gateway.accounts.facts import visible_studies
from gateway.accounts.shares import Share, revoke_share, share_study, shares_of
from gateway.accounts.users import Account
from gateway.anchoring.service import Anchoring
from gateway.audit import AuditEvent
from gateway.errors import RetrieveError
from gateway.export import instance_path
from gateway.media import DICOMDIR, MediaLayout, MediaLayoutError, media_layout
from gateway.retrieve import InstanceRef, KeyProvider, retrieve, retrieve_header, study_refs
from gateway.search import Search, StudyDetail, StudyQuery, StudyRecord, Visible
from gateway.service import Gateway
from gateway.thumbnails import MAX_PREVIEW_BYTES, preview_png
from portal.authz import authorize
from portal.deps import Caller
from portal.problems import NOT_FOUND_DETAIL, ProblemError

log = logging.getLogger("ztbridge.portal")

#: Stored deflate blocks: DICOM pixel data barely compresses, and the download should run
#: at the speed of decryption, not of zlib.
_LEVEL = 0
#: Bytes per chunk handed to the server: each chunk costs a hop from the worker thread to
#: the event loop and a TLS write, so 1 MiB rather than stream-zip's 64 KiB default
#: (bench/retrieve.py); memory stays bounded by a chunk and a store block.
_CHUNK = 1 << 20
LIST_LIMIT = 1000


def _search(gw: Gateway) -> Search:
    cipher = gw.db.cipher
    assert cipher is not None  # the gateway's index is always opened with its key
    return Search(gw.db, cipher)


def list_studies(gw: Gateway, caller: Caller) -> list[StudyRecord]:
    """The studies the caller may see (a patient's own, a doctor's live shares)."""
    authorize(gw, caller, Action.SEARCH)
    uids = visible_studies(gw.db, caller.view, gw.clock.now())
    if not uids:
        return []
    return _search(gw).studies(StudyQuery(limit=LIST_LIMIT), Visible(study_uids=frozenset(uids)))


@dataclass(frozen=True)
class ShareView:
    """A live share as the owner sees it."""

    doctor: str
    doctor_name: str
    expires_at: str | None


@dataclass(frozen=True)
class StudyView:
    """A study page's content: the study, its series, and (for its owner) its shares."""

    detail: StudyDetail
    owner: bool
    shares: list[ShareView]


def study_view(gw: Gateway, caller: Caller, study_uid: str) -> StudyView:
    """One study, if the caller may see it (404 exactly as for an unknown UID otherwise)."""
    authorize(gw, caller, Action.READ_METADATA, study_uid)
    detail = _search(gw).study_detail(study_uid)
    owner = caller.principal.role is Role.PATIENT
    views = []
    if owner:
        for s in shares_of(gw.db, study_uid):
            doctor = gw.users.by_id(s.doctor_id)
            views.append(ShareView(doctor.username, doctor.display_name, s.expires_at))
    return StudyView(detail, owner, views)


def archive_name(study_uid: str, dicomdir: bool = False) -> str:
    """The download's file name."""
    return f"{study_uid}-dicomdir.zip" if dicomdir else f"{study_uid}.zip"


def archive(
    gw: Gateway,
    caller: Caller,
    study_uid: str,
    series_uid: str | None = None,
    *,
    dicomdir: bool = False,
) -> Iterator[bytes]:
    """A ZIP of the study's Part-10 files, streamed (``stream-zip``): each instance read
    through ``retrieve`` with the caller's own keys, one chunk at a time, so neither the
    study nor an instance is ever whole in memory. An instance that fails a check aborts
    the download (the ZIP is left without its directory, so no client takes it as whole)
    and is audited. ``series_uid``: that series only (WADO-RS series as a ZIP).

    ``dicomdir``: a DICOMDIR media layout instead (``gateway.media``): the DICOMDIR first,
    made from the instances' header objects (never their pixels), then each file under the
    File ID it names, its bytes the same as in the plain download."""
    authorize(gw, caller, Action.READ, study_uid)
    refs = study_refs(gw.db, study_uid)
    if series_uid is not None:
        refs = [r for r in refs if r.series_uid == series_uid]
    if not refs:
        raise ProblemError("not-found", NOT_FOUND_DETAIL)
    keys = caller.keys(gw)
    modified = datetime.now(UTC)
    mode = stat.S_IFREG | 0o600
    names = _media_names(gw, caller, study_uid, refs, keys) if dicomdir else None

    def members() -> Iterator[tuple[str, datetime, int, object, Iterator[bytes]]]:
        if names is not None:
            yield DICOMDIR, modified, mode, ZIP_64, iter((names.dicomdir,))
        for ref in refs:
            if names is not None:
                name = names.paths[ref.sop_instance_uid]
            else:
                name = instance_path(Path(), ref).as_posix()
            yield name, modified, mode, ZIP_64, iter(retrieve(ref, gw.store, keys))

    detail: dict[str, object] = {"files": len(refs)}
    if dicomdir:
        detail["layout"] = "dicomdir"

    def chunks() -> Iterator[bytes]:
        try:
            yield from stream_zip(
                members(),  # type: ignore[arg-type]
                chunk_size=_CHUNK,
                get_compressobj=lambda: zlib.compressobj(wbits=-zlib.MAX_WBITS, level=_LEVEL),
            )
        except RetrieveError as e:
            log.error("download of %s stopped: %s", study_uid, e)
            gw.audit.record(
                AuditEvent("study.download", caller.username, study_uid, "error", {"why": e.what})
            )
            raise
        gw.audit.record(AuditEvent("study.download", caller.username, study_uid, "ok", detail))

    return chunks()


def _media_names(
    gw: Gateway, caller: Caller, study_uid: str, refs: list[InstanceRef], keys: KeyProvider
) -> MediaLayout:
    """The DICOMDIR and File IDs, from header objects (a damaged one is audited, 404'd
    nowhere: the download is refused before its first byte)."""
    try:
        return media_layout(retrieve_header(ref, gw.store, keys) for ref in refs)
    except RetrieveError as e:
        log.error("no DICOMDIR for %s: %s", study_uid, e)
        gw.audit.record(
            AuditEvent("study.download", caller.username, study_uid, "error", {"why": e.what})
        )
        raise
    except MediaLayoutError as e:
        raise ProblemError("dicomdir-unavailable", str(e)) from e


def preview(gw: Gateway, caller: Caller, study_uid: str) -> bytes | None:
    """A PNG of the study's middle image, decrypted with the caller's own key and decoded
    only after its geometry is checked (``gateway.thumbnails``); None: show a placeholder."""
    authorize(gw, caller, Action.READ, study_uid)
    refs = study_refs(gw.db, study_uid)
    if not refs:
        raise ProblemError("not-found", NOT_FOUND_DETAIL)
    ref = refs[len(refs) // 2]
    if ref.size is not None and ref.size > MAX_PREVIEW_BYTES:
        return None
    try:
        data = retrieve(ref, gw.store, caller.keys(gw)).read()
    except RetrieveError as e:
        log.error("no preview of %s: %s", study_uid, e)
        return None
    return preview_png(data)


def _doctor(gw: Gateway, username: str) -> Account:
    try:
        doctor = gw.users.get(username)
    except UnknownAccountError:
        doctor = None
    if doctor is None or doctor.role is not Role.DOCTOR or not doctor.enrolled:
        raise ProblemError("not-found", f"no doctor {username!r}")
    return doctor


def _anchoring(gw: Gateway) -> Anchoring:
    if gw.anchoring is None:
        raise ProblemError("ledger-unavailable", "the ledger is off (ledger.enabled = false)")
    return gw.anchoring


def expiry(day: date | None) -> datetime | None:
    """A share that expires on ``day`` lasts through that day (UTC): it ends at the next
    midnight."""
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def share(
    gw: Gateway, caller: Caller, study_uid: str, doctor_name: str, until: date | None
) -> Share:
    """Share the study with a doctor (the owning patient only), signed with the patient's key."""
    authorize(gw, caller, Action.SHARE, study_uid)
    doctor = _doctor(gw, doctor_name)
    anchoring = _anchoring(gw)
    expires = expiry(until)
    return anchoring.run_on_ledger(
        lambda s: share_study(
            gw.db,
            s.ledger,
            anchoring.study_id(study_uid),
            caller.view,
            doctor,
            study_uid,
            expires,
            gw.clock,
            gw.audit,
        )
    )


def revoke(gw: Gateway, caller: Caller, study_uid: str, doctor_name: str) -> bool:
    """End a doctor's access (the owning patient only); True if a grant was revoked on-chain."""
    authorize(gw, caller, Action.REVOKE, study_uid)
    doctor = _doctor(gw, doctor_name)
    anchoring = _anchoring(gw)
    return anchoring.run_on_ledger(
        lambda s: revoke_share(
            gw.db,
            s.ledger,
            anchoring.study_id(study_uid),
            caller.view,
            doctor,
            study_uid,
            gw.clock,
            gw.audit,
        )
    )


def find_doctors(gw: Gateway, caller: Caller, study_uid: str, text: str) -> list[Account]:
    """Doctors to share with, by name (for the owner of ``study_uid`` only)."""
    authorize(gw, caller, Action.SHARE, study_uid)
    return gw.users.find_doctors(text) if text.strip() else []
