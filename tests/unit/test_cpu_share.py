"""The CPU-sharing policy over synthetic fleets, and the mechanism on a real child process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.fleet.cpu_control import apply_cpu_share, autogroup_nice, can_restore_priority, process_tree_threads, thread_share
from sparkfleet.fleet.model import ClusterState, ClusterView, Profile, RunningWork, SizeClass
from sparkfleet.policy.cpu_share import CpuShareSettings, plan_cpu_shares

NOW = 1000.0
SETTINGS = CpuShareSettings()


def work(profile: Profile, n: int = 0) -> RunningWork:
    return RunningWork(f"q-{profile.value}-{n}", profile, 1.0, 0, NOW - 1)


def view(cid: str, cpus: tuple[int, ...], *items: RunningWork, batch_ended_at: float | None = None,
         state: ClusterState = ClusterState.READY) -> ClusterView:
    return ClusterView(cid, SizeClass("S", len(cpus), 1024), "4.3.0", state, len(items), 0, tuple(items),
                       batch_ended_at=batch_ended_at, cpus=cpus)


@st.composite
def fleets(draw: st.DrawFn) -> list[ClusterView]:
    """Clusters on disjoint CPU sets, each idle, lingering after batch work, or running work."""
    count = draw(st.integers(1, 5))
    clusters = []
    next_cpu = 0
    for n in range(count):
        cores = draw(st.integers(1, 3))
        cpus = tuple(range(next_cpu, next_cpu + cores))
        next_cpu += cores
        items = [work(p, i) for i, p in enumerate(draw(st.lists(st.sampled_from(Profile), max_size=3)))]
        ended = draw(st.one_of(st.none(), st.floats(NOW - 60, NOW)))
        state = draw(st.sampled_from([ClusterState.READY, ClusterState.READY, ClusterState.STARTING]))
        clusters.append(view(f"c{n}", cpus, *items, batch_ended_at=ended, state=state))
    return clusters


def _batch_only(c: ClusterView) -> bool:
    profiles = {w.profile for w in c.work}
    if profiles:
        return profiles == {Profile.BATCH}
    return c.batch_ended_at is not None and NOW - c.batch_ended_at < SETTINGS.batch_linger_s


@given(fleets())
def test_normal_priority_never_runs_on_another_normal_clusters_cpus_and_batch_yields_everywhere(clusters) -> None:
    shares = plan_cpu_shares(clusters, NOW, SETTINGS)
    running = [c for c in clusters if c.state is ClusterState.READY]
    assert set(shares) == {c.id for c in running}
    every_cpu = tuple(sorted({cpu for c in running for cpu in c.cpus}))
    for c in running:
        share = shares[c.id]
        assert set(c.cpus) <= set(share.cpus)  # a cluster always keeps its own CPUs
        if _batch_only(c):
            assert share.nice == SETTINGS.batch_nice and share.cpus == every_cpu
        else:
            assert share.nice == 0
            for other in running:
                if other.id != c.id and not _batch_only(other):
                    # Interactive and idle clusters never intrude on each other's own CPUs.
                    assert not set(other.cpus) & set(share.cpus)


@given(fleets())
def test_sharing_off_keeps_every_cluster_on_its_own_cpus_at_normal_priority(clusters) -> None:
    shares = plan_cpu_shares(clusters, NOW, CpuShareSettings(enabled=False))
    for c in clusters:
        if c.id in shares:
            assert shares[c.id].cpus == c.cpus and shares[c.id].nice == 0


def test_etl_beside_interactive_work_the_picture_bench_mixed_runs() -> None:
    etl, analyst = view("a", (0,), work(Profile.BATCH)), view("b", (1,), work(Profile.INTERACTIVE))
    shares = plan_cpu_shares([etl, analyst], NOW)
    assert (shares["a"].cpus, shares["a"].nice) == ((0, 1), 19)
    assert (shares["b"].cpus, shares["b"].nice) == ((0, 1), 0)
    # Between interactive queries the analyst's cluster keeps to its own CPU; the ETL still has both.
    shares = plan_cpu_shares([etl, dataclasses.replace(analyst, work=())], NOW)
    assert (shares["b"].cpus, shares["b"].nice) == ((1,), 0)
    assert (shares["a"].cpus, shares["a"].nice) == ((0, 1), 19)


def test_a_pipeline_between_queries_keeps_its_share_until_the_linger_ends() -> None:
    between = view("a", (0,), batch_ended_at=NOW - 1)
    assert plan_cpu_shares([between, view("b", (1,))], NOW)["a"].nice == 19
    assert plan_cpu_shares([between, view("b", (1,))], NOW + SETTINGS.batch_linger_s)["a"].cpus == (0,)


def test_a_cluster_running_both_kinds_of_work_stays_at_normal_priority() -> None:
    mixed = view("a", (0,), work(Profile.BATCH), work(Profile.INTERACTIVE, 1))
    share = plan_cpu_shares([mixed, view("b", (1,))], NOW)["a"]
    assert (share.cpus, share.nice) == ((0,), 0)


# ---- the mechanism, on a real child process -------------------------------------------------------

_CHILD = "import threading, time\nfor _ in range(3): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\nprint('up', flush=True)\ntime.sleep(60)\n"


@pytest.fixture
def child():
    # In a session of its own, as clusters are: its scheduling autogroup is its own to set.
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_every_thread_of_a_process_gets_the_cpu_set_and_nice_value(child) -> None:
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    threads = process_tree_threads(child.pid)
    assert len(threads) == 4  # the main thread and three sleepers
    assert apply_cpu_share(child.pid, cpus[:1], 19) == 4
    assert {thread_share(t) for t in threads} == {(cpus[:1], 19)}
    assert autogroup_nice(child.pid) in (19, None)  # None: the kernel has no autogroups
    if can_restore_priority():
        assert apply_cpu_share(child.pid, cpus, 0) == 4
        assert {thread_share(t) for t in threads} == {(cpus, 0)}
        assert autogroup_nice(child.pid) in (0, None)
    else:
        with pytest.raises(PermissionError):
            apply_cpu_share(child.pid, cpus, 0)


def test_a_process_that_is_gone_has_no_threads_to_set() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert process_tree_threads(proc.pid) == []
    assert apply_cpu_share(proc.pid, (0,), 5) == 0
