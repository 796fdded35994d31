"""The pure part of ``sparkfleet bench mixed``: latency and throughput summaries, where clients ran,
ratios between phases and the goal lines."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from sparkfleet.bench.mixed import PHASES, fleet_toml, parse
from sparkfleet.bench.mixed_results import (
    ETL_CLIENT,
    LatencySummary,
    Phase,
    PhaseRun,
    Throughput,
    Timing,
    clusters_by_client,
    compare,
    etl_throughput,
    exit_code,
    group_errors,
    latency_by_query,
    profiles_by_client,
    reference_seconds,
    sharing_etl_cluster,
    summarize_latency,
    verdict_line,
)
from sparkfleet.config import load_settings


def lookup(seconds: float, started: float = 0.0, client: str = "interactive-1", query: str = "lookup") -> Timing:
    return Timing(client, query, started, started + seconds)


def etl(query: str, started: float, ended: float, error: str | None = None) -> Timing:
    return Timing(ETL_CLIENT, query, started, ended, error, "boom" if error else "")


def test_latency_percentiles_interpolate_over_successful_queries_only() -> None:
    timings = [lookup(s) for s in (0.1, 0.2, 0.3, 0.4, 10.0)]
    timings.append(Timing("interactive-2", "lookup", 0.0, 99.0, "SPARKFLEET.NO_CAPACITY", "later"))
    summary = summarize_latency(timings)
    assert summary.count == 5 and summary.errors == 1
    assert summary.p50_s == pytest.approx(0.3)
    assert summary.p95_s == pytest.approx(0.4 + (10.0 - 0.4) * 0.8)  # rank 3.8 of 0..4
    assert summary.max_s == pytest.approx(10.0)


def test_latency_of_nothing_is_not_a_number_not_zero() -> None:
    summary = summarize_latency([])
    assert summary.count == 0 and math.isnan(summary.p95_s) and math.isnan(summary.max_s)


def test_latency_by_query_keeps_the_order_queries_were_first_seen() -> None:
    timings = [lookup(1.0, query="b"), lookup(2.0, query="a"), lookup(3.0, query="b")]
    by_query = latency_by_query(timings)
    assert list(by_query) == ["b", "a"]
    assert by_query["b"].count == 2 and by_query["b"].p50_s == pytest.approx(2.0)


def test_reference_seconds_are_each_querys_median_over_successful_runs() -> None:
    runs = [etl("q01", 0, 10), etl("q01", 10, 30), etl("q01", 30, 60), etl("q18", 0, 40), etl("q18", 0, 1, "OOM")]
    assert reference_seconds(runs) == {"q01": pytest.approx(20.0), "q18": pytest.approx(40.0)}


def test_etl_throughput_window_ends_with_the_last_query_and_weights_by_reference() -> None:
    weights = {"q01": 20.0, "q18": 40.0}
    runs = [etl("q01", 100, 120), etl("q18", 120, 160), etl("q01", 160, 190, "SPARKFLEET.CLUSTER_LOST")]
    throughput = etl_throughput(runs, measured_from=100, weights=weights)
    assert throughput.completed == 2 and throughput.errors == 1
    assert throughput.seconds == pytest.approx(90.0)  # the failed query took time too
    assert throughput.per_min == pytest.approx(60 * 2 / 90)
    assert throughput.work_rate == pytest.approx((20 + 40) / 90)


def test_work_rate_does_not_depend_on_which_queries_fell_in_the_window() -> None:
    """Two fleets equally fast: one happened to run two short queries, the other one long one."""
    weights = {"short": 10.0, "long": 20.0}
    short = etl_throughput([etl("short", 0, 10), etl("short", 10, 20)], 0, weights)
    long = etl_throughput([etl("long", 0, 20)], 0, weights)
    assert short.per_min == pytest.approx(2 * long.per_min)
    assert short.work_rate == pytest.approx(long.work_rate) == pytest.approx(1.0)


def test_no_etl_has_no_throughput() -> None:
    throughput = etl_throughput([], 0.0, {})
    assert throughput.completed == 0 and math.isnan(throughput.per_min) and math.isnan(throughput.work_rate)


SESSIONS = {"s-etl": ETL_CLIENT, "s-1": "interactive-1", "s-2": "interactive-2"}


def record(session: str, cluster: str | None, kind: str = "relation", profile: str = "interactive") -> dict:
    return {"session_id": session, "cluster_id": cluster, "kind": kind, "profile": profile}


def test_clusters_and_profiles_by_client_come_from_the_query_records() -> None:
    records = [
        record("s-etl", "c-1", profile="batch"), record("s-etl", "c-1", kind="command", profile="batch"),
        record("s-1", "c-2"), record("s-1", "c-2", kind="command"),
        record("s-2", "c-1"), record("s-2", None),  # a query still queued has no cluster
        record("someone-else", "c-2"),
    ]
    placed = clusters_by_client(records, SESSIONS)
    assert placed == {ETL_CLIENT: Counter({"c-1": 1}), "interactive-1": Counter({"c-2": 1}),
                      "interactive-2": Counter({"c-1": 1})}
    profiles = profiles_by_client(records, SESSIONS)
    assert profiles[ETL_CLIENT] == Counter({"batch": 1})  # the SQL command itself is not counted
    assert profiles["interactive-2"] == Counter({"interactive": 2})
    assert sharing_etl_cluster(placed) == ["interactive-2"]


def test_no_client_shares_when_the_etl_has_a_cluster_to_itself() -> None:
    placed = {ETL_CLIENT: Counter({"c-1": 5}), "interactive-1": Counter({"c-2": 9}), "interactive-2": Counter({"c-2": 9})}
    assert sharing_etl_cluster(placed) == []


def latency(p95: float, p50: float = 0.1) -> LatencySummary:
    return LatencySummary(100, 0, p50, p95, p95 * 2)


def throughput(work_rate: float, per_min: float = 3.0) -> Throughput:
    return Throughput(5, 0, 100.0, per_min, work_rate)


def test_compare_gives_the_ratios_and_judges_both_goals() -> None:
    comparison = compare(
        {"a": latency(0.60), "b": latency(3.0), "c": latency(1.0), "d": latency(0.5)},
        {"a": throughput(0.95), "b": throughput(0.9), "c": throughput(1.0, per_min=4.0)},
        {"a": 2.4, "b": 1.0, "c": 0.8, "d": 2.5},
    )
    values = {r.label: r.value for r in comparison.ratios}
    assert values["interactive done (a) workload / (c) shared"] == pytest.approx(3.0)
    assert values["interactive done (b) affinity / (c) shared"] == pytest.approx(1.25)
    assert values["interactive p95  (a) workload / (d) idle"] == pytest.approx(1.2)
    assert values["interactive p95  (b) affinity / (d) idle"] == pytest.approx(6.0)
    assert values["ETL work rate    (a) workload / (c) shared"] == pytest.approx(0.95)
    assert values["ETL queries/min  (b) affinity / (c) shared"] == pytest.approx(0.75)
    p95_goal, etl_goal = comparison.goals
    assert p95_goal.met is True and etl_goal.met is True
    assert verdict_line(p95_goal) == "interactive p95 under ETL (a) vs. idle fleet (d) = 1.20x (goal <= 1.3): met"


def test_goals_are_missed_beyond_their_bounds_and_unmeasured_without_a_phase() -> None:
    missed = compare({"a": latency(0.7), "d": latency(0.5)}, {"a": throughput(0.5), "c": throughput(1.0)})
    assert [g.met for g in missed.goals] == [False, False]
    assert not any(r.label.startswith("interactive done") for r in missed.ratios)  # not given: not shown
    assert verdict_line(missed.goals[1]).endswith("= 0.50x (goal >= 0.9): missed")
    partial = compare({"a": latency(0.7)}, {"a": throughput(0.5)})
    assert [g.met for g in partial.goals] == [None, None]
    assert verdict_line(partial.goals[0]).endswith("= n/a (goal <= 1.3): not measured")


def test_errors_are_grouped_and_any_error_fails_the_run() -> None:
    phase = Phase("a", "workload", with_etl=True)
    clean = PhaseRun(phase, 0.0, 10.0, 12.0, [lookup(0.2), etl("q01", 0, 11)])
    assert exit_code([clean]) == 0
    failing = [
        Timing("interactive-1", "lookup", 0, 1, "SPARKFLEET.NO_CAPACITY", "wait", warm_up=True),
        Timing("interactive-1", "lookup", 2, 3, "SPARKFLEET.NO_CAPACITY", "wait again"),
        Timing("interactive-1", "lookup", 4, 5, "SPARKFLEET.NO_CAPACITY", "and again"),
    ]
    broken = PhaseRun(phase, 1.5, 10.0, 12.0, [lookup(0.2, started=2), *failing])
    assert exit_code([clean, broken]) == 1
    groups = group_errors(broken.timings)
    assert [(g.query, g.count, g.example) for g in groups] == [("lookup", 2, "wait again"),
                                                              ("lookup (warm-up)", 1, "wait")]
    # Warm-up queries are not part of the figures.
    assert len(broken.interactive()) == 3 and summarize_latency(broken.interactive()).errors == 2


def test_each_phase_gets_the_fleet_it_describes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sizes = {}
    for key in "abcd":
        config = tmp_path / f"{key}.toml"
        config.write_text(fleet_toml(PHASES[key], 3072))
        settings = load_settings(config)  # read and validated as ``sparkfleet up`` does
        sizes[key] = [settings.sizes[name] for name in settings.pool.clusters]
        assert settings.pool.placement == ("session-affinity" if key == "b" else "workload")
    for key in "abd":
        assert [(s.cores, s.memory_mb) for s in sizes[key]] == [(1, 3072), (1, 3072)]
    assert [(s.cores, s.memory_mb) for s in sizes["c"]] == [(2, 6144)]  # same total as (a)
    assert not PHASES["d"].with_etl and all(PHASES[k].with_etl for k in "abc")


def test_quick_shrinks_the_defaults_and_explicit_flags_win() -> None:
    full = parse([])
    assert (full.duration, full.scale_factor, full.phases) == (120.0, 1.0, ["d", "a", "b", "c"])
    quick = parse(["--quick", "--duration", "15"])
    assert (quick.duration, quick.scale_factor) == (15.0, 0.1)
    with pytest.raises(SystemExit):
        parse(["--phases", "a,x"])
    with pytest.raises(SystemExit):
        parse(["--etl-queries", "q99"])
