"""A chain reached over JSON-RPC (anvil, geth, Besu …): same signing, nonces and retries.

Why only a constructor: everything else is ``Chain``'s; the node's own ``send_raw_transaction``
is the submission path, and the HTTP request timeout bounds every single call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from web3 import HTTPProvider, Web3

from gateway.ledger.chain import Chain
from gateway.ledger.errors import LedgerConfigError
from gateway.ledger.retry import RetryPolicy


class RpcChain(Chain):
    """A JSON-RPC node at ``url``."""

    def __init__(
        self,
        url: str,
        *,
        request_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise LedgerConfigError(f"ledger RPC URL must be http(s)://, got {url!r}")
        provider = HTTPProvider(url, request_kwargs={"timeout": request_timeout})
        super().__init__(
            Web3(provider),
            retry=retry,
            receipt_timeout=receipt_timeout,
            poll_interval=poll_interval,
            clock=clock,
            sleep=sleep,
        )
