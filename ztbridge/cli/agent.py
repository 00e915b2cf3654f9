"""``ztbridge agent``: the posture agent, run on the sending host.

It runs where the server's dependencies are not installed (``pip install ztbridge[agent]``):
this module and what it imports (``ztbridge.cli.console``, ``gateway.posture.agent``) load
no SQLAlchemy, web3, FastAPI or pynetdicom; a test holds it to that.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from gateway.errors import ZtbridgeError
from ztbridge.cli.console import err, fail, setup_logging


def stamped(line: str) -> str:
    """A line of the agent's output with the local time and offset in front.

    Why: run as a service its output goes to a journal or a file, read later beside the
    gateway's log; without a time, a line cannot be matched to the refusal it explains.
    """
    return f"{datetime.now().astimezone().isoformat(timespec='seconds')} {line}"


def agent_cmd(
    gateway_url: Annotated[
        str, typer.Option("--gateway", help="the gateway's portal, e.g. https://pacs:8443")
    ],
    device: Annotated[str, typer.Option("--device", help="this device's AE title")],
    key: Annotated[Path, typer.Option("--key", help="the device's posture key (PEM)")],
    interval: Annotated[
        float, typer.Option("--interval", min=5, help="seconds between reports")
    ] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="post one report and exit")] = False,
    ca: Annotated[
        Path | None,
        typer.Option("--ca", help="CA certificate(s) that issued the gateway's (PEM)"),
    ] = None,
) -> None:
    """Run on the sending host: post a signed posture report every --interval seconds.

    Exit codes with --once: 0 accepted and passing, 3 accepted and failing the policy,
    2 refused by the gateway, 1 not delivered.
    """
    from gateway.posture import agent as agent_mod

    setup_logging("INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        signing_key = agent_mod.load_key(key)
        client = agent_mod.GatewayClient(gateway_url, ca)
    except ZtbridgeError as e:
        raise fail(str(e)) from None
    try:
        code = agent_mod.run(
            agent_mod.Agent(device, signing_key, client),
            interval,
            once,
            lambda line: err.print(stamped(line), highlight=False, markup=False, soft_wrap=True),
        )
    finally:
        client.close()
    raise typer.Exit(code)
