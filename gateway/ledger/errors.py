"""The ledger's error family, so callers never have to know web3, eth-tester or requests exist.

Every library exception crossing the ledger boundary is re-raised as one of these ``from e``;
a revert keeps the contract's custom error name and arguments because that is what a caller
decides on (``RecordExists`` is "already anchored", ``NotStudyOwner`` is a refusal).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import ZtbridgeError


class LedgerError(ZtbridgeError):
    """Root of everything the ledger raises."""


class LedgerUnavailableError(LedgerError):
    """The node could not be reached, or did not answer (or mine) in time; retrying may help."""


class LedgerConfigError(LedgerError):
    """The ledger is mis-configured: bad URL, missing artifact, corrupt journal, wrong chain."""


class LedgerRevertError(LedgerError):
    """The contract refused: ``name`` is the decoded custom error, ``args`` its arguments.

    Why a name and not a subclass per error: the contract's error set is data (the ABI), and a
    caller matching on ``err.name == "RecordExists"`` stays correct when the ABI grows.
    """

    def __init__(self, name: str, args: tuple[Any, ...] = ()) -> None:
        rendered = ", ".join(repr(a) for a in args)
        super().__init__(f"contract reverted with {name}({rendered})")
        self.name = name
        self.error_args = args

    @property
    def args_tuple(self) -> tuple[Any, ...]:
        """The decoded arguments (``args`` itself is Exception's message tuple)."""
        return self.error_args
