"""gateway/journal.py: compaction, tombstones, replay selection, and reload from the store."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sparkfleet.clock import VirtualClock
from sparkfleet.gateway.journal import ReplayCursor, SessionJournal, advance, entries_to_replay
from sparkfleet.plan.state import Effect
from sparkfleet.store import Database

USER, SESSION = "u", "00112233-4455-6677-8899-aabbccddeeff"


def _journal(tmp_path) -> tuple[Database, SessionJournal]:
    db = Database(tmp_path / "j.db").open()
    return db, SessionJournal(db, VirtualClock(), USER, SESSION)


def test_a_conf_set_twice_keeps_the_last(tmp_path):
    db, journal = _journal(tmp_path)
    journal.record(Effect("conf:a"), "Config", b"a=1")
    journal.record(Effect("conf:b"), "Config", b"b=1")
    journal.record(Effect("conf:a"), "Config", b"a=2")
    assert [(e.key, e.payload) for e in journal.entries] == [("conf:b", b"b=1"), ("conf:a", b"a=2")]
    db.close()


def test_a_dropped_view_disappears_for_new_clusters(tmp_path):
    db, journal = _journal(tmp_path)
    journal.record(Effect("view:v"), "ExecutePlan", b"create v")
    journal.record(Effect("view:v", removes=True), "ExecutePlan", b"drop v")
    fresh = ReplayCursor()
    assert entries_to_replay(journal.entries, fresh) == []
    db.close()


def test_a_cluster_that_holds_a_view_receives_its_drop(tmp_path):
    db, journal = _journal(tmp_path)
    create = journal.record(Effect("view:v"), "ExecutePlan", b"create v")
    behind = ReplayCursor()
    advance(behind, [create])
    journal.record(Effect("view:v", removes=True), "ExecutePlan", b"drop v")
    journal.record(Effect("view:v"), "ExecutePlan", b"create v again")
    replay = entries_to_replay(journal.entries, behind)
    assert [e.payload for e in replay] == [b"drop v", b"create v again"]
    assert [e.payload for e in entries_to_replay(journal.entries, ReplayCursor())] == [b"create v again"]
    db.close()


def test_reset_removes_every_conf_but_nothing_else(tmp_path):
    db, journal = _journal(tmp_path)
    journal.record(Effect("conf:a"), "Config", b"a")
    journal.record(Effect("view:v"), "ExecutePlan", b"v")
    journal.record(Effect("conf:b"), "Config", b"b")
    journal.record(Effect("conf:*", removes=True), "ExecutePlan", b"RESET")
    assert [e.key for e in journal.entries] == ["view:v", "conf:*"]
    db.close()


def test_journal_survives_a_restart(tmp_path):
    db, journal = _journal(tmp_path)
    journal.record(Effect("conf:a"), "Config", b"a=1")
    journal.record(Effect("view:v"), "ExecutePlan", b"v")
    journal.record(Effect("conf:a"), "Config", b"a=2")
    db.close()
    db = Database(tmp_path / "j.db").open()
    reloaded = SessionJournal.load(db, VirtualClock(), USER, SESSION)
    assert [(e.seq, e.key, e.payload) for e in reloaded.entries] == [(2, "view:v", b"v"), (3, "conf:a", b"a=2")]
    assert reloaded.record(Effect("conf:c"), "Config", b"c").seq == 4
    db.close()


_effects = st.lists(
    st.tuples(st.sampled_from(["conf:a", "conf:b", "view:v", "view:w", "conf:*"]), st.booleans()), max_size=25
)


@settings(max_examples=200, deadline=None)
@given(history=_effects, split=st.integers(min_value=0, max_value=25))
def test_replay_brings_any_cluster_to_the_same_state(tmp_path_factory, history, split):
    """A cluster that saw a prefix of the history and then replays ends where the journal says."""
    db = Database(tmp_path_factory.mktemp("j") / "j.db").open()
    journal = SessionJournal(db, VirtualClock(), USER, SESSION)
    truth: set[str] = set()
    early = ReplayCursor()
    for i, (key, removes) in enumerate(history):
        if key == "conf:*":
            removes = True
        entry = journal.record(Effect(key, removes), "Config", f"{i}".encode())
        if removes:
            truth = {k for k in truth if not (k == key or (key.endswith("*") and k.startswith(key[:-1])))}
        else:
            truth.add(key)
        if i < split:
            advance(early, [entry])
    for cursor in (early, ReplayCursor()):
        advance(cursor, entries_to_replay(journal.entries, cursor))
        assert cursor.held == truth
    db.close()
