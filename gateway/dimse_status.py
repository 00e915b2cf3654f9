"""DIMSE status codes ztbridge answers, named as the standard names them; defined only here.

Why one module: the same code was spelled as a constant in three modules and as a bare number
in two more, and a reviewer must be able to check each against the standard in one place.
Names follow PS3.7 Annex C (general statuses) and PS3.4 Annex B.2.3 (Storage Service Class,
C-STORE statuses); ranges are the standard's, the value is the one we send.
"""

from __future__ import annotations

from typing import Final

#: PS3.7 C.1.1: Success.
STATUS_SUCCESS: Final = 0x0000

#: PS3.7 C.4.2: Failure, Processing failure (a general failure in processing the operation).
STATUS_PROCESSING_FAILURE: Final = 0x0110

#: PS3.7 C.5.x (general status): Refused, SOP Class Not Supported. We send it for a request
#: whose Affected SOP Class UID is not the abstract syntax of the presentation context it
#: arrived on (the context negotiated for CT Image Storage carries only CT images).
STATUS_SOP_CLASS_NOT_SUPPORTED: Final = 0x0122

#: PS3.4 B.2.3: Refused, Out of Resources (A700-A7FF). We send it for an instance over the
#: size limit and for one whose file cannot be read: the sender may try again later; and for
#: a deflated data set that inflates past ingest.max_inflated_mb or max_inflate_ratio.
STATUS_OUT_OF_RESOURCES: Final = 0xA700

#: PS3.4 B.2.3: Error, Data Set does not match SOP Class (A900-A9FF). We send it for an
#: instance whose identifiers are missing, malformed or contradict the request.
STATUS_DATASET_MISMATCH: Final = 0xA900

#: PS3.4 B.2.3: Error, Cannot understand (C000-CFFF): the data set cannot be parsed.
STATUS_CANNOT_UNDERSTAND: Final = 0xC000

__all__ = [
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_DATASET_MISMATCH",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_PROCESSING_FAILURE",
    "STATUS_SOP_CLASS_NOT_SUPPORTED",
    "STATUS_SUCCESS",
]
