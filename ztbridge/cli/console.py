"""What every command shares and the agent may load: consoles, errors for people, logging.

Why apart from ``context``: ``ztbridge agent`` runs on a modality's host where the server's
dependencies (SQLAlchemy, web3, pynetdicom) are not installed; this module imports none of
them, so the agent's command can use it.
"""

from __future__ import annotations

import getpass
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gateway.logsafe import SafeFormatter, log_thread_deaths

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

_STATE: dict[str, Any] = {"config": None}

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def set_config(path: Path | None) -> None:
    """Remember ``--config`` for the command that runs next."""
    _STATE["config"] = path


def config_file() -> Path | None:
    """The ``--config`` given, if any."""
    config: Path | None = _STATE["config"]
    return config


def actor() -> str:
    """Who is at the keyboard, for the audit log."""
    return f"cli:{getpass.getuser()}"


def setup_logging(level: str) -> None:
    """Plain timestamped lines on stderr, one per message whatever a peer put in it; a
    thread's dying exception goes through the same formatter (gateway/logsafe)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    log_thread_deaths(logging.getLogger("ztbridge"))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error for a person and return the exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


class _RichSafeHandler(RichHandler):
    """Log records through the progress bar's console, escaped like every other line."""

    def __init__(self) -> None:
        super().__init__(
            console=err,
            show_path=False,
            markup=False,
            rich_tracebacks=False,
            log_time_format="%Y-%m-%d %H:%M:%S",
        )
        self.setFormatter(SafeFormatter("%(name)s: %(message)s"))


class progress:  # noqa: N801 (used like a function: ``with progress() as bar``)
    """A progress bar on stderr that log lines do not break.

    Why: a warning printed with a plain handler while rich redraws the bar leaves half a bar
    and a torn line behind. While the bar runs, the root logger writes through rich's console
    (rich prints the line above the bar); the plain handler comes back afterwards.
    """

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._saved: list[logging.Handler] = []

    def __enter__(self) -> Progress:
        root = logging.getLogger()
        self._saved = list(root.handlers)
        for h in self._saved:
            root.removeHandler(h)
        root.addHandler(_RichSafeHandler())
        return self.bar.__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            self.bar.__exit__(None, None, None)
        finally:
            root = logging.getLogger()
            for h in list(root.handlers):
                root.removeHandler(h)
            for h in self._saved:
                root.addHandler(h)


def run(entry: Callable[[], T]) -> T:
    """Call a typer app, mapping KeyboardInterrupt to exit 130."""
    try:
        return entry()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
