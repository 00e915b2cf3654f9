"""Anchoring studies and the audit log on the ledger: batches, outbox, worker (docs/ledger.md)."""
