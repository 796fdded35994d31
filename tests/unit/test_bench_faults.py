"""Pure helpers of the bench tools: what ``sparkfleet bench faults`` concludes from its
observations (bench/fault_results.py) and the pools of ``sparkfleet compat --placement``."""

from __future__ import annotations

import math
import random

from pyspark.errors.exceptions.connect import SparkConnectGrpcException

from sparkfleet.bench.doctest_results import placement_spread
from sparkfleet.bench.doctests import PLACEMENTS, gateway_toml
from sparkfleet.bench.fault_results import (
    Kill,
    QueryOutcome,
    error_class_of,
    exit_code,
    group_problems,
    kill_impacts,
    pick_victim,
    retried_queries,
    spread,
    summarize_kinds,
)
from sparkfleet.config import load_settings


def ok(session: int, started: float, ended: float, kind: str = "join") -> QueryOutcome:
    return QueryOutcome(session, kind, started, ended)


def failed(session: int, started: float, ended: float, kind: str = "join") -> QueryOutcome:
    return QueryOutcome(session, kind, started, ended, "SPARKFLEET.CLUSTER_LOST", "cluster c-1 was lost")


def test_error_class_comes_from_spark_then_the_message_then_the_type() -> None:
    spark_error = SparkConnectGrpcException("boom", errorClass="SPARKFLEET.CLUSTER_LOST")
    assert error_class_of(spark_error) == "SPARKFLEET.CLUSTER_LOST"
    assert error_class_of(RuntimeError("[INVALID_HANDLE.SESSION_CHANGED] The handle changed")) == (
        "INVALID_HANDLE.SESSION_CHANGED"
    )
    assert error_class_of(TimeoutError("no class here")) == "TimeoutError"


def test_victims_are_ready_clusters_with_a_pid_chosen_by_the_seeded_rng() -> None:
    clusters = [
        {"id": "c-1", "state": "ready", "pid": 11},
        {"id": "c-2", "state": "lost", "pid": 12},
        {"id": "c-3", "state": "starting", "pid": 13},
        {"id": "c-4", "state": "ready", "pid": None},
        {"id": "c-5", "state": "ready", "pid": 15},
    ]
    chosen = {pick_victim(clusters, random.Random(seed))["id"] for seed in range(40)}  # type: ignore[index]
    assert chosen == {"c-1", "c-5"}
    assert pick_victim(clusters, random.Random(3)) == pick_victim(list(reversed(clusters)), random.Random(3))
    assert pick_victim(clusters[1:4], random.Random(0)) is None


def test_kinds_count_failures_and_wrong_results_apart_and_time_only_successes() -> None:
    outcomes = [
        ok(0, 0.0, 1.0), ok(0, 1.0, 4.0), failed(1, 0.0, 9.0),
        QueryOutcome(2, "join", 0.0, 2.0, wrong="join: expected 1, got 2"),
    ]
    [join, other] = summarize_kinds(outcomes, ["join", "toPandas"])
    assert (join.ok, join.failed, join.wrong, join.p50_s, join.max_s) == (2, 1, 1, 2.0, 3.0)
    assert (other.ok, other.failed, other.wrong) == (0, 0, 0) and math.isnan(other.p50_s)
    assert exit_code(outcomes) == 1
    assert exit_code(outcomes[:2]) == 0


def test_problems_are_grouped_by_kind_and_class_most_frequent_first() -> None:
    outcomes = [
        failed(0, 0, 1), failed(1, 0, 1), failed(1, 2, 3, kind="toPandas"),
        QueryOutcome(2, "join", 0, 1, wrong="join: expected 1, got 2"), ok(3, 0, 1),
    ]
    problems = group_problems(outcomes)
    assert [(p.kind, p.what, p.count) for p in problems] == [
        ("join", "SPARKFLEET.CLUSTER_LOST", 2),
        ("toPandas", "SPARKFLEET.CLUSTER_LOST", 1),
        ("join", "wrong result", 1),
    ]
    assert problems[2].example == "join: expected 1, got 2"


def test_a_kill_nobody_noticed_has_no_gap_and_reports_the_query_it_slowed() -> None:
    kill = Kill("c-1", 42, at=10.0, left_ready_s=0.5, recovered_s=20.0)
    [impact] = kill_impacts([kill], [ok(0, 8.0, 15.0), ok(1, 9.0, 11.0), ok(1, 11.0, 12.0)])
    assert (impact.failures, impact.failed_sessions, impact.gap_s) == (0, (), 0.0)
    assert impact.slowest_across_s == 7.0


def test_the_gap_lasts_until_every_failed_session_succeeds_again() -> None:
    kills = [Kill("c-1", 1, at=10.0, left_ready_s=1, recovered_s=20), Kill("c-2", 2, at=50.0, left_ready_s=1, recovered_s=None)]
    outcomes = [
        failed(0, 9.0, 11.0), ok(0, 11.5, 14.0),  # session 0 back at 14
        failed(1, 10.0, 12.0), failed(1, 12.5, 13.0), ok(1, 13.5, 18.0),  # session 1 back at 18
        failed(2, 49.0, 51.0),  # never back before the end
        ok(3, 1.0, 2.0),
    ]
    first, second = kill_impacts(kills, outcomes)
    assert (first.failures, first.failed_sessions, first.gap_s) == (3, (0, 1), 8.0)
    assert (second.failures, second.failed_sessions, second.gap_s) == (1, (2,), None)


def test_spread_and_retried_queries() -> None:
    assert spread([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)
    assert all(math.isnan(v) for v in spread([]))
    records = [
        {"id": "a", "attempts": [{"cluster_id": "c-1"}]},
        {"id": "b", "attempts": [{"cluster_id": "c-1"}, {"cluster_id": "c-2"}]},
        {"id": "c", "attempts": []},
    ]
    assert [r["id"] for r in retried_queries(records)] == ["b"]


# ---- sparkfleet compat --placement (bench/doctests.py, bench/doctest_results.py) ----------------


def test_compat_pools_are_valid_settings_of_the_asked_placement(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for placement, clusters in PLACEMENTS.items():
        path = tmp_path / f"{placement}.toml"
        path.write_text(gateway_toml(placement))
        settings = load_settings(path)
        assert settings.pool.placement == placement
        assert len(settings.pool.clusters) == clusters


def test_placement_spread_counts_queries_per_cluster_and_sessions_that_moved() -> None:
    records = [
        {"session_id": "a", "cluster_id": "m-1"}, {"session_id": "a", "cluster_id": "m-2"},
        {"session_id": "b", "cluster_id": "m-1"}, {"session_id": "b", "cluster_id": "m-1"},
    ]
    spread = placement_spread(records)
    assert spread.per_cluster == {"m-1": 3, "m-2": 1}
    assert (spread.records, spread.sessions, spread.sessions_on_several) == (4, 2, 1)
