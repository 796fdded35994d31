"""gateway/versions.py over a real SQLite store: slowdowns from history, the rollout loop's stage changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkfleet.clock import VirtualClock
from sparkfleet.fleet.runtime_registry import RuntimeRegistry
from sparkfleet.fleet.runtimes import installed_pyspark_runtime
from sparkfleet.gateway.versions import WorkloadRuntimes
from sparkfleet.policy.versions import RolloutSettings, Stage
from sparkfleet.store import runtimes as rows
from sparkfleet.store.db import Database
from sparkfleet.store.history import WorkloadRun, record_run


@pytest.fixture
def fleet(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = Database(tmp_path / "sparkfleet.db").open()
    clock = VirtualClock()
    registry = RuntimeRegistry(db, clock)
    installed = installed_pyspark_runtime()
    registry.add("old", installed.version, installed.spark_home, {}, Stage.GENERAL, "test")
    clock.advance(1)
    registry.add("new", installed.version, installed.spark_home, {}, Stage.CANARY, "test")
    yield db, clock, registry
    db.close()


def _run(db: Database, clock: VirtualClock, fingerprint: str, runtime: str, seconds: float, n: int) -> None:
    for i in range(n):
        clock.advance(1)
        record_run(db, WorkloadRun(fingerprint, f"q-{runtime}-{i}", "c", "S", runtime, "succeeded", clock.now(),
                                   duration_ms=seconds * 1000, input_bytes=1000))


def test_a_workload_far_slower_on_the_new_runtime_is_pinned_back_as_a_performance_regression(fleet) -> None:  # type: ignore[no-untyped-def]
    db, clock, registry = fleet
    versions = WorkloadRuntimes(registry, db, clock, RolloutSettings(min_runs_for_slowdown=3))
    _run(db, clock, "slow", "old", 1.0, 3)
    _run(db, clock, "slow", "new", 1.5, 3)
    assert versions.check_slowdown("slow", "new") is None  # 1.5x: under the 2x limit
    _run(db, clock, "slow", "new", 4.0, 4)  # the median on new is now 4 s
    reason = versions.check_slowdown("slow", "new")
    assert reason is not None and "4.0x slower" in reason and "pinned to old" in reason
    assert rows.pins(db) == {"slow": "old"}
    [group] = rows.list_regressions(db)
    assert (group["kind"], group["broken_on"], group["passed_on"]) == ("slowdown", "new", "old")
    # Pinned: its next run goes to old.
    assert versions.assign("slow").runtime == "old"  # type: ignore[union-attr]


def test_the_rollout_loop_promotes_a_clean_canary_and_holds_a_regressing_one(fleet) -> None:  # type: ignore[no-untyped-def]
    db, clock, registry = fleet
    versions = WorkloadRuntimes(registry, db, clock, RolloutSettings(promote_after_workloads=5, max_regression_rate=0.2))
    for i in range(4):
        _run(db, clock, f"w{i}", "new", 1.0, 1)
    assert versions.advance_rollout() == []  # 4 workloads: not yet
    _run(db, clock, "w4", "new", 1.0, 1)
    [change, demotion] = versions.advance_rollout()
    assert change.startswith("new -> general") and demotion.startswith("old -> previous")
    assert registry.general().name == "new"


def test_a_canary_with_too_many_regressions_is_not_promoted(fleet) -> None:  # type: ignore[no-untyped-def]
    db, clock, registry = fleet
    versions = WorkloadRuntimes(registry, db, clock, RolloutSettings(promote_after_workloads=5, max_regression_rate=0.2))
    for i in range(6):
        _run(db, clock, f"w{i}", "new", 1.0, 1)
    for i in range(2):
        rows.record_regression(db, "error", "new", "old", f"w{i}", "CAST_INVALID_INPUT", "bad", {}, {}, clock.now())
    assert versions.advance_rollout() == []
    assert registry.general().name == "old"
