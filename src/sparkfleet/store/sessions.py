"""Client sessions as the gateway presents them."""

from __future__ import annotations

from typing import Any

from sparkfleet.store.db import Database


def record_session(db: Database, row: dict[str, Any]) -> None:
    cols = list(row)
    db.write(
        f"INSERT INTO sessions ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
        "ON CONFLICT(user_id, session_id) DO UPDATE SET "
        + ", ".join(f"{c}=excluded.{c}" for c in cols if c not in ("user_id", "session_id")),
        [row[c] for c in cols],
    )


def list_sessions(db: Database, limit: int = 1000, tenant: str | None = None) -> list[dict[str, Any]]:
    """Newest first; only ``tenant``'s when given."""
    if tenant is not None:
        return db.read(
            "SELECT * FROM sessions WHERE tenant=? ORDER BY last_active_at DESC LIMIT ?", (tenant, limit)
        )
    return db.read("SELECT * FROM sessions ORDER BY last_active_at DESC LIMIT ?", (limit,))


def session_owners(db: Database, session_id: str) -> list[str]:
    """The user ids holding a session with this id (one, unless ids were reused without auth)."""
    return [r["user_id"] for r in db.read("SELECT user_id FROM sessions WHERE session_id=?", (session_id,))]


def tenant_session_ids(db: Database, tenant: str) -> set[str]:
    return {r["session_id"] for r in db.read("SELECT session_id FROM sessions WHERE tenant=?", (tenant,))}


def find_session(db: Database, user_id: str, session_id: str) -> dict[str, Any] | None:
    rows = db.read("SELECT * FROM sessions WHERE user_id=? AND session_id=?", (user_id, session_id))
    return rows[0] if rows else None
