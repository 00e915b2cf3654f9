"""Alembic's entry point, run programmatically by ``gateway.index.migrate`` (no alembic.ini).

The caller hands over an open connection (``config.attributes["connection"]``) already inside
a transaction, so the whole upgrade commits or rolls back as one, and the index cipher
(``config.attributes["cipher"]``) for revisions that seal existing values.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
