"""gateway/sessions.py: one stable server-side id per client session, checked as Spark checks it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkfleet.clock import VirtualClock
from sparkfleet.errors import InvalidHandle, NoCapacity, PermissionDenied, QuotaExceeded
from sparkfleet.gateway.sessions import SessionRegistry, validate_session_id
from sparkfleet.store import Database
from sparkfleet.store.sessions import list_sessions

SID = "3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"
OTHER_SID = "0e1d2c3b-4a59-4687-9fed-cba987654321"


@pytest.fixture
def registry(db: Database, clock: VirtualClock) -> SessionRegistry:
    return SessionRegistry(db, clock)


def _rows(db: Database) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    return {(r["user_id"], r["session_id"]): r for r in list_sessions(db)}


def test_a_new_session_gets_a_stable_server_side_id(registry: SessionRegistry, clock: VirtualClock) -> None:
    first = registry.resolve("alice", SID, "_SPARK_CONNECT_PYTHON", "")
    assert str(uuid.UUID(first.server_side_session_id)) == first.server_side_session_id
    assert first.server_side_session_id != SID
    clock.advance(30)
    again = registry.resolve("alice", SID, "_SPARK_CONNECT_PYTHON", first.server_side_session_id)
    assert again is first
    assert again.server_side_session_id == first.server_side_session_id
    assert (again.created_at, again.last_active_at) == (clock.now() - 30, clock.now())
    assert len(registry) == 1 and registry.find("alice", SID) is first


def test_a_session_id_belongs_to_the_user_that_created_it(
    registry: SessionRegistry, db: Database, clock: VirtualClock
) -> None:
    alice = registry.resolve("alice", SID, "", "", tenant="t1")
    other = registry.resolve("alice", OTHER_SID, "", "")
    assert alice.tenant == "t1" and other.tenant == "default"
    # Another identity presenting alice's id is refused, with or without the server-side id it saw.
    for observed in ("", alice.server_side_session_id):
        with pytest.raises(PermissionDenied, match="belongs to another user") as refused:
            registry.resolve("bob", SID, "", observed)
        assert alice.server_side_session_id not in refused.value.message
    assert {s.key for s in registry.all()} == {("alice", SID), ("alice", OTHER_SID)}
    assert _rows(db)[("alice", SID)]["tenant"] == "t1"
    # After a gateway restart the store still knows the owner.
    restarted = SessionRegistry(db, clock)
    with pytest.raises(PermissionDenied):
        restarted.resolve("bob", SID, "", "")
    assert restarted.resolve("alice", SID, "", alice.server_side_session_id).tenant == "t1"


def test_open_sessions_per_user_are_limited(db: Database, clock: VirtualClock) -> None:
    registry = SessionRegistry(db, clock, max_sessions_per_user=2)
    first = registry.resolve("alice", SID, "", "")
    registry.resolve("alice", OTHER_SID, "", "")
    third = str(uuid.uuid4())
    with pytest.raises(QuotaExceeded, match="gateway.max_sessions_per_user") as refused:
        registry.resolve("alice", third, "", "")
    assert refused.value.grpc_code.name == "RESOURCE_EXHAUSTED"
    registry.resolve("bob", str(uuid.uuid4()), "", "")  # other users are not affected
    registry.close(first)
    registry.resolve("alice", third, "", "")  # a released session frees its place


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-uuid",
        "",
        SID.replace("-", ""),  # hex without dashes: uuid.UUID accepts it, Spark's format does not
        "{" + SID + "}",
        "urn:uuid:" + SID,
        SID + " ",
        SID[:-1],
    ],
)
def test_a_session_id_that_is_not_a_uuid_is_an_invalid_handle(
    registry: SessionRegistry, db: Database, bad: str
) -> None:
    with pytest.raises(InvalidHandle) as raised:
        registry.resolve("alice", bad, "", "")
    error = raised.value
    assert error.error_class == "INVALID_HANDLE.FORMAT"
    assert repr(bad) in error.message and "00112233-4455-6677-8899-aabbccddeeff" in error.message
    assert (error.sql_state, error.spark_exception_class) == ("HY000", "org.apache.spark.SparkSQLException")
    assert len(registry) == 0 and list_sessions(db) == []


_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)
_near_uuids = st.uuids().map(str).flatmap(
    lambda u: st.sampled_from([u, u.upper(), u.replace("-", ""), u[:-1], u + "0", "{" + u + "}", u.replace("-", "_")])
)


@given(st.one_of(st.text(max_size=40), _near_uuids, st.from_regex(_CANONICAL, fullmatch=True)))
def test_only_canonical_uuids_pass_validation(text: str) -> None:
    if _CANONICAL.fullmatch(text):
        validate_session_id(text)
    else:
        with pytest.raises(InvalidHandle, match="Handle must be an UUID"):
            validate_session_id(text)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.uuids().map(str), st.text(max_size=10), st.integers(1, 5))
def test_any_uuid_session_keeps_one_id_across_requests(
    tmp_path: Path, session_id: str, user: str, requests: int
) -> None:
    db = Database(tmp_path / f"{uuid.uuid4()}.db").open()  # one store per example: ids recur across examples
    registry = SessionRegistry(db, VirtualClock())
    ids = set()
    observed = ""
    for _ in range(requests):
        observed = registry.resolve(user, session_id, "", observed).server_side_session_id
        ids.add(observed)
    db.close()
    assert len(ids) == 1


def test_an_unknown_session_with_an_observed_id_has_changed(registry: SessionRegistry, db: Database) -> None:
    # The client saw a server-side id this gateway never issued (e.g. before a restart).
    with pytest.raises(InvalidHandle) as raised:
        registry.resolve("alice", SID, "", "1b7c9f8e-0000-4000-8000-000000000000")
    assert raised.value.error_class == "INVALID_HANDLE.SESSION_CHANGED"
    assert "Please reconnect" in raised.value.message
    assert len(registry) == 0 and list_sessions(db) == []


def test_a_mismatched_observed_id_has_changed(registry: SessionRegistry) -> None:
    session = registry.resolve("alice", SID, "", "")
    with pytest.raises(InvalidHandle) as raised:
        registry.resolve("alice", SID, "", str(uuid.uuid4()))
    assert raised.value.error_class == "INVALID_HANDLE.SESSION_CHANGED"
    assert SID in raised.value.message
    # The session itself is unharmed.
    assert registry.resolve("alice", SID, "", session.server_side_session_id) is session


def test_a_closed_session_is_closed(registry: SessionRegistry, db: Database) -> None:
    session = registry.resolve("alice", SID, "", "")
    registry.close(session)
    for observed in ("", session.server_side_session_id):
        with pytest.raises(InvalidHandle) as raised:
            registry.resolve("alice", SID, "", observed)
        assert raised.value.error_class == "INVALID_HANDLE.SESSION_CLOSED"
    assert _rows(db)[("alice", SID)]["state"] == "closed"


def test_forgetting_a_closed_session_lets_its_id_start_afresh(registry: SessionRegistry, db: Database) -> None:
    old = registry.resolve("alice", SID, "", "")
    registry.close(old, forget=True)
    assert registry.find("alice", SID) is None
    # A client that still holds the old server-side id learns that the session changed...
    with pytest.raises(InvalidHandle) as raised:
        registry.resolve("alice", SID, "", old.server_side_session_id)
    assert raised.value.error_class == "INVALID_HANDLE.SESSION_CHANGED"
    # ...and a reconnecting client (no observed id yet) gets a fresh session.
    new = registry.resolve("alice", SID, "", "")
    assert new is not old and not new.closed
    assert new.server_side_session_id != old.server_side_session_id
    row = _rows(db)[("alice", SID)]
    assert (row["state"], row["server_side_session_id"]) == ("active", new.server_side_session_id)


def test_records_reach_the_store(registry: SessionRegistry, db: Database, clock: VirtualClock) -> None:
    session = registry.resolve("alice", SID, "_SPARK_CONNECT_PYTHON", "")
    assert _rows(db) == {
        ("alice", SID): {
            "session_id": SID,
            "user_id": "alice",
            "server_side_session_id": session.server_side_session_id,
            "state": "active",
            "client_type": "_SPARK_CONNECT_PYTHON",
            "home_cluster_id": None,
            "created_at": clock.now(),
            "last_active_at": clock.now(),
            "options": "{}",
            "tenant": "default",
        }
    }
    session.home_cluster_id = "c-1"
    registry.persist(session)
    assert _rows(db)[("alice", SID)]["home_cluster_id"] == "c-1"


def test_activity_is_written_at_most_every_five_seconds(
    registry: SessionRegistry, db: Database, clock: VirtualClock
) -> None:
    session = registry.resolve("alice", SID, "", "")
    created = clock.now()
    clock.advance(4)
    registry.resolve("alice", SID, "", "")
    assert session.last_active_at == created + 4  # in memory at once...
    assert _rows(db)[("alice", SID)]["last_active_at"] == created  # ...on disk a little later
    clock.advance(1)
    registry.resolve("alice", SID, "", "")
    assert _rows(db)[("alice", SID)]["last_active_at"] == created + 5


def test_a_full_registry_makes_room_by_dropping_closed_sessions(db: Database, clock: VirtualClock) -> None:
    registry = SessionRegistry(db, clock, max_sessions=2)
    first = registry.resolve("u", SID, "", "")
    registry.resolve("u", OTHER_SID, "", "")
    third = str(uuid.uuid4())
    with pytest.raises(NoCapacity, match="2 open sessions"):
        registry.resolve("u", third, "", "")
    registry.close(first)
    assert registry.resolve("u", third, "", "").session_id == third
    assert registry.find("u", SID) is None and len(registry) == 2


def test_an_adopted_clone_gets_its_own_id_and_the_clusters_backend_id(
    registry: SessionRegistry, db: Database
) -> None:
    source = registry.resolve("alice", SID, "_SPARK_CONNECT_PYTHON", "")
    clone = registry.adopt_clone(source, OTHER_SID, "c-2", "backend-server-id")
    assert clone.key == ("alice", OTHER_SID)
    assert clone.server_side_session_id not in (source.server_side_session_id, "backend-server-id")
    assert clone.home_cluster_id == "c-2"
    assert clone.backend("c-2").server_side_session_id == "backend-server-id"
    assert clone.client_type == source.client_type
    assert registry.resolve("alice", OTHER_SID, "", clone.server_side_session_id) is clone
    assert _rows(db)[("alice", OTHER_SID)]["home_cluster_id"] == "c-2"


def test_backend_twins_are_created_on_first_use(registry: SessionRegistry) -> None:
    session = registry.resolve("alice", SID, "", "")
    twin = session.backend("c-1")
    assert (twin.cluster_id, twin.server_side_session_id) == ("c-1", None)
    assert session.backend("c-1") is twin
