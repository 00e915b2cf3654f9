"""The open-file limit, raised to make room for the lobby's silent connections.

Why: every connection the lobby holds is a file descriptor. Many systems start services with
a soft limit of 1024; past it ``accept()`` fails with EMFILE before the lobby's caps are
reached, and every other open (the store's pack files, the index, TLS files) fails with it.
So the DICOM server raises the soft limit to the hard one at start, and if the silent
connections' cap still does not fit it is lowered, with a warning naming the setting.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("ztbridge.dicom")

# Descriptors kept for everything but silent connections: associations, the pack files, the
# index, the portal, logs.
RESERVE = 512
# A soft limit "unlimited" is only this much in practice (the kernel's nr_open default).
_UNLIMITED = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = _UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError) as e:  # a container may forbid it: keep what we have
            log.debug("could not raise the open-file limit from %d: %s", soft, e)
    return _UNLIMITED if soft == resource.RLIM_INFINITY else soft


def silent_caps(total: int, per_address: int) -> tuple[int, int]:
    """``dicom.max_silent_connections`` and ``max_silent_per_address``, lowered to what the
    open-file limit leaves room for (after raising it)."""
    room = max(16, raise_open_file_limit() - RESERVE)
    if total > room:
        log.warning(
            "dicom.max_silent_connections = %d does not fit the open-file limit: using %d."
            " Raise the limit (ulimit -n, or LimitNOFILE= in the systemd unit) or lower the"
            " setting",
            total,
            room,
        )
        total = room
    return total, min(per_address, total)
