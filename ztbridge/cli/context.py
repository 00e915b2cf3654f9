"""Opening the gateway for one command: settings from ``--config``, our errors as clean exits.

Each command opens the gateway from settings, does one thing, and exits non-zero with a
message that names the fix when something is wrong; tracebacks are for bugs only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gateway.errors import ZtbridgeError
from ztbridge.cli.console import config_file, err, fail, setup_logging

if TYPE_CHECKING:
    from gateway.service import Gateway, StoreAccess
    from gateway.settings import Settings


def settings() -> Settings:
    """Settings from --config / ZTBRIDGE_CONFIG / environment."""
    from gateway.settings import load_settings

    try:
        return load_settings(config_file())
    except ZtbridgeError as e:
        raise fail(str(e)) from None


@contextmanager
def gateway(store_access: StoreAccess = "read", create: bool = False) -> Iterator[Gateway]:
    """Open the gateway for one command, turning our errors into clean exits.

    Only commands that add data (``device add``, ``import``) may start a new data folder;
    the others refuse a folder without an index rather than create an empty one.
    """
    from gateway.service import open_gateway
    from gateway.settings import load_settings

    try:
        s = load_settings(config_file())
        setup_logging("WARNING" if s.log_level == "INFO" else s.log_level)
        if not create and not s.index.url and not (s.home / "index.sqlite3").exists():
            raise fail(
                f"no ztbridge data at {s.home}: set ZTBRIDGE_HOME to the data folder"
                " (or run 'ztbridge up' there first)"
            )
        gw = open_gateway(s, store_access=store_access)
    except ZtbridgeError as e:
        raise fail(str(e)) from None
    try:
        announce_passphrase(gw)
        yield gw
    except ZtbridgeError as e:
        raise fail(str(e)) from None
    finally:
        gw.close()


def announce_passphrase(gw: Gateway) -> None:
    """Show a generated custodian passphrase exactly once."""
    if gw.generated_passphrase:
        err.print(
            "\n[bold yellow]A custodian key was created.[/] Its passphrase is shown only now;"
            " store it offline (it is needed to export or recover studies):\n\n"
            f"    ZTBRIDGE_CUSTODIAN_PASSPHRASE={gw.generated_passphrase}\n",
            highlight=False,
        )


def custodian_passphrase(gw: Gateway) -> str | None:
    """The configured custodian passphrase, if any (export and verify need it)."""
    p = gw.settings.custodian_passphrase
    return p.get_secret_value() if p else None
