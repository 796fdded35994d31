"""Cluster rows and their history of state changes."""

from __future__ import annotations

from typing import Any

from sparkfleet.store.db import Database


def record_cluster(db: Database, row: dict[str, Any]) -> None:
    """Insert or update a cluster's current record (``row`` holds every column)."""
    cols = list(row)
    db.write(
        f"INSERT INTO clusters ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
        f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in cols if c != 'id')}",
        [row[c] for c in cols],
    )


def record_cluster_event(db: Database, cluster_id: str, at: float, state: str, reason: str) -> None:
    db.write(
        "INSERT INTO cluster_events (cluster_id, at, state, reason) VALUES (?, ?, ?, ?)",
        (cluster_id, at, state, reason),
    )


def list_clusters(db: Database, include_history: bool = True) -> list[dict[str, Any]]:
    clusters = db.read("SELECT * FROM clusters ORDER BY created_at")
    if include_history:
        events: dict[str, list[dict[str, Any]]] = {}
        for ev in db.read("SELECT cluster_id, at, state, reason FROM cluster_events ORDER BY seq"):
            events.setdefault(ev.pop("cluster_id"), []).append(ev)
        for c in clusters:
            c["history"] = events.get(c["id"], [])
    return clusters
