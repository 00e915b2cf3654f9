"""One module per revision, in order (``v0001_initial`` is the pre-migration schema)."""
