"""bench/oom_results.py: the out-of-memory benchmark's summary."""

from __future__ import annotations

import tomllib

from sparkfleet.bench.oom import WORKLOADS, fleet_toml, parse
from sparkfleet.bench.oom_results import Attempt, WorkloadRun, exit_code, summarize
from sparkfleet.config import Settings

OOM = Attempt("S", "out of memory")
OK_M = Attempt("M", "succeeded")


def test_summary_counts_first_run_successes_second_run_ooms_and_recovery_time() -> None:
    runs = [
        WorkloadRun("a", 1, True, 50.0, (OOM, OK_M)),
        WorkloadRun("a", 2, True, 20.0, (OK_M,)),
        WorkloadRun("b", 1, False, 30.0, (OOM,), "out of memory, not retried"),
        WorkloadRun("b", 2, True, 25.0, (OOM, OK_M)),
        WorkloadRun("c", 1, True, 10.0, (Attempt("M", "succeeded"),)),
        WorkloadRun("c", 2, True, 9.0, (OK_M,)),
    ]
    s = summarize(runs)
    assert (s.workloads, s.first_run_succeeded, s.first_run_out_of_memory) == (3, 2, 2)
    assert (s.second_run_succeeded, s.second_run_out_of_memory) == (3, 1)
    # Only a first run that was recovered from an OOM counts towards what recovery added.
    assert s.recovery_added_s == [30.0]
    assert s.median_recovery_added_s == 30.0
    assert s.first_run_success_rate == 2 / 3
    assert runs[0].path() == "S: out of memory -> M: succeeded"
    assert exit_code(runs) == 1
    assert exit_code([r for r in runs if r.ok]) == 0
    assert exit_code([]) == 1


def test_the_fleet_is_the_product_default_with_two_memory_sizes() -> None:
    settings = Settings.model_validate(tomllib.loads(fleet_toml()))
    assert settings.autoscaler.enabled and settings.autoscaler.mode == "performance"
    assert settings.pool.clusters == ["S"]
    assert settings.sizes["S"].memory_mb < settings.sizes["M"].memory_mb


def test_workloads_are_chosen_by_name() -> None:
    assert parse([]).workloads == list(WORKLOADS)
    assert parse(["--workloads", "huge-array"]).workloads == ["huge-array"]
