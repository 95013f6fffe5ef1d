"""PostgreSQL for tests: the project's server on loopback, one schema per test."""

from __future__ import annotations

import uuid

PG_BASE = "postgresql://127.0.0.1:5432/test"


def new_schema() -> str:
    """A schema name no other test uses (the store creates it on open)."""
    return f"t_{uuid.uuid4().hex[:16]}"


def schema_url(schema: str) -> str:
    return f"{PG_BASE}?schema={schema}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
