"""store/history.py: runs round-trip; a fingerprint's cost is the medians/maxima of its recent successes."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkfleet.plan.cost import CostClass
from sparkfleet.store import Database
from sparkfleet.store.history import SUCCEEDED, WorkloadRun, observed_cost, recent_runs, record_run


def _run(fingerprint: str = "fp-1", n: int = 0, **changes: object) -> WorkloadRun:
    run = WorkloadRun(
        fingerprint=fingerprint, query_id=f"q-{n}", cluster_id="c-1", size_class="M", runtime="4.3.0",
        outcome=SUCCEEDED, recorded_at=1_700_000_000.0 + n, duration_ms=1000.0 + n, task_ms=2000.0 + n,
        cpu_ms=1500.0 + n, peak_execution_memory=1_000_000 * (n + 1), spilled_bytes=0,
        shuffle_bytes=10_000 + n, input_bytes=50_000 + n, estimated_class="small",
        estimated_core_seconds=1.5,
    )  # fmt: skip
    return replace(run, **changes)  # type: ignore[arg-type]


def test_a_recorded_run_round_trips(db: Database) -> None:
    run = _run()
    record_run(db, run)
    assert recent_runs(db, "fp-1") == [run]


def test_a_run_without_metrics_or_estimate_round_trips(db: Database) -> None:
    run = WorkloadRun("fp-1", "q-1", None, None, None, "cluster lost", 5.0)
    record_run(db, run)
    assert recent_runs(db, "fp-1") == [run]


def test_an_unknown_fingerprint_has_no_cost(db: Database) -> None:
    record_run(db, _run("fp-other"))
    assert observed_cost(db, "fp-1") is None


def test_cost_is_the_median_of_typical_values_and_the_max_of_worst_case_ones(db: Database) -> None:
    for n, (task_ms, peak, spill) in enumerate([(1000, 5, 0), (3000, 50, 700), (2000, 7, 0)]):
        record_run(db, _run(n=n, task_ms=float(task_ms), peak_execution_memory=peak, spilled_bytes=spill))
    cost = observed_cost(db, "fp-1")
    assert cost is not None
    assert cost.runs == 3
    assert cost.task_ms == 2000.0  # median, not mean
    assert cost.duration_ms == 1001.0 and cost.cpu_ms == 1501.0 and cost.shuffle_bytes == 10_001
    assert cost.input_bytes == 50_001
    assert cost.peak_execution_memory == 50  # the worst run
    assert cost.spilled_bytes == 700
    assert cost.core_seconds == 2.0 and cost.cost_class is CostClass.SMALL


def test_only_successful_measured_runs_count(db: Database) -> None:
    record_run(db, _run(n=0, task_ms=1000.0))
    record_run(db, _run(n=1, outcome="failed", task_ms=900_000.0, peak_execution_memory=10**12))
    record_run(db, _run(n=2, outcome="cluster lost", task_ms=None))
    record_run(db, _run(n=3, task_ms=None, duration_ms=None))  # succeeded, but the UI was not readable
    cost = observed_cost(db, "fp-1")
    assert cost is not None
    assert (cost.runs, cost.task_ms, cost.peak_execution_memory) == (1, 1000.0, 1_000_000)
    assert len(recent_runs(db, "fp-1")) == 4  # every run is still on record


def test_only_the_last_n_successful_runs_count(db: Database) -> None:
    for n in range(30):
        record_run(db, _run(n=n, task_ms=float(n)))
    record_run(db, _run(n=99, outcome="failed", task_ms=1e9))  # newest, but not a success
    cost = observed_cost(db, "fp-1", last_n=5)
    assert cost is not None
    assert cost.runs == 5
    assert cost.task_ms == 27.0  # median of 25..29
    assert cost.peak_execution_memory == 30_000_000  # the max among those five (n=29)
    assert observed_cost(db, "fp-1").runs == 20  # type: ignore[union-attr]  # default window


def test_fingerprints_do_not_mix(db: Database) -> None:
    record_run(db, _run("fp-a", task_ms=10.0))
    record_run(db, _run("fp-b", task_ms=99_000.0))
    assert observed_cost(db, "fp-a").task_ms == 10.0  # type: ignore[union-attr]
    assert observed_cost(db, "fp-b").cost_class is CostClass.LARGE  # type: ignore[union-attr]


def test_runs_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = Database(path).open()
    record_run(db, _run())
    db.close()
    reopened = Database(path).open()
    try:
        assert observed_cost(reopened, "fp-1").runs == 1  # type: ignore[union-attr]
    finally:
        reopened.close()


_EXAMPLES = itertools.count()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    task_ms=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30),
    last_n=st.integers(min_value=1, max_value=30),
)
def test_cost_matches_the_recent_window_for_any_history(db: Database, task_ms: list[int], last_n: int) -> None:
    fingerprint = f"fp-{next(_EXAMPLES)}"  # the store outlives one example: a fresh workload each
    for n, value in enumerate(task_ms):
        record_run(db, _run(fingerprint, n=n, task_ms=float(value), peak_execution_memory=value))
    window = task_ms[-last_n:]
    cost = observed_cost(db, fingerprint, last_n=last_n)
    assert cost is not None
    assert cost.runs == len(window)
    assert cost.task_ms == statistics.median(window)
    assert cost.peak_execution_memory == max(window)
