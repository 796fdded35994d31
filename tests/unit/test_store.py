"""store/: numbered migrations run once; queued writes are visible to the next read; rows round-trip."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkfleet.errors import StoreError
from sparkfleet.store import Database
from sparkfleet.store.clusters import list_clusters, record_cluster, record_cluster_event
from sparkfleet.store.queries import list_queries, record_query_end, record_query_start
from sparkfleet.store.sessions import list_sessions, record_session

# The newest migration shipped with the package, e.g. 2 for 0002_journal.sql.
LATEST = max(
    int(entry.name[:4])
    for entry in resources.files("sparkfleet.store.migrations").iterdir()
    if entry.name.endswith(".sql")
)
TABLES = {"clusters", "cluster_events", "sessions", "queries", "journal", "workload_runs", "runtimes", "runtime_pins",
          "regressions"}


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]  # type: ignore[no-any-return]


def _tables(db: Database) -> set[str]:
    return {
        r["name"]
        for r in db.read("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
    }


# ---- migrations --------------------------------------------------------------------------


def test_opening_a_new_store_runs_the_migrations(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.db"  # parents are created
    db = Database(path).open()
    try:
        assert _tables(db) == TABLES
    finally:
        db.close()
    assert _user_version(path) == LATEST


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = Database(path).open()
    record_cluster_event(db, "c-1", 1.0, "starting", "asked for")
    db.close()  # queued writes are applied before close returns
    reopened = Database(path).open()  # re-running CREATE TABLE would fail here
    try:
        assert [e["reason"] for e in reopened.read("SELECT reason FROM cluster_events")] == ["asked for"]
    finally:
        reopened.close()
    assert _user_version(path) == LATEST


def test_migrate_is_idempotent_on_a_connection(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        assert Database.migrate(conn) == LATEST
        assert Database.migrate(conn) == LATEST
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    finally:
        conn.close()


def test_a_failing_migration_is_rolled_back_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sessions (x)")  # in the way of 0001_initial.sql
    with pytest.raises(StoreError, match="migration 0001_initial.sql failed"):
        Database(path).open()
    assert _user_version(path) == 0
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == {"sessions"}  # clusters and cluster_events, created before it, were rolled back


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=f"cannot open the store at {path}"):
        Database(path).open()


# ---- write-behind ------------------------------------------------------------------------


def test_reads_see_every_write_queued_before_them(db: Database) -> None:
    for i in range(1500):  # several writer batches
        record_cluster_event(db, "c-1", float(i), "ready", f"event {i}")
    rows = db.read("SELECT at, reason FROM cluster_events ORDER BY seq")
    assert [r["reason"] for r in rows] == [f"event {i}" for i in range(1500)]


def test_writes_apply_in_order(db: Database) -> None:
    record_session(db, _session("a", state="active", last=1.0))
    record_session(db, _session("a", state="closed", last=2.0))
    record_session(db, _session("a", state="active", last=3.0))
    [row] = list_sessions(db)
    assert (row["state"], row["last_active_at"]) == ("active", 3.0)


def test_a_failed_write_is_reported_once_and_the_store_keeps_working(db: Database) -> None:
    db.write("INSERT INTO no_such_table VALUES (1)")
    with pytest.raises(StoreError, match="a store write failed: no such table"):
        db.flush()
    record_cluster_event(db, "c-1", 1.0, "ready", "after the failure")
    assert [r["reason"] for r in db.read("SELECT reason FROM cluster_events")] == ["after the failure"]


def test_a_bad_read_is_a_store_error(db: Database) -> None:
    with pytest.raises(StoreError, match="store read failed"):
        db.read("SELECT * FROM nowhere")


# ---- records -----------------------------------------------------------------------------


def _cluster(cid: str, created: float, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": cid, "size": "M", "runtime": "spark-4.1", "state": "starting", "address": None,
        "pid": None, "cores": 2, "memory_mb": 2048, "cpus": "0-1", "created_at": created,
        "updated_at": created, "exit_code": None,
    }  # fmt: skip
    row.update(changes)
    return row


def test_cluster_records_round_trip_with_their_history(db: Database) -> None:
    record_cluster(db, _cluster("c-2", 20.0))
    record_cluster(db, _cluster("c-1", 10.0))
    record_cluster_event(db, "c-1", 10.0, "starting", "pool wants 1 M")
    record_cluster(db, _cluster("c-1", 10.0, state="ready", address="localhost:15100", pid=4242, updated_at=12.0))
    record_cluster_event(db, "c-1", 12.0, "ready", "answered")
    clusters = list_clusters(db)
    assert [c["id"] for c in clusters] == ["c-1", "c-2"]  # by creation time
    c1 = clusters[0]
    assert {k: v for k, v in c1.items() if k != "history"} == _cluster(
        "c-1", 10.0, state="ready", address="localhost:15100", pid=4242, updated_at=12.0
    )
    assert c1["history"] == [
        {"at": 10.0, "state": "starting", "reason": "pool wants 1 M"},
        {"at": 12.0, "state": "ready", "reason": "answered"},
    ]
    assert clusters[1]["history"] == []
    assert all("history" not in c for c in list_clusters(db, include_history=False))


def test_a_partial_cluster_update_keeps_other_columns(db: Database) -> None:
    record_cluster(db, _cluster("c-1", 10.0, pid=7))
    record_cluster(db, {"id": "c-1", "size": "M", "runtime": "spark-4.1", "state": "stopped",
                        "cores": 2, "memory_mb": 2048, "created_at": 10.0, "updated_at": 15.0,
                        "exit_code": 0})  # fmt: skip
    [row] = list_clusters(db, include_history=False)
    assert (row["state"], row["exit_code"], row["pid"], row["cpus"]) == ("stopped", 0, 7, "0-1")


def _query(qid: str, session: str, submitted: float) -> dict[str, object]:
    return {
        "id": qid, "session_id": session, "user_id": "alice", "kind": "sql_command",
        "cluster_id": "c-1", "runtime": "spark-4.1", "state": "running",
        "placement_reason": "least loaded", "submitted_at": submitted,
    }  # fmt: skip


def test_query_records_round_trip(db: Database) -> None:
    record_query_start(db, _query("q-1", "s-1", 1.0))
    record_query_start(db, _query("q-2", "s-2", 2.0))
    record_query_start(db, _query("q-3", "s-1", 3.0))
    attempts = [{"cluster_id": "c-1", "outcome": "lost"}, {"cluster_id": "c-2", "outcome": "ok"}]
    record_query_end(db, "q-1", {"state": "succeeded", "finished_at": 4.0, "duration_ms": 3000.0,
                                 "response_bytes": 123, "attempts": attempts})  # fmt: skip
    record_query_end(db, "q-2", {"state": "failed", "error_class": "DIVIDE_BY_ZERO", "error_message": "/0"})

    everything = list_queries(db)
    assert [q["id"] for q in everything] == ["q-3", "q-2", "q-1"]  # newest first
    q1 = everything[2]
    assert q1 == {
        **_query("q-1", "s-1", 1.0), "state": "succeeded", "finished_at": 4.0, "duration_ms": 3000.0,
        "response_bytes": 123, "attempts": attempts, "fingerprint": None, "profile": None,
        "estimate": None, "error_class": None, "error_message": None, "intent": "",
    }  # fmt: skip
    assert everything[0]["attempts"] == [] and everything[0]["response_bytes"] == 0
    assert [q["id"] for q in list_queries(db, session_id="s-1")] == ["q-3", "q-1"]
    assert [q["id"] for q in list_queries(db, state="failed")] == ["q-2"]
    assert list_queries(db, state="failed")[0]["error_class"] == "DIVIDE_BY_ZERO"
    assert [q["id"] for q in list_queries(db, limit=1)] == ["q-3"]
    assert list_queries(db, session_id="s-1", state="failed") == []


def _session(sid: str, state: str = "active", last: float = 1.0) -> dict[str, object]:
    return {
        "session_id": sid, "user_id": "alice", "server_side_session_id": "srv", "state": state,
        "client_type": "py", "home_cluster_id": None, "created_at": 0.5, "last_active_at": last,
    }  # fmt: skip


def test_session_records_list_most_recently_active_first(db: Database) -> None:
    for i, sid in enumerate(["s-a", "s-b", "s-c"]):
        record_session(db, _session(sid, last=float(i)))
    assert [s["session_id"] for s in list_sessions(db)] == ["s-c", "s-b", "s-a"]
    assert [s["session_id"] for s in list_sessions(db, limit=2)] == ["s-c", "s-b"]


texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cid=texts,
    runtime=texts,
    address=st.none() | texts,
    pid=st.none() | st.integers(0, 2**31),
    created=st.floats(0, 2e9),
    reasons=st.lists(texts, max_size=3),
)
def test_any_cluster_record_round_trips(
    db: Database, cid: str, runtime: str, address: str | None, pid: int | None, created: float,
    reasons: list[str],
) -> None:  # fmt: skip
    row = _cluster(cid, created, runtime=runtime, address=address, pid=pid)
    record_cluster(db, row)
    db.write("DELETE FROM cluster_events WHERE cluster_id = ?", (cid,))
    for i, reason in enumerate(reasons):
        record_cluster_event(db, cid, created + i, "ready", reason)
    [found] = [c for c in list_clusters(db) if c["id"] == cid]
    assert {k: v for k, v in found.items() if k != "history"} == row
    assert [e["reason"] for e in found["history"]] == reasons
