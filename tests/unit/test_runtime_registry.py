"""fleet/runtime_registry.py and store/runtimes.py over a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkfleet.clock import VirtualClock
from sparkfleet.errors import ConfigError
from sparkfleet.fleet.runtime_registry import RuntimeRegistry
from sparkfleet.fleet.runtimes import installed_pyspark_runtime
from sparkfleet.policy.versions import Stage
from sparkfleet.store import runtimes as rows
from sparkfleet.store.db import Database


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Database(tmp_path / "sparkfleet.db").open()
    yield store
    store.close()


def test_the_installed_pyspark_is_the_first_general_runtime_and_added_ones_are_newer(db: Database) -> None:
    registry = RuntimeRegistry(db, VirtualClock())
    registry.ensure_default()
    installed = installed_pyspark_runtime()
    assert registry.general().name == installed.name
    registry.ensure_default()  # idempotent
    assert len(registry.facts()) == 1
    registry.add("strict", installed.version, installed.spark_home, {"spark.sql.ansi.enabled": "false"},
                 Stage.CANARY, "a variant")
    [base, strict] = registry.facts()
    assert (strict.name, strict.stage) == ("strict", Stage.CANARY) and strict.order > base.order
    assert registry.get("strict").default_conf == {"spark.sql.ansi.enabled": "false"}
    # Promoting it demotes the general one; the general one cannot be retired directly.
    registry.set_stage("strict", Stage.GENERAL, "operator")
    assert registry.general().name == "strict"
    assert {f.name: f.stage for f in registry.facts()}[base.name] is Stage.PREVIOUS
    with pytest.raises(ConfigError, match="general"):
        registry.set_stage("strict", Stage.RETIRED, "operator")


def test_bad_registrations_are_refused_with_the_reason(db: Database, tmp_path: Path) -> None:
    registry = RuntimeRegistry(db, VirtualClock())
    registry.ensure_default()
    installed = installed_pyspark_runtime()
    with pytest.raises(ConfigError, match="already registered"):
        registry.add(installed.name, installed.version, installed.spark_home, {}, Stage.CANARY, "again")
    with pytest.raises(ConfigError, match="not a Spark home"):
        registry.add("x", "4.2.1", tmp_path, {}, Stage.CANARY, "no spark here")
    with pytest.raises(ConfigError, match="canary or general"):
        registry.add("y", installed.version, installed.spark_home, {}, Stage.RETIRED, "retired at birth")
    with pytest.raises(ConfigError, match="no runtime named"):
        registry.set_stage("nope", Stage.CANARY, "operator")


def test_regressions_group_the_workloads_a_runtime_pair_broke(db: Database) -> None:
    for fingerprint in ("f1", "f2"):
        rows.record_regression(db, "error", "new", "old", fingerprint, "CAST_INVALID_INPUT", "bad cast",
                               {"query_id": "q"}, {"query_id": "r"}, at=1.0)
    rows.record_regression(db, "error", "new", "old", "f1", "CAST_INVALID_INPUT", "bad cast", {}, {}, at=2.0)
    [group] = rows.list_regressions(db)
    assert (group["broken_on"], group["passed_on"], group["error_class"]) == ("new", "old", "CAST_INVALID_INPUT")
    assert group["affected_workloads"] == 2 and (group["first_seen"], group["last_seen"]) == (1.0, 2.0)
    assert {w["fingerprint"]: w["occurrences"] for w in group["workloads"]} == {"f1": 2, "f2": 1}
    rows.pin(db, "f1", "old", "new", "error", "broke", 1.0)
    assert rows.pins(db) == {"f1": "old"}
    rows.unpin(db, "f1")
    assert rows.pins(db) == {}
