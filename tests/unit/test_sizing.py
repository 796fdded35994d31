"""policy/sizing.py: the memory floor a workload learns from running a cluster out of memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.policy.sizing import SizedRun, memory_floor_mb

MB = 1024 * 1024
OOM_ON_S = SizedRun(1024, out_of_memory=True)
OK_ON_M = SizedRun(4096, out_of_memory=False, peak_execution_memory=1500 * MB)


def test_no_oom_no_floor_and_one_oom_sets_it() -> None:
    assert memory_floor_mb([]) == 0
    assert memory_floor_mb([OK_ON_M, OK_ON_M]) == 0
    assert memory_floor_mb([OK_ON_M, OOM_ON_S]) == 1024  # the second run goes straight past S
    assert memory_floor_mb([SizedRun(4096, True), OOM_ON_S]) == 4096  # failed on M too: past M


def test_the_floor_drifts_down_after_many_runs_well_within_the_size() -> None:
    light = SizedRun(4096, False, peak_execution_memory=100 * MB)  # S's budget is ~614 MB
    assert memory_floor_mb([light] * 9 + [OOM_ON_S]) == 1024  # not yet
    assert memory_floor_mb([light] * 10 + [OOM_ON_S]) == 0  # tried on S again
    assert memory_floor_mb([OK_ON_M] * 10 + [OOM_ON_S]) == 1024  # still needs the memory


@given(st.lists(st.builds(SizedRun, st.sampled_from([1024, 2048, 4096]), st.booleans(), st.integers(0, 5000 * MB)),
                max_size=20))
def test_the_floor_is_zero_or_a_size_that_ran_out(runs) -> None:
    floor = memory_floor_mb(runs)
    assert floor == 0 or floor in {r.memory_mb for r in runs if r.out_of_memory}
    if runs and runs[0].out_of_memory:  # the newest run ran out: never drifted away
        assert floor >= runs[0].memory_mb
