"""The CPU-sharing policy over synthetic fleets."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

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
def test_batch_only_clusters_take_only_idle_cpu_time_and_the_rest_compete_by_their_cores(clusters) -> None:
    shares = plan_cpu_shares(clusters, NOW, SETTINGS)
    running = [c for c in clusters if c.state is ClusterState.READY]
    assert set(shares) == {c.id for c in running}
    for c in running:
        assert shares[c.id].shares == 1024 * c.size.cores
        assert shares[c.id].idle == _batch_only(c)


@given(fleets())
def test_sharing_off_leaves_every_cluster_at_the_weight_of_its_cores(clusters) -> None:
    shares = plan_cpu_shares(clusters, NOW, CpuShareSettings(enabled=False))
    for c in clusters:
        if c.id in shares:
            assert shares[c.id].shares == 1024 * c.size.cores and not shares[c.id].idle
            assert "CPU sharing is off" in shares[c.id].reason


def test_etl_beside_interactive_work_the_picture_bench_mixed_runs() -> None:
    etl, analyst = view("a", (0,), work(Profile.BATCH)), view("b", (1,), work(Profile.INTERACTIVE))
    shares = plan_cpu_shares([etl, analyst], NOW)
    assert shares["a"].idle and "only batch work" in shares["a"].reason
    assert not shares["b"].idle and shares["b"].reason.startswith("interactive")
    # Between interactive queries the analyst's cluster is idle, at its own weight; the ETL stays behind.
    shares = plan_cpu_shares([etl, dataclasses.replace(analyst, work=())], NOW)
    assert not shares["b"].idle and shares["b"].reason.startswith("idle")
    assert shares["a"].idle


def test_a_pipeline_between_queries_keeps_its_share_until_the_linger_ends() -> None:
    between = view("a", (0,), batch_ended_at=NOW - 1)
    assert plan_cpu_shares([between, view("b", (1,))], NOW)["a"].idle
    assert not plan_cpu_shares([between, view("b", (1,))], NOW + SETTINGS.batch_linger_s)["a"].idle


def test_a_cluster_running_both_kinds_of_work_competes_at_its_full_weight() -> None:
    mixed = view("a", (0, 1), work(Profile.BATCH), work(Profile.INTERACTIVE, 1))
    share = plan_cpu_shares([mixed, view("b", (1,))], NOW)["a"]
    assert (share.shares, share.idle) == (2048, False)
