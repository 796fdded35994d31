"""bench/upgrade_workloads.py and bench/upgrade_results.py: the suite and its verdicts (pure)."""

from __future__ import annotations

from sparkfleet.bench.upgrade_results import Run, exit_code, summarize
from sparkfleet.bench.upgrade_workloads import INJECTED, SAFE, USERS, workloads


def test_the_suite_has_over_200_distinct_workloads_with_a_known_injected_subset() -> None:
    suite = workloads({f"q{i:02d}": f"SELECT {i}" for i in range(1, 23)})
    assert len(suite) >= 200
    assert len({w.name for w in suite}) == len(suite) and len({w.sql for w in suite}) == len(suite)
    kinds = {k: sum(1 for w in suite if w.kind == k) for k in (SAFE, INJECTED, USERS)}
    assert kinds[INJECTED] >= 20 and kinds[USERS] >= 3 and sum(kinds.values()) == len(suite)
    assert sum(w.tpch for w in suite) == 22


def _run(workload: str, kind: str, phase: str, ok: bool = True, seconds: float = 0.1, blinked: bool = False,
         fingerprint: str = "") -> Run:
    return Run(workload, kind, phase, ok, seconds, "" if ok else "boom", (fingerprint or f"fp-{workload}",),
               ("new",), blinked)


def test_the_summary_counts_found_missed_and_false_pins_and_the_added_latency() -> None:
    runs = [
        _run("inj-1", INJECTED, "general", seconds=1.5, blinked=True),
        _run("inj-1", INJECTED, "pinned", seconds=0.5),
        _run("inj-2", INJECTED, "general", ok=False),  # a client saw the upgrade break it
        _run("safe-1", SAFE, "general"),
        _run("users-1", USERS, "general", ok=False),
    ]
    s = summarize(runs, pinned={"fp-inj-1", "fp-safe-1"})
    assert (s.workloads, s.injected, s.found, s.missed) == (4, 2, ["inj-1"], ["inj-2"])
    assert s.false_pins == ["fp-safe-1"] and s.pins == 2 and s.blinks == 1
    assert s.upgrade_failures == ["inj-2 (general): boom"] and s.users_errors_kept == 1
    assert s.added_latency_s == [1.0]
    assert exit_code(s) == 1
    clean = summarize([_run("inj-1", INJECTED, "general", blinked=True), _run("users-1", USERS, "general", ok=False)],
                      pinned={"fp-inj-1"})
    assert exit_code(clean) == 0 and clean.missed == [] and clean.false_pins == []
