"""The embedded SQLite store: opened by the app, migrated by number, written behind the hot path.

Writes are queued and applied in batches by one writer thread, so a query's bookkeeping never
waits on the disk; readers call :meth:`Database.read`, which first waits for queued writes so an
API answer always includes everything recorded before it was asked.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from sparkfleet.errors import StoreError

_STOP = object()
_BATCH = 512


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("sparkfleet.store.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text()))
    return sorted(found)


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Condition()
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._error: BaseException | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.row_factory = sqlite3.Row
        return conn

    def open(self) -> "Database":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            self.migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._reader = conn
        self._writer = threading.Thread(target=self._write_loop, name="sparkfleet-store", daemon=True)
        self._writer.start()
        return self

    @staticmethod
    def migrate(conn: sqlite3.Connection) -> int:
        """Apply every migration newer than the database's user_version; return the new version."""
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        for number, name, sql in _migrations():
            if number <= current:
                continue
            try:
                conn.execute("BEGIN")
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"migration {name} failed: {exc}") from exc
            current = number
        return current

    def write(self, sql: str, params: Iterable[Any] = ()) -> None:
        """Queue one statement; it is applied in order, in a batch transaction, soon."""
        with self._pending_lock:
            self._pending += 1
        self._queue.put((sql, tuple(params)))

    def flush(self, timeout_s: float = 10.0) -> None:
        with self._pending_lock:
            if not self._pending_lock.wait_for(lambda: self._pending == 0, timeout_s):
                raise StoreError(f"store writes did not complete within {timeout_s}s")
        # Reported once: the failed batch is gone, and later writes and reads must still work.
        error, self._error = self._error, None
        if error is not None:
            raise StoreError(f"a store write failed: {error}")

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        self.flush()
        assert self._reader is not None, "Database.open() was not called"
        with self._read_lock:
            try:
                return [dict(row) for row in self._reader.execute(sql, tuple(params))]
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {exc}") from exc

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(timeout=30)
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _write_loop(self) -> None:
        conn = self._connect()
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _STOP or _STOP in batch:
                stop = True
            statements = [item for item in batch if item is not _STOP]
            if statements:
                try:
                    conn.execute("BEGIN")
                    for sql, params in statements:
                        conn.execute(sql, params)
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:  # keep serving; surface on the next flush
                    self._error = exc
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
            with self._pending_lock:
                self._pending -= len(statements)
                self._pending_lock.notify_all()
        conn.close()


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (ours contain no semicolons inside literals)."""
    body = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]
