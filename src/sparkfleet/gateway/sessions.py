"""Virtual sessions: what the client sees (one stable server-side id) vs. sessions on clusters.

A client session is keyed like Spark keys it, by (user id, session id). The gateway answers with
its own ``server_side_session_id`` and keeps, per cluster the session has touched, the backend's
id, so requests carry the right observed id to each cluster and responses carry the stable one.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from dataclasses import dataclass, field

from sparkfleet.clock import Clock
from sparkfleet.errors import InvalidHandle, NoCapacity, PermissionDenied, QuotaExceeded
from sparkfleet.gateway.artifacts import ArtifactStore, stored_uploads
from sparkfleet.gateway.journal import ReplayCursor, SessionJournal
from sparkfleet.gateway.user_limits import PerUserLimit
from sparkfleet.store import Database
from sparkfleet.store.sessions import find_session, record_session, session_owners

# How often a session's last-activity time is written to the store (seconds).
_ACTIVITY_WRITE_INTERVAL_S = 5.0
_UUID_FORMAT = "00112233-4455-6677-8899-aabbccddeeff"


@dataclass
class BackendSession:
    """The session's twin on one cluster."""

    cluster_id: str
    # Learned from the cluster's first response; None until then.
    server_side_session_id: str | None = None


@dataclass
class VirtualSession:
    user_id: str  # the authenticated identity's user (auth.py), which owns the session
    session_id: str
    server_side_session_id: str
    created_at: float
    last_active_at: float
    tenant: str = "default"
    client_type: str = ""
    home_cluster_id: str | None = None
    backends: dict[str, BackendSession] = field(default_factory=dict)
    closed: bool = False
    journal: SessionJournal | None = None
    # Per cluster: how far its copy of the session has caught up with the journal.
    cursors: dict[str, ReplayCursor] = field(default_factory=dict)
    replay_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # State that only one cluster holds and no replay can rebuild. Per cluster, why the session
    # must stay there (cached data, a streaming query, a global temp view, ML models) ...
    pins: dict[str, str] = field(default_factory=dict)
    # ... and per checkpointed DataFrame (CachedRemoteRelation id), the cluster holding it.
    remote_relations: dict[str, str] = field(default_factory=dict)
    # The session's sparkfleet.* confs (gateway/options.py): the user's knobs, never sent to Spark.
    options: dict[str, str] = field(default_factory=dict)
    # Its cache/ uploads Spark could not read (gateway/local_data.py); None: not read from the journal yet.
    unreadable_cached_data: dict[str, str] | None = None
    # How the session behaves (for its latency profile): idle seconds before each recent query and
    # the bytes each returned, newest last; and when its last query ended (monotonic seconds).
    recent_gaps_s: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    recent_result_bytes: deque[int] = field(default_factory=lambda: deque(maxlen=16))
    last_query_ended_at: float | None = None
    queries_running: int = 0
    _written_activity_at: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.session_id)

    def backend(self, cluster_id: str) -> BackendSession:
        found = self.backends.get(cluster_id)
        if found is None:
            found = self.backends[cluster_id] = BackendSession(cluster_id)
        return found


def validate_session_id(session_id: str) -> None:
    try:
        parsed = uuid.UUID(session_id)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != session_id.lower():
        raise InvalidHandle(
            f"The handle {session_id!r} is invalid. Handle must be an UUID string of the format "
            f"'{_UUID_FORMAT}'.",
            "INVALID_HANDLE.FORMAT",
        )


class SessionRegistry:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        max_sessions: int = 100_000,
        artifacts: ArtifactStore | None = None,
        max_sessions_per_user: int = 1000,
    ) -> None:
        self._db = db
        self._clock = clock
        # The files behind AddArtifacts journal entries: shared with clones, deleted on release.
        self._artifacts = artifacts
        self._sessions: dict[tuple[str, str], VirtualSession] = {}
        self._max_sessions = max_sessions
        # Which user owns each session id this run has seen: another identity presenting it is refused.
        self._owners: dict[str, str] = {}
        self._open_per_user = PerUserLimit(max_sessions_per_user, lambda user_id, limit: QuotaExceeded(
            f"user {user_id!r} already has {limit} open sessions "
            "(gateway.max_sessions_per_user); stop unused ones (spark.stop()) first",
            "gateway.max_sessions_per_user",
        ))

    def __len__(self) -> int:
        return len(self._sessions)

    def open_count(self) -> int:
        return sum(1 for s in self._sessions.values() if not s.closed)

    def all(self) -> list[VirtualSession]:
        return list(self._sessions.values())

    def find(self, user_id: str, session_id: str) -> VirtualSession | None:
        return self._sessions.get((user_id, session_id))

    def resolve(
        self, user_id: str, session_id: str, client_type: str, observed_server_side_id: str, tenant: str = "default"
    ) -> VirtualSession:
        """The session a request belongs to, created on first sight, checked like Spark checks it.

        A session id belongs to the user that created it: anyone else presenting it is refused
        (PERMISSION_DENIED) and learns nothing of it.
        """
        session = self._sessions.get((user_id, session_id))
        now = self._clock.now()
        if session is None:
            self._check_owner(user_id, session_id)
        if session is None and observed_server_side_id:
            session = self._reload(user_id, session_id, tenant)
        if session is None:
            validate_session_id(session_id)
            if observed_server_side_id:
                # The client saw a server-side id we never issued: its server "restarted".
                raise InvalidHandle(
                    f"The handle {session_id} is invalid. The existing Spark server driver instance "
                    "has restarted. Please reconnect.",
                    "INVALID_HANDLE.SESSION_CHANGED",
                )
            self._evict_closed_if_full()
            self._open_per_user.check(user_id)
            session = VirtualSession(
                user_id=user_id,
                session_id=session_id,
                server_side_session_id=str(uuid.uuid4()),
                created_at=now,
                last_active_at=now,
                tenant=tenant,
                client_type=client_type,
            )
            session.journal = SessionJournal(self._db, self._clock, user_id, session_id)
            self._add(session)
            self.persist(session)
            return session
        if session.closed:
            raise InvalidHandle(
                f"The handle {session_id} is invalid. Session was closed.", "INVALID_HANDLE.SESSION_CLOSED"
            )
        if observed_server_side_id and observed_server_side_id != session.server_side_session_id:
            raise InvalidHandle(
                f"The handle {session_id} is invalid. The existing Spark server driver instance has "
                "restarted. Please reconnect.",
                "INVALID_HANDLE.SESSION_CHANGED",
            )
        session.last_active_at = now
        if now - session._written_activity_at >= _ACTIVITY_WRITE_INTERVAL_S:
            self.persist(session)
        return session

    def _check_owner(self, user_id: str, session_id: str) -> None:
        owner = self._owners.get(session_id)
        if owner is None:
            owners = session_owners(self._db, session_id)  # sessions of an earlier gateway run
            owner = owners[0] if owners and user_id not in owners else None
        if owner is not None and owner != user_id:
            raise PermissionDenied(
                f"session {session_id[:64]!r} belongs to another user; it cannot be used as {user_id!r}. "
                "Start your own session (a new SparkSession)."
            )

    def _add(self, session: VirtualSession) -> None:
        self._sessions[session.key] = session
        self._owners[session.session_id] = session.user_id
        if not session.closed:
            self._open_per_user.add(session.user_id)

    def _reload(self, user_id: str, session_id: str, tenant: str) -> VirtualSession | None:
        """A session this gateway issued before it restarted, rebuilt from the store.

        Only clients that already saw a server-side id come here. Its clusters are gone with the
        previous run, so every cluster starts with an empty copy and catches up from the journal.
        """
        row = find_session(self._db, user_id, session_id)
        if row is None or row["state"] != "active":
            return None  # a released session is as gone as on a restarted Spark server
        session = VirtualSession(
            user_id=user_id,
            session_id=session_id,
            server_side_session_id=row["server_side_session_id"],
            created_at=row["created_at"],
            last_active_at=row["last_active_at"],
            tenant=row.get("tenant") or tenant,
            client_type=row["client_type"],
            options=json.loads(row.get("options") or "{}"),
        )
        session.journal = SessionJournal.load(self._db, self._clock, user_id, session_id)
        self._add(session)
        return session

    def adopt_clone(
        self, source: VirtualSession, new_session_id: str, cluster_id: str, backend_server_side_id: str
    ) -> VirtualSession:
        """Register the session a CloneSession created on ``cluster_id``."""
        now = self._clock.now()
        clone = VirtualSession(
            user_id=source.user_id,
            session_id=new_session_id,
            tenant=source.tenant,
            server_side_session_id=str(uuid.uuid4()),
            created_at=now,
            last_active_at=now,
            client_type=source.client_type,
            home_cluster_id=cluster_id,
            options=dict(source.options),
        )
        clone.backend(cluster_id).server_side_session_id = backend_server_side_id or None
        # The clone starts with the source's state on the cloning cluster, and its journal.
        clone.journal = SessionJournal(self._db, self._clock, clone.user_id, clone.session_id)
        if source.journal is not None:
            for entry in source.journal.entries:
                clone.journal.copy_entry(entry)
            if self._artifacts is not None:
                self._artifacts.share(source.key, clone.key, stored_uploads(source.journal.entries))
        source_cursor = source.cursors.get(cluster_id)
        if source_cursor is not None:
            clone.cursors[cluster_id] = ReplayCursor(source_cursor.seq, set(source_cursor.held))
        self._check_owner(clone.user_id, clone.session_id)
        self._add(clone)
        self.persist(clone)
        return clone

    def close(self, session: VirtualSession, forget: bool = False) -> None:
        """Mark the session released; ``forget`` lets the same id start afresh (allow_reconnect)."""
        if not session.closed:
            self._open_per_user.remove(session.user_id)
        session.closed = True
        self.persist(session)
        if session.journal is not None:
            session.journal.forget()
        if self._artifacts is not None:
            # Clones hold their own links to shared files: this removes only this session's.
            self._artifacts.delete_session(session.user_id, session.session_id)
        if forget:
            self._sessions.pop(session.key, None)

    def persist(self, session: VirtualSession) -> None:
        session._written_activity_at = session.last_active_at
        record_session(
            self._db,
            {
                "session_id": session.session_id,
                "user_id": session.user_id,
                "tenant": session.tenant,
                "server_side_session_id": session.server_side_session_id,
                "state": "closed" if session.closed else "active",
                "client_type": session.client_type,
                "home_cluster_id": session.home_cluster_id,
                "created_at": session.created_at,
                "last_active_at": session.last_active_at,
                "options": json.dumps(session.options, sort_keys=True),
            },
        )

    def _evict_closed_if_full(self) -> None:
        if len(self._sessions) < self._max_sessions:
            return
        for key, session in list(self._sessions.items()):
            if session.closed:
                del self._sessions[key]
                if self._owners.get(session.session_id) == session.user_id:
                    del self._owners[session.session_id]
        if len(self._sessions) >= self._max_sessions:
            raise NoCapacity(
                f"the gateway holds {len(self._sessions)} open sessions, its limit; "
                "stop unused sessions (spark.stop()) and try again"
            )
