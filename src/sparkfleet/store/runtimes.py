"""Runtimes, pins and regressions (``0006_runtimes.sql``)."""

from __future__ import annotations

import json
from typing import Any

from sparkfleet.store.db import Database


def list_runtimes(db: Database) -> list[dict[str, Any]]:
    rows = db.read("SELECT * FROM runtimes ORDER BY ord")
    for r in rows:
        r["conf"] = json.loads(r["conf"])
    return rows


def add_runtime(db: Database, name: str, version: str, spark_home: str, conf: dict[str, str],
                stage: str, at: float, reason: str) -> None:
    """Register a runtime as the newest; an existing name is an error for the caller to check first."""
    db.write(
        "INSERT INTO runtimes (name, version, spark_home, conf, stage, ord, added_at, stage_reason, stage_changed_at) "
        "VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(ord), 0) + 1 FROM runtimes), ?, ?, ?)",
        (name, version, spark_home, json.dumps(conf, sort_keys=True), stage, at, reason, at),
    )


def set_stage(db: Database, name: str, stage: str, at: float, reason: str) -> None:
    db.write("UPDATE runtimes SET stage = ?, stage_reason = ?, stage_changed_at = ? WHERE name = ?",
             (stage, reason, at, name))


def pins(db: Database) -> dict[str, str]:
    """Workload fingerprint -> the runtime it is pinned to."""
    return {r["fingerprint"]: r["runtime"] for r in db.read("SELECT fingerprint, runtime FROM runtime_pins")}


def broken_on(db: Database) -> dict[str, str]:
    """Workload fingerprint -> the runtime that broke it (where its pin came from)."""
    return {r["fingerprint"]: r["broken_on"] for r in db.read("SELECT fingerprint, broken_on FROM runtime_pins")}


def list_pins(db: Database) -> list[dict[str, Any]]:
    return db.read("SELECT * FROM runtime_pins ORDER BY pinned_at")


def pin(db: Database, fingerprint: str, runtime: str, broken_on: str, kind: str, reason: str, at: float) -> None:
    db.write(
        "INSERT INTO runtime_pins (fingerprint, runtime, broken_on, kind, reason, pinned_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(fingerprint) DO UPDATE SET runtime = excluded.runtime, broken_on = excluded.broken_on, "
        "kind = excluded.kind, reason = excluded.reason, pinned_at = excluded.pinned_at",
        (fingerprint, runtime, broken_on, kind, reason, at),
    )


def unpin(db: Database, fingerprint: str) -> None:
    db.write("DELETE FROM runtime_pins WHERE fingerprint = ?", (fingerprint,))


def record_regression(db: Database, kind: str, broken_on: str, passed_on: str, fingerprint: str,
                      error_class: str, message: str, failed_run: dict[str, Any], passed_run: dict[str, Any],
                      at: float) -> None:
    """One workload a runtime broke; seen again, it counts another occurrence."""
    db.write(
        "INSERT INTO regressions (kind, broken_on, passed_on, fingerprint, error_class, message, failed_run, "
        "passed_run, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(kind, broken_on, passed_on, fingerprint, error_class) DO UPDATE SET "
        "occurrences = occurrences + 1, last_seen = excluded.last_seen, message = excluded.message, "
        "failed_run = excluded.failed_run, passed_run = excluded.passed_run",
        (kind, broken_on, passed_on, fingerprint, error_class, message[:4000], json.dumps(failed_run),
         json.dumps(passed_run), at, at),
    )


def list_regressions(db: Database) -> list[dict[str, Any]]:
    """Regressions grouped by runtime pair, kind and error class, each with its workloads."""
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in db.read("SELECT * FROM regressions ORDER BY first_seen, id"):
        key = (r["kind"], r["broken_on"], r["passed_on"], r["error_class"])
        group = groups.setdefault(key, {
            "kind": r["kind"], "broken_on": r["broken_on"], "passed_on": r["passed_on"],
            "error_class": r["error_class"], "message": r["message"], "first_seen": r["first_seen"],
            "last_seen": r["last_seen"], "workloads": [],
        })
        group["last_seen"] = max(group["last_seen"], r["last_seen"])
        group["workloads"].append({
            "fingerprint": r["fingerprint"], "message": r["message"], "occurrences": r["occurrences"],
            "failed_run": json.loads(r["failed_run"]), "passed_run": json.loads(r["passed_run"]),
            "first_seen": r["first_seen"], "last_seen": r["last_seen"],
        })
    for g in groups.values():
        g["affected_workloads"] = len(g["workloads"])
    return list(groups.values())


def workloads_run_on(db: Database, runtime: str, since: float) -> int:
    """Distinct workloads that finished a run on ``runtime`` since ``since`` (epoch seconds)."""
    [row] = db.read("SELECT COUNT(DISTINCT fingerprint) AS n FROM workload_runs WHERE runtime = ? AND recorded_at >= ?",
                    (runtime, since))
    return int(row["n"])


def workloads_regressed_on(db: Database, runtime: str) -> int:
    [row] = db.read("SELECT COUNT(DISTINCT fingerprint) AS n FROM regressions WHERE broken_on = ?", (runtime,))
    return int(row["n"])
