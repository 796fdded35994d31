"""Persistence: SQLite by default, one module per aggregate (clusters, sessions, queries)."""

from sparkfleet.store.db import Database

__all__ = ["Database"]
