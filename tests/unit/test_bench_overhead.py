"""bench/overhead_results.py and the CPU meter's arithmetic: the overhead benchmark's summary from hand-made samples."""

from __future__ import annotations

import math

import pytest

from sparkfleet.bench.harness import CpuMeter, CpuReading, tree_cpu_seconds
from sparkfleet.bench.overhead import _parse
from sparkfleet.bench.overhead_results import (
    CLUSTER_DIRECT,
    FLEET,
    PLAIN,
    Idle,
    LargeResult,
    Pass,
    Results,
    WorkloadBlock,
    cpu_per_query,
    cpu_rows,
    gateway_added_ms,
    goals,
    latency,
    queries_per_cluster,
    rotation,
    total_cpu,
)


def block(name: str, plain_ms: list[float], other_ms: list[float], small: bool = True,
          cpu: dict[str, float] | None = None) -> WorkloadBlock:
    return WorkloadBlock(name, small, tuple(x / 1000 for x in plain_ms), tuple(x / 1000 for x in other_ms),
                         cpu or {}, wall_s=1.0)


def test_the_side_order_rotates_so_that_no_side_is_always_first() -> None:
    sides = (PLAIN, FLEET, CLUSTER_DIRECT)
    assert [rotation(sides, i)[0] for i in range(4)] == [PLAIN, FLEET, CLUSTER_DIRECT, PLAIN]
    assert rotation(sides, 1) == (FLEET, CLUSTER_DIRECT, PLAIN)
    assert [rotation((PLAIN, FLEET), i) for i in range(2)] == [(PLAIN, FLEET), (FLEET, PLAIN)]


def test_added_latency_is_the_median_of_paired_differences_not_a_difference_of_medians() -> None:
    # Medians 11 and 12 ms (1 ms apart), but the same iteration was 2 ms slower on the fleet side twice.
    b = block("q", plain_ms=[10, 11, 20], other_ms=[12, 13, 12])
    lat = latency(b)
    assert (lat.plain_p50_ms, lat.other_p50_ms) == pytest.approx((11.0, 12.0))
    assert lat.ratio == pytest.approx(12 / 11)
    assert lat.added_p50_ms == pytest.approx(2.0)
    assert lat.added_p95_ms == pytest.approx(2.0)  # p95 of [-8, 2, 2]
    assert lat.plain_p95_ms == pytest.approx(19.1)  # 11 + 0.9 * (20 - 11)


def test_what_the_gateway_adds_is_the_fleet_pass_minus_the_cluster_direct_pass() -> None:
    fleet = block("q", plain_ms=[10, 10, 10], other_ms=[13, 14, 13])  # +3 ms
    direct = block("q", plain_ms=[11, 11, 11], other_ms=[12, 12, 13])  # +1 ms: what the fleet does to its cluster
    assert gateway_added_ms(fleet, direct) == pytest.approx(2.0)


def test_cpu_per_query_divides_each_part_by_the_queries_of_the_side_it_serves() -> None:
    a = block("a", [1] * 100, [1] * 100, cpu={"gateway": 0.1, "clusters": 0.5, "plain": 0.4, "client": 0.2})
    b = block("b", [1] * 50, [1] * 50, small=False, cpu={"gateway": 0.2, "clusters": 0.4, "plain": 0.2, "client": 0.1})
    one = cpu_per_query([a], "a")
    assert one.queries == 100
    assert one.ms == pytest.approx({"gateway": 1.0, "clusters": 5.0, "plain": 4.0, "client": 1.0})  # client: 200 queries
    assert one.clusters_to_plain == pytest.approx(1.25)
    both = cpu_per_query([a, b], "all")
    assert both.queries == 150
    assert both.ms["gateway"] == pytest.approx(2.0)  # 0.3 s over 150 fleet queries
    assert both.ms["clusters"] == pytest.approx(6.0)
    rows = cpu_rows(Pass(FLEET, (a, b), {}))
    assert [r.label for r in rows] == ["a", "b", "small workloads", "all workloads"]
    assert rows[2].ms == one.ms  # only "a" is small
    assert total_cpu(Pass(FLEET, (a, b), {})) == ({"gateway": pytest.approx(0.3), "clusters": pytest.approx(0.9),
                                                   "plain": pytest.approx(0.6), "client": pytest.approx(0.3)}, 2.0)
    assert math.isnan(cpu_per_query([], "none").clusters_to_plain)


def test_idle_cpu_is_a_share_of_one_core() -> None:
    idle = Idle(60.0, {"gateway": 0.3, "clusters": 0.6, "metastore": 0.3, "plain": 0.12})
    assert idle.percent_of_core("gateway", "clusters", "metastore") == pytest.approx(2.0)
    assert idle.percent_of_core("plain") == pytest.approx(0.2)


def test_large_result_ratio_is_the_median_of_paired_run_ratios() -> None:
    large = LargeResult(160_000_000, {FLEET: (90.0, 100.0, 300.0), PLAIN: (100.0, 100.0, 100.0)},
                        {"gateway": 0.8}, 10.0, fleet_runs=4, queries_per_cluster={"c1": 4})
    assert large.paired_ratios() == pytest.approx([0.9, 1.0, 3.0])
    assert large.ratio == pytest.approx(1.0)
    assert large.gateway_ms_per_mb() == pytest.approx(800 / 640)  # 0.8 s over 4 x 160 MB


def results(fleet_ms: float, gateway_s: float, idle_gateway_s: float, fleet_mb_s: float) -> Results:
    cpu = {"gateway": gateway_s, "clusters": 0.3, "metastore": 0.01, "plain": 0.3}
    fleet = Pass(FLEET, (block("small", [10] * 100, [fleet_ms] * 100, cpu=cpu),
                         block("big", [50] * 100, [52] * 100, small=False, cpu=cpu)), {"c1": 200})
    direct = Pass(CLUSTER_DIRECT, (block("small", [10] * 100, [10.5] * 100), block("big", [50] * 100, [51] * 100)), {})
    large = LargeResult(1, {FLEET: (fleet_mb_s,), PLAIN: (100.0,)}, {}, 1.0, 2, {})
    return Results({FLEET: fleet, CLUSTER_DIRECT: direct}, "c1", Idle(100.0, {"gateway": idle_gateway_s}), large)


def test_goals_report_each_measured_value_and_whether_it_was_met() -> None:
    met = goals(results(fleet_ms=10.5, gateway_s=0.15, idle_gateway_s=1.0, fleet_mb_s=98.0))
    assert [g.met for g in met] == [True, True, True, True, True]
    assert met[0].measured == "1.050 (small)"  # the worst workload: 10.5/10 beats 52/50
    assert met[1].measured == "1.50 ms"  # 0.15 s over the 100 small fleet queries
    assert met[2].measured == "1.00x"
    assert met[3].measured == "1.00% of a core"  # gateway 1.0 s (clusters and metastore idle) over 100 s
    missed = goals(results(fleet_ms=12.0, gateway_s=0.25, idle_gateway_s=3.0, fleet_mb_s=96.0))
    assert [g.met for g in missed] == [False, False, True, False, False]
    assert missed[0].measured == "1.200 (small)"
    assert missed[4].measured == "0.960"


def test_queries_per_cluster_counts_placed_query_records_only() -> None:
    rows = [{"cluster_id": "c1"}, {"cluster_id": "c2"}, {"cluster_id": "c1"}, {"cluster_id": None}, {}]
    assert queries_per_cluster(rows) == {"c1": 2, "c2": 1}


def test_cpu_meter_counts_each_process_tree_apart_and_the_rest_as_other() -> None:
    before = CpuReading({"gateway": {10: 1.0}, "clusters": {20: 5.0, 21: 7.0}}, machine_busy_s=100.0)
    # Cluster 21 ended in between (nothing counted); cluster 22 began (all it used counts).
    after = CpuReading({"gateway": {10: 1.5}, "clusters": {20: 6.0, 22: 2.0}}, machine_busy_s=105.0)
    used = CpuMeter.used(before, after)
    assert used == pytest.approx({"gateway": 0.5, "clusters": 3.0, "other": 1.5})
    assert CpuMeter.changes(before, after) == ["clusters: pid 22 began (all its CPU counts)",
                                               "clusters: pid 21 ended (its last CPU is not counted)"]


def test_a_tree_stops_where_another_part_begins() -> None:
    # gateway 10 runs cluster JVM 20 (with a Python worker 30) and a helper 11.
    table = {10: (1, 1.0), 11: (10, 0.5), 20: (10, 4.0), 30: (20, 2.0), 99: (1, 9.0)}
    assert tree_cpu_seconds(table, 10) == pytest.approx(7.5)
    assert tree_cpu_seconds(table, 10, frozenset({20})) == pytest.approx(1.5)
    assert tree_cpu_seconds(table, 20, frozenset({10})) == pytest.approx(6.0)
    assert tree_cpu_seconds(table, 42) == 0.0


def test_quick_sets_the_short_defaults_and_explicit_options_win() -> None:
    quick = _parse(["--quick", "--iterations", "7"])
    assert (quick.warmup, quick.iterations, quick.idle_s, quick.large_runs) == (10, 7, 15.0, 2)
    full = _parse([])
    assert (full.warmup, full.iterations, full.idle_s, full.large_runs, full.rows) == (30, 100, 60.0, 5, 10_000_000)
