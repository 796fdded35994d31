"""Journal rows: the state-changing requests of a session (see gateway/journal.py)."""

from __future__ import annotations

from typing import Any

from sparkfleet.store.db import Database


def append_entry(db: Database, row: dict[str, Any]) -> None:
    cols = list(row)
    db.write(
        f"INSERT INTO journal ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
        [row[c] for c in cols],
    )


def delete_entries(db: Database, user_id: str, session_id: str, seqs: list[int]) -> None:
    for seq in seqs:
        db.write("DELETE FROM journal WHERE user_id=? AND session_id=? AND seq=?", (user_id, session_id, seq))


def session_entries(db: Database, user_id: str, session_id: str) -> list[dict[str, Any]]:
    return db.read(
        "SELECT seq, key, removes, rpc, payload, created_at FROM journal "
        "WHERE user_id=? AND session_id=? ORDER BY seq",
        (user_id, session_id),
    )


def delete_session(db: Database, user_id: str, session_id: str) -> None:
    db.write("DELETE FROM journal WHERE user_id=? AND session_id=?", (user_id, session_id))
