"""A DICOMDIR media layout of one study (PS3.10 File-set, like Orthanc's ``/media``).

Why from headers: the DICOMDIR's records need only header attributes (patient, study,
series, instance numbers, the SOP class and transfer syntax), so it is built with pydicom's
``FileSet`` from each instance's header object (``gateway.retrieve.retrieve_header``: file
meta and data set without bulk data, never the pixels). pydicom lays the File-set out
(``PT000000/ST000000/SE000000/IM000000`` ...) and writes the DICOMDIR; the header-only files
it writes beside it, in a temporary folder, are thrown away. The caller then streams each
instance's real bytes under the File ID pydicom gave it, unchanged: what the modality sent
(with our Part-10 file meta group, as the plain download has it). The layout asks nothing
else of the files: only their names are the File-set's (PS3.10 8.2: at most 8 components of
up to 8 characters from A-Z, 0-9 and _), not ``<UID>.dcm``.

Memory holds the headers of one study at a time (a few KB each), never pixel data.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gateway.errors import InvalidInputError

DICOMDIR = "DICOMDIR"
FILESET_ID = "ZTBRIDGE"


class MediaLayoutError(InvalidInputError):
    """The study cannot be laid out as a File-set (a record lacks a required attribute)."""


@dataclass(frozen=True)
class MediaLayout:
    """The DICOMDIR's bytes, and the File ID (a POSIX path in the File-set) of each
    instance, by SOP Instance UID."""

    dicomdir: bytes
    paths: dict[str, str]


def media_layout(headers: Iterable[bytes], fileset_id: str = FILESET_ID) -> MediaLayout:
    """Lay out the instances whose header objects (Part-10 bytes) are ``headers``."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError
    from pydicom.fileset import FileSet

    fs = FileSet()
    fs.ID = fileset_id
    for header in headers:
        try:
            ds = dcmread(io.BytesIO(header))
            fs.add(ds)
        except (InvalidDicomError, ValueError, AttributeError, KeyError) as e:
            raise MediaLayoutError(f"no DICOMDIR record for an instance: {e}") from e
    with tempfile.TemporaryDirectory(prefix="ztbridge-media-") as tmp:
        root = Path(tmp)
        try:
            fs.write(root)
        except (ValueError, AttributeError, KeyError) as e:
            raise MediaLayoutError(f"the DICOMDIR cannot be written: {e}") from e
        dicomdir = (root / DICOMDIR).read_bytes()
        paths = {
            str(instance.SOPInstanceUID): PurePosixPath(
                *Path(instance.path).relative_to(root).parts
            ).as_posix()
            for instance in fs
        }
    return MediaLayout(dicomdir, paths)
