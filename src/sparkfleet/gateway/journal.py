"""The session journal: what to replay so a cluster's copy of a session catches up.

Each state-changing request becomes one entry per effect key (see ``plan/state.py``). A newer
entry for a key supersedes older ones; a removal (DROP VIEW, unset, RESET) stays as a tombstone
so that clusters which hold the removed state receive the removal. Entries are kept in memory in
order and mirrored to the store, so a restarted gateway rebuilds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sparkfleet.clock import Clock
from sparkfleet.plan.state import Effect
from sparkfleet.store import Database
from sparkfleet.store.journal import append_entry, delete_entries, delete_session, session_entries

# A key ending in this removes every key that starts with what precedes it (RESET -> "conf:*").
WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    key: str
    removes: bool
    rpc: str
    payload: bytes


def _covers(removal_key: str, key: str) -> bool:
    if removal_key.endswith(WILDCARD):
        return key.startswith(removal_key[:-1])
    return key == removal_key


@dataclass
class ReplayCursor:
    """How far one cluster's copy of a session has caught up, and which keys it holds."""

    seq: int = 0
    held: set[str] = field(default_factory=set)


def entries_to_replay(entries: list[Entry], cursor: ReplayCursor) -> list[Entry]:
    """The entries a cluster still needs, in order: everything after its cursor, except removals
    of state it never received (replaying those could fail, e.g. DROP VIEW of an unknown view)."""
    needed = []
    held = set(cursor.held)
    for entry in entries:
        if entry.seq <= cursor.seq:
            continue
        if entry.removes:
            removed = {k for k in held if _covers(entry.key, k)}
            if not removed:
                continue
            held -= removed
        else:
            held.add(entry.key)
        needed.append(entry)
    return needed


def advance(cursor: ReplayCursor, entries: list[Entry]) -> None:
    """Record that ``entries`` (in order) now hold on the cursor's cluster."""
    for entry in entries:
        if entry.removes:
            cursor.held = {k for k in cursor.held if not _covers(entry.key, k)}
        else:
            cursor.held.add(entry.key)
        cursor.seq = max(cursor.seq, entry.seq)


class SessionJournal:
    """The journal of one session."""

    def __init__(self, db: Database, clock: Clock, user_id: str, session_id: str) -> None:
        self._db = db
        self._clock = clock
        self.user_id = user_id
        self.session_id = session_id
        self.entries: list[Entry] = []
        self._next_seq = 1

    @classmethod
    def load(cls, db: Database, clock: Clock, user_id: str, session_id: str) -> "SessionJournal":
        journal = cls(db, clock, user_id, session_id)
        for row in session_entries(db, user_id, session_id):
            journal.entries.append(Entry(row["seq"], row["key"], bool(row["removes"]), row["rpc"], bytes(row["payload"])))
        if journal.entries:
            journal._next_seq = journal.entries[-1].seq + 1
        return journal

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def record(self, effect: Effect, rpc: str, payload: bytes) -> Entry:
        """Append an entry for ``effect`` (already applied successfully) and drop what it supersedes.

        A definition supersedes earlier definitions of its key; a removal supersedes everything it
        covers. A definition never supersedes a removal: a cluster that still holds the old state
        must drop it before the new definition (which may not be a CREATE OR REPLACE) arrives.
        """
        superseded = [
            e for e in self.entries if _covers(effect.key, e.key) and (effect.removes or not e.removes)
        ]
        if superseded:
            gone = {e.seq for e in superseded}
            self.entries = [e for e in self.entries if e.seq not in gone]
            delete_entries(self._db, self.user_id, self.session_id, sorted(gone))
        entry = Entry(self._next_seq, effect.key, effect.removes, rpc, payload)
        self._next_seq += 1
        self.entries.append(entry)
        self._persist(entry)
        return entry

    def _persist(self, entry: Entry) -> None:
        append_entry(
            self._db,
            {
                "user_id": self.user_id,
                "session_id": self.session_id,
                "seq": entry.seq,
                "key": entry.key,
                "removes": int(entry.removes),
                "rpc": entry.rpc,
                "payload": entry.payload,
                "created_at": self._clock.now(),
            },
        )

    def copy_entry(self, entry: Entry) -> None:
        """Adopt an entry from another session's journal (CloneSession), keeping its seq."""
        self.entries.append(entry)
        self._next_seq = max(self._next_seq, entry.seq + 1)
        self._persist(entry)

    def forget(self) -> None:
        """The session is released: its journal is of no further use."""
        self.entries.clear()
        delete_session(self._db, self.user_id, self.session_id)
