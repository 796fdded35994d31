"""bench/cost_results.py and the cost benchmark's trace and fleets."""

from __future__ import annotations

import tomllib

import pytest

from sparkfleet.bench.cost import ARMS, parse
from sparkfleet.bench.cost_results import BATCH, INTERACTIVE, ArmRun, QueryTiming, exit_code, percentile, share_of, summarize
from sparkfleet.config import Settings


def timing(kind: str, latency: float, first: bool = False, ok: bool = True) -> QueryTiming:
    return QueryTiming("c", kind, 0, 0.0, latency, ok, first, "" if ok else "boom")


def test_summary_of_one_fleet() -> None:
    run = ArmRun("standard", "t", window_s=100.0, core_seconds=50.0, cold_starts=2, warm_starts=0, timings=[
        timing(INTERACTIVE, 9.0, first=True), timing(INTERACTIVE, 0.2), timing(INTERACTIVE, 0.3),
        timing(INTERACTIVE, 0.1, first=True), timing(BATCH, 4.0), timing(BATCH, 6.0), timing(INTERACTIVE, 50.0, ok=False),
    ])
    s = summarize(run)
    assert s.average_cores == 0.5
    assert (s.interactive, s.batch, s.errors) == (4, 2, 1)
    assert s.interactive_p50_s == 0.25 and s.interactive_p95_s == pytest.approx(7.695)
    assert (s.first_after_idle_median_s, s.first_after_idle_max_s) == (4.55, 9.0)
    assert s.batch_mean_s == 5.0
    static = summarize(ArmRun("static", "t", 100.0, 200.0, 0, 0, []))
    assert share_of(s, static) == 0.25 and share_of(s, None) is None
    assert static.interactive_p95_s is None
    assert exit_code([run]) == 1 and exit_code([ArmRun("x", "t", 1, 1, 0, 0, [timing(BATCH, 1)])]) == 0


def test_percentile_is_none_without_values() -> None:
    assert percentile([], 95) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_fleet_is_valid_config(arm: str) -> None:
    settings = Settings.model_validate(tomllib.loads(ARMS[arm].toml))
    assert settings.autoscaler.enabled == (arm != "static")
    if arm != "static":
        assert settings.autoscaler.mode == arm


def test_the_trace_has_idle_gaps_longer_than_standard_waits_before_stopping() -> None:
    trace = parse([]).trace
    assert trace.gap_s > 60 and trace.lead_in_s == trace.gap_s
    assert trace.burst_start(1) - trace.burst_start(0) == trace.burst_s + trace.gap_s
    assert trace.window_s == trace.gap_s + trace.bursts * (trace.burst_s + trace.gap_s)
    with pytest.raises(SystemExit):
        parse(["--arms", "nope"])
