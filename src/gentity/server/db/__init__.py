"""Persistence: the ORM rows, the database handle and the Alembic migrations."""
