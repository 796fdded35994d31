"""fleet/model.py: the cluster lifecycle is a table, and the table is the only way to move."""

from __future__ import annotations

import itertools

import pytest

from sparkfleet.errors import InvalidTransition, SparkfleetError
from sparkfleet.fleet.model import (
    ACCEPTS_QUERIES,
    ALIVE,
    ALLOWED_TRANSITIONS,
    ClusterState,
    ClusterView,
    FleetSnapshot,
    SizeClass,
    check_transition,
)

S = ClusterState
TERMINAL = {S.STOPPED, S.FAILED, S.LOST}
ALLOWED_EDGES = [(old, new) for old, exits in ALLOWED_TRANSITIONS.items() for new in exits]
FORBIDDEN_EDGES = [
    (old, new) for old, new in itertools.product(S, S) if new not in ALLOWED_TRANSITIONS[old]
]


def test_every_state_has_a_row() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(S)


def test_the_edges_are_the_documented_lifecycle() -> None:
    # Pinned on purpose: changing the lifecycle should be a deliberate, reviewed change.
    assert set(ALLOWED_EDGES) == {
        (S.STARTING, S.READY), (S.STARTING, S.FAILED), (S.STARTING, S.STOPPING),
        (S.READY, S.DRAINING), (S.READY, S.STOPPING), (S.READY, S.LOST),
        (S.DRAINING, S.READY), (S.DRAINING, S.STOPPING), (S.DRAINING, S.LOST),
        (S.STOPPING, S.STOPPED),
    }  # fmt: skip


@pytest.mark.parametrize(("old", "new"), ALLOWED_EDGES, ids=lambda s: s.value)
def test_allowed_edges_pass_with_their_reason(old: ClusterState, new: ClusterState) -> None:
    reason = check_transition("c-1", old, new)
    assert reason == ALLOWED_TRANSITIONS[old][new]
    assert isinstance(reason, str) and len(reason.split()) >= 3


@pytest.mark.parametrize(("old", "new"), FORBIDDEN_EDGES, ids=lambda s: s.value)
def test_every_other_pair_raises(old: ClusterState, new: ClusterState) -> None:
    with pytest.raises(InvalidTransition) as raised:
        check_transition("c-7", old, new)
    assert raised.value.message == f"cluster c-7: {old.value} -> {new.value} is not allowed"
    assert isinstance(raised.value, SparkfleetError)
    assert raised.value.error_class == "SPARKFLEET.INVALID_TRANSITION"


def test_all_pairs_are_covered_exactly_once() -> None:
    assert len(ALLOWED_EDGES) + len(FORBIDDEN_EDGES) == len(S) ** 2
    assert not set(ALLOWED_EDGES) & set(FORBIDDEN_EDGES)


@pytest.mark.parametrize("state", sorted(TERMINAL), ids=lambda s: s.value)
def test_terminal_states_have_no_exits(state: ClusterState) -> None:
    assert ALLOWED_TRANSITIONS[state] == {}
    for new in S:
        with pytest.raises(InvalidTransition):
            check_transition("c-1", state, new)


def test_no_state_moves_to_itself() -> None:
    assert all(old is not new for old, new in ALLOWED_EDGES)


def _reachable(start: ClusterState) -> set[ClusterState]:
    seen, todo = {start}, [start]
    while todo:
        for new in ALLOWED_TRANSITIONS[todo.pop()]:
            if new not in seen:
                seen.add(new)
                todo.append(new)
    return seen


@pytest.mark.parametrize("state", [s for s in S if s not in TERMINAL], ids=lambda s: s.value)
def test_every_live_state_can_end(state: ClusterState) -> None:
    # No cluster can get stuck: from anywhere not terminal, some terminal state is reachable.
    assert _reachable(state) & TERMINAL


def test_every_state_is_reachable_from_starting() -> None:
    assert _reachable(S.STARTING) == set(S)


def test_only_ready_clusters_take_queries_and_alive_means_not_ending() -> None:
    assert ACCEPTS_QUERIES == {S.READY}
    assert ALIVE == {S.STARTING, S.READY, S.DRAINING}
    assert not ALIVE & TERMINAL


def test_snapshot_ready_keeps_ready_clusters_in_order() -> None:
    size = SizeClass("S", 1, 1024)
    clusters = tuple(ClusterView(f"c-{i}", size, "rt", state, 0, 0) for i, state in enumerate([*S, *S]))
    ready = FleetSnapshot(clusters).ready()
    assert [c.id for c in ready] == [c.id for c in clusters if c.state is S.READY]
    assert FleetSnapshot().ready() == ()
