"""The index: SQLAlchemy tables for devices, studies, keys, instances and the audit log."""
