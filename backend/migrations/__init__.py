"""Alembic migrations of the run store; applied by :func:`backend.db.migrate` when the API starts."""
