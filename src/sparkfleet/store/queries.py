"""Query records: one per ExecutePlan, with where it ran and how it ended."""

from __future__ import annotations

import json
from typing import Any

from sparkfleet.store.db import Database


def record_query_start(db: Database, row: dict[str, Any]) -> None:
    cols = list(row)
    db.write(
        f"INSERT OR REPLACE INTO queries ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
        [row[c] for c in cols],
    )


def record_query_end(db: Database, query_id: str, fields: dict[str, Any]) -> None:
    if "attempts" in fields:
        fields = {**fields, "attempts": json.dumps(fields["attempts"])}
    db.write(
        f"UPDATE queries SET {', '.join(f'{c}=?' for c in fields)} WHERE id=?",
        [*fields.values(), query_id],
    )


def list_queries(
    db: Database, limit: int = 200, session_id: str | None = None, state: str | None = None,
    tenant: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; only those of ``tenant``'s sessions when given."""
    where, params = [], []
    if tenant is not None:
        where.append("session_id IN (SELECT session_id FROM sessions WHERE tenant=?)")
        params.append(tenant)
    if session_id:
        where.append("session_id=?")
        params.append(session_id)
    if state:
        where.append("state=?")
        params.append(state)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = db.read(
        f"SELECT * FROM queries {clause} ORDER BY submitted_at DESC LIMIT ?", (*params, limit)
    )
    for row in rows:
        row["attempts"] = json.loads(row["attempts"] or "[]")
    return rows


def find_query(db: Database, query_id: str) -> dict[str, Any] | None:
    rows = db.read("SELECT * FROM queries WHERE id=?", (query_id,))
    if not rows:
        return None
    rows[0]["attempts"] = json.loads(rows[0]["attempts"] or "[]")
    return rows[0]


def tenant_of_query(db: Database, query_id: str) -> str | None:
    """The tenant whose session ran the query (None if unknown)."""
    rows = db.read(
        "SELECT s.tenant FROM queries q JOIN sessions s ON s.session_id = q.session_id WHERE q.id=?", (query_id,)
    )
    return rows[0]["tenant"] if rows else None
