"""Which cluster owns which operation and which error, and the record of every query.

ReattachExecute, ReleaseExecute, Interrupt(operation), GetStatus and FetchErrorDetails must reach
the cluster that owns the operation or error; these bounded maps remember the owner.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from sparkfleet.clock import Clock
from sparkfleet.errors import QuotaExceeded
from sparkfleet.gateway.user_limits import PerUserLimit
from sparkfleet.store import Database
from sparkfleet.store.queries import find_query, record_query_end, record_query_start

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """An insertion-ordered map that forgets its oldest entries past ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Operation:
    """One ExecutePlan as the gateway tracks it."""

    id: str
    session_key: tuple[str, str]
    cluster_id: str
    kind: str
    submitted_mono: float
    response_bytes: int = 0
    # Result messages (anything but progress reports) handed to the client; a re-run is invisible
    # only while this is zero.
    responses_forwarded: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # Session-state changes to apply once the operation succeeds (journal entries, pins), and
    # the request (to replay it elsewhere, or to re-run it after its cluster is lost).
    changes: list[Any] = field(default_factory=list)
    request: bytes = b""
    # What the query does to the outside world (plan/writes.py): decides whether it may be re-run.
    intent: Any = None
    # What placement knew of it (gateway/admission.QueryTraits): fingerprint, profile, estimate.
    traits: Any = None
    # Monotonic time its current attempt started running on a cluster (None while queued).
    started_mono: float | None = None
    # Set when the gateway itself stops the query (watchdog): the error the client gets instead.
    cancel_reason: str = ""
    reclassified: bool = False
    placement_reason: str = ""
    # Its runtime (gateway/versions.py): where a suspect failure runs again ("": nowhere), and,
    # once it did, the failed run (gateway/versions.FailedRun).
    blink_to: str = ""
    blinked: Any = None
    probing: bool = False  # a pinned workload tried on a newer runtime


class OperationRegistry:
    def __init__(self, db: Database, clock: Clock, capacity: int = 200_000, max_per_user: int = 1000) -> None:
        self._db = db
        self._clock = clock
        # Operations one user may have queued, running or not yet released at once.
        self._per_user = PerUserLimit(max_per_user, lambda user_id, limit: QuotaExceeded(
            f"user {user_id[:64]!r} already has {limit} operations queued, running or not yet "
            "released (gateway.max_operations_per_user); wait for some to finish, or interrupt them",
            "gateway.max_operations_per_user",
        ))
        self._owners: BoundedMap[tuple[str, str, str], str] = BoundedMap(capacity)
        self._error_owners: BoundedMap[str, str] = BoundedMap(capacity)
        # Operations not settled yet: a reattachable one outlives the stream that started it.
        self._active: dict[tuple[str, str, str], Operation] = {}
        self._finished_listeners: list[Callable[[Operation], None]] = []
        self._placed_listeners: list[Callable[[Operation], None]] = []

    @property
    def clock(self) -> Clock:
        return self._clock

    # ---- ownership ---------------------------------------------------------------------------

    def owner(self, session_key: tuple[str, str], operation_id: str) -> str | None:
        return self._owners.get((*session_key, operation_id))

    def set_owner(self, session_key: tuple[str, str], operation_id: str, cluster_id: str) -> None:
        self._owners[(*session_key, operation_id)] = cluster_id

    def forget(self, session_key: tuple[str, str], operation_id: str) -> None:
        self._owners.pop((*session_key, operation_id))

    def active(self, session_key: tuple[str, str], operation_id: str) -> Operation | None:
        return self._active.get((*session_key, operation_id))

    def running(self) -> list[Operation]:
        return list(self._active.values())

    def check_user_limit(self, user_id: str) -> None:
        """QuotaExceeded if ``user_id`` may not start another operation now."""
        self._per_user.check(user_id)

    def error_owner(self, error_id: str) -> str | None:
        return self._error_owners.get(error_id)

    def set_error_owner(self, error_id: str, cluster_id: str) -> None:
        self._error_owners[error_id] = cluster_id

    # ---- query records -----------------------------------------------------------------------

    def started(
        self,
        operation_id: str,
        session_key: tuple[str, str],
        kind: str,
        intent: str = "",
        traits: Any = None,
    ) -> Operation:
        """A new ExecutePlan, recorded as queued until :meth:`placed`; QuotaExceeded if its user
        already has ``max_per_user`` operations that are not settled."""
        self.check_user_limit(session_key[0])
        op = Operation(operation_id, session_key, "", kind, self._clock.monotonic(), traits=traits)
        previous = self._active.get((*session_key, operation_id))
        if previous is not None:  # the client re-sent it (same id): the old record is superseded
            self.finished(previous, "cancelled", "", reason="re-sent by the client with the same operation id")
        self._active[(*session_key, operation_id)] = op
        self._per_user.add(session_key[0])
        estimate = getattr(traits, "estimate", None)
        record_query_start(
            self._db,
            {
                "id": operation_id,
                "session_id": session_key[1],
                "user_id": session_key[0],
                "kind": kind,
                "state": "queued",
                "intent": intent,
                "fingerprint": getattr(traits, "fingerprint", None) or None,
                "profile": traits.profile.value if traits is not None else None,
                "estimate": estimate.describe() if estimate is not None else None,
                "submitted_at": self._clock.now(),
            },
        )
        return op

    def placed(self, op: Operation, cluster_id: str, runtime: str, placement_reason: str) -> None:
        """The operation runs on ``cluster_id`` from now on (its first attempt, or a retry)."""
        op.cluster_id = cluster_id
        op.placement_reason = placement_reason
        op.started_mono = self._clock.monotonic()
        self.set_owner(op.session_key, op.id, cluster_id)
        record_query_end(
            self._db, op.id,
            {"state": "running", "cluster_id": cluster_id, "runtime": runtime, "placement_reason": placement_reason},
        )
        for listener in self._placed_listeners:
            listener(op)

    def on_placed(self, listener: Callable[[Operation], None]) -> None:
        """Called each time an operation is placed (its first attempt and every retry)."""
        self._placed_listeners.append(listener)

    def on_finished(self, listener: Callable[[Operation], None]) -> None:
        """Called once per operation when it is settled (any final state)."""
        self._finished_listeners.append(listener)

    def note(self, op: Operation, fields: dict[str, Any]) -> None:
        """Update the stored record of a running operation (e.g. a watchdog decision)."""
        record_query_end(self._db, op.id, fields)

    def note_waiting(self, operation_id: str, reason: str) -> None:
        """Why a queued operation waits, on its record (``placement_reason`` until it is placed)."""
        if not operation_id.startswith("call-"):  # metadata calls have no record
            record_query_end(self._db, operation_id, {"placement_reason": f"waiting: {reason}"})

    def attempt_failed(
        self, op: Operation, runtime: str, outcome: str, error_class: str | None, reason: str
    ) -> None:
        """Record an attempt that failed and will be retried elsewhere."""
        op.attempts.append(
            {"cluster_id": op.cluster_id, "runtime": runtime, "outcome": outcome, "error_class": error_class, "reason": reason}
        )
        record_query_end(self._db, op.id, {"attempts": op.attempts})

    def past_query(self, operation_id: str) -> dict[str, Any] | None:
        """The stored record of an operation this gateway no longer tracks (e.g. before a restart)."""
        return find_query(self._db, operation_id)

    def finished(
        self,
        op: Operation,
        state: str,
        runtime: str,
        error_class: str | None = None,
        error_message: str | None = None,
        reason: str = "",
        attempt_error_class: str | None = None,
    ) -> None:
        """Settle the operation; its last attempt failed with ``attempt_error_class`` when that
        differs from the error the client gets (``error_class``)."""
        if self._active.get((*op.session_key, op.id)) is not op:
            return  # already settled (e.g. released after completing), or superseded
        del self._active[(*op.session_key, op.id)]
        self._per_user.remove(op.session_key[0])
        op.attempts.append(
            {
                "cluster_id": op.cluster_id,
                "runtime": runtime,
                "outcome": state,
                "error_class": attempt_error_class or error_class,
                "reason": reason,
            }
        )
        duration_ms = (self._clock.monotonic() - op.submitted_mono) * 1000.0
        record_query_end(
            self._db,
            op.id,
            {
                "state": state,
                "finished_at": self._clock.now(),
                "duration_ms": round(duration_ms, 3),
                "response_bytes": op.response_bytes,
                "error_class": error_class,
                "error_message": (error_message or None) and error_message[:2000],
                "attempts": op.attempts,
            },
        )
        for listener in self._finished_listeners:
            listener(op)
