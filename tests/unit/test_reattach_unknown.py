"""gateway/attempts.py: a ReattachExecute for an operation this gateway run does not know."""

from __future__ import annotations

import uuid

from sparkfleet.clock import VirtualClock
from sparkfleet.errors import ClusterLost, InvalidHandle
from sparkfleet.gateway.attempts import not_found_for_reattach
from sparkfleet.gateway.operations import OperationRegistry
from sparkfleet.store import Database

ALICE = ("alice", "3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8")
BOB = ("bob", "0e1d2c3b-4a59-4687-9fed-cba987654321")


def test_a_write_left_running_by_a_restart_surfaces_only_to_its_own_session(db: Database, clock: VirtualClock) -> None:
    before_restart = OperationRegistry(db, clock)
    operation_id = str(uuid.uuid4())
    before_restart.started(operation_id, ALICE, "command", "write: append to table sales.orders")
    db.flush()
    after_restart = OperationRegistry(db, clock)
    lost = not_found_for_reattach(after_restart, ALICE, operation_id)
    assert isinstance(lost, ClusterLost) and "sales.orders" in lost.message
    # Anyone else asking about that id learns nothing of it: not found, like an id never used.
    other = not_found_for_reattach(after_restart, BOB, operation_id)
    assert isinstance(other, InvalidHandle) and other.error_class == "INVALID_HANDLE.OPERATION_NOT_FOUND"
    assert "sales.orders" not in other.message
    assert isinstance(not_found_for_reattach(after_restart, BOB, str(uuid.uuid4())), InvalidHandle)
