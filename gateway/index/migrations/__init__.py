"""Alembic revisions of the index schema, shipped inside the package and run on open."""
