"""policy/recovery.py: a retry after a lost cluster never duplicates an external effect."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.plan.intent import READ, QueryIntent
from sparkfleet.plan.sql_intent import classify_sql
from sparkfleet.policy.recovery import FailureFacts, Retry, Surface, decide_retry

APPEND = QueryIntent("write", "append write to table db.t", target="db.t", target_kind="table",
                     rerun_risk="re-running it could duplicate data")
OVERWRITE = QueryIntent("write", "overwrite write to path /out", idempotent=True, target="/out", target_kind="path")
CREATE = QueryIntent("write", "CREATE TABLE db.t", needs_absent_target=True, target="db.t", target_kind="table",
                     rerun_risk="re-running it would fail if the first attempt created the target")
SET_CONF = classify_sql("SET a = 1")
UNKNOWN = classify_sql("ALTER TABLE t ADD COLUMNS (b INT)")


def lost(cluster_id: str = "c-2", sent: bool = True, forwarded: int = 0, attempts: int = 1,
         target_exists: bool | None = None, max_attempts: int = 3) -> FailureFacts:
    return FailureFacts(cluster_id, sent, forwarded, attempts, target_exists, max_attempts)


# ---- each rule ------------------------------------------------------------------------------------


def test_an_append_that_reached_the_cluster_is_not_retried() -> None:
    decision = decide_retry(APPEND, lost())
    assert decision == Surface(
        "not retried: the append write to table db.t may have committed before cluster c-2 was lost; "
        "re-running it could duplicate data"
    )


def test_reads_and_session_state_are_retried() -> None:
    assert isinstance(decide_retry(READ, lost()), Retry)
    assert isinstance(decide_retry(SET_CONF, lost()), Retry)
    assert "session state change: conf:a" in decide_retry(SET_CONF, lost()).reason


def test_an_idempotent_write_is_retried() -> None:
    decision = decide_retry(OVERWRITE, lost())
    assert isinstance(decision, Retry) and "idempotent" in decision.reason


def test_anything_that_never_reached_the_cluster_is_retried() -> None:
    for intent in (APPEND, CREATE, UNKNOWN):
        decision = decide_retry(intent, lost(sent=False))
        assert isinstance(decision, Retry) and "never reached cluster c-2" in decision.reason


def test_a_create_is_retried_only_while_its_target_is_absent() -> None:
    assert isinstance(decide_retry(CREATE, lost(target_exists=False)), Retry)
    exists = decide_retry(CREATE, lost(target_exists=True))
    assert isinstance(exists, Surface) and "db.t now exists" in exists.reason
    unknown = decide_retry(CREATE, lost(target_exists=None))
    assert isinstance(unknown, Surface) and "cannot tell whether" in unknown.reason


def test_a_create_with_no_known_target_is_not_retried() -> None:
    anonymous = QueryIntent("write", "errorifexists write (jdbc) to an unnamed target", needs_absent_target=True)
    decision = decide_retry(anonymous, lost(target_exists=None))
    assert isinstance(decision, Surface) and "its target" in decision.reason


def test_an_unknown_command_is_not_retried() -> None:
    decision = decide_retry(UNKNOWN, lost())
    assert isinstance(decision, Surface) and "may have taken effect" in decision.reason


def test_a_read_whose_results_reached_the_client_is_not_retried() -> None:
    decision = decide_retry(READ, lost(forwarded=2))
    assert isinstance(decision, Surface) and "already received 2 responses" in decision.reason


def test_the_attempt_limit_wins_over_everything() -> None:
    decision = decide_retry(READ, lost(sent=False, attempts=3))
    assert decision == Surface(
        "not retried: gave up after 3 attempts; the read was running on cluster c-2 when it was lost"
    )
    assert isinstance(decide_retry(READ, lost(attempts=2)), Retry)


@pytest.mark.parametrize("facts", [
    {"attempts": 0}, {"forwarded": -1}, {"max_attempts": 0},
])
def test_impossible_facts_are_rejected(facts: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        lost(**facts)  # type: ignore[arg-type]


# ---- properties -----------------------------------------------------------------------------------

intents = st.builds(
    QueryIntent,
    kind=st.sampled_from(["read", "session_state", "write", "command"]),
    description=st.text(min_size=1, max_size=40),
    idempotent=st.booleans(),
    needs_absent_target=st.booleans(),
    target=st.text(max_size=20),
    target_kind=st.sampled_from(["table", "path", "schema", "function", ""]),
    rerun_risk=st.text(max_size=40),
)
failures = st.builds(
    FailureFacts,
    cluster_id=st.text(min_size=1, max_size=20),
    sent=st.booleans(),
    responses_forwarded=st.integers(0, 50),
    attempts=st.integers(1, 6),
    target_exists=st.sampled_from([None, True, False]),
    max_attempts=st.integers(1, 6),
)
# What the classifier really produces, for writes a re-run could duplicate.
unsafe_writes = st.sampled_from([
    "INSERT INTO t VALUES (1)", "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
    "UPDATE t SET a = 1", "DELETE FROM t", "DROP TABLE t", "ALTER TABLE t RENAME TO u",
    "SELECT 1; INSERT INTO t VALUES (1)", "FROM s INSERT INTO t SELECT *",
]).map(classify_sql)


@given(intents, failures)
def test_a_retry_after_the_request_was_sent_is_always_safe(intent: QueryIntent, failure: FailureFacts) -> None:
    if isinstance(decide_retry(intent, failure), Retry) and failure.sent:
        assert (
            intent.kind in ("read", "session_state")
            or intent.idempotent
            or (intent.needs_absent_target and failure.target_exists is False)
        )


@given(unsafe_writes, failures)
def test_a_non_idempotent_write_that_was_sent_is_never_retried(intent: QueryIntent, failure: FailureFacts) -> None:
    assert not intent.idempotent
    if failure.sent:
        assert isinstance(decide_retry(intent, failure), Surface)


@given(failures)
def test_a_read_is_retried_while_nothing_was_forwarded_and_attempts_remain(failure: FailureFacts) -> None:
    decision = decide_retry(READ, failure)
    if failure.responses_forwarded == 0 and failure.attempts < failure.max_attempts:
        assert isinstance(decision, Retry)
    else:
        assert isinstance(decision, Surface)


@given(intents, failures)
def test_forwarded_responses_or_spent_attempts_always_surface(intent: QueryIntent, failure: FailureFacts) -> None:
    if failure.responses_forwarded or failure.attempts >= failure.max_attempts:
        assert isinstance(decide_retry(intent, failure), Surface)


@given(intents, failures)
def test_every_reason_names_the_cluster_and_the_operation(intent: QueryIntent, failure: FailureFacts) -> None:
    decision = decide_retry(intent, failure)
    assert failure.cluster_id in decision.reason
    assert intent.description in decision.reason
    # The gateway words its error as "The query was <reason>."
    assert decision.reason.startswith("retried" if isinstance(decision, Retry) else "not retried")


def test_the_query_that_ran_its_cluster_out_of_memory_is_not_repeated_but_its_victims_are() -> None:
    import dataclasses

    evidence = "the JVM exited with status 52 (Spark's OOM exit)"
    culprit = dataclasses.replace(lost(), caused_out_of_memory=evidence)
    decision = decide_retry(READ, culprit)
    assert isinstance(decision, Surface) and "ran cluster c-2 out of memory" in decision.reason
    assert evidence in decision.reason and decision.reason.startswith("not retried")
    assert "no larger size class" in decision.reason
    # With a larger size class to go to: retried there, never on a cluster as small as the lost one.
    bigger = dataclasses.replace(culprit, lost_size="S", lost_memory_mb=1024, larger_size="M")
    decision = decide_retry(READ, bigger)
    assert decision == Retry(f"retried on a larger cluster (M): the read ran cluster c-2 out of memory ({evidence})",
                             min_memory_mb=1024)
    # Unless a re-run is unsafe anyway: an append that may have committed stays surfaced.
    decision = decide_retry(APPEND, bigger)
    assert isinstance(decision, Surface) and "may have committed" in decision.reason and "out of memory" in decision.reason
    assert isinstance(decide_retry(READ, lost()), Retry)  # another session's read lost with the cluster
