"""policy/versions.py: rollout assignment, failure classification, pinning, slowdowns, unpinning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.policy.versions import (
    ChangeStage,
    FailureKind,
    HoldRollout,
    Pin,
    RolloutSettings,
    RunFacts,
    RuntimeFacts,
    RuntimeRecord,
    Stage,
    UsersError,
    after_blink,
    blink_refusal,
    assign_runtime,
    canary_bucket,
    classify_failure,
    plan_rollout,
    previous_of,
    probe_for,
    slowdown,
)

OLD = RuntimeFacts("4.2.1", Stage.GENERAL, 1)
NEW = RuntimeFacts("4.3.0", Stage.CANARY, 2)
FLEET = [OLD, NEW]
fingerprints = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)


@given(fingerprints, st.floats(0.0, 1.0))
def test_assignment_is_deterministic_and_follows_the_canary_fraction(fingerprint: str, fraction: float) -> None:
    settings = RolloutSettings(canary_fraction=fraction)
    first = assign_runtime(fingerprint, FLEET, {}, settings)
    assert first == assign_runtime(fingerprint, FLEET, {}, settings)
    on_canary = canary_bucket(fingerprint, NEW.name) < fraction
    assert first.runtime == (NEW.name if on_canary else OLD.name)
    # On the canary, a suspect failure blinks back to the general runtime.
    assert first.fallback == (OLD.name if on_canary else "")
    assert first.reason


def test_the_canary_takes_about_its_fraction_of_workloads() -> None:
    settings = RolloutSettings(canary_fraction=0.25)
    runs = [assign_runtime(f"{i:016x}", FLEET, {}, settings).runtime for i in range(4000)]
    assert 0.22 < runs.count(NEW.name) / len(runs) < 0.28


@given(fingerprints)
def test_a_pin_wins_unless_its_runtime_is_retired(fingerprint: str) -> None:
    general_new = [RuntimeFacts("4.2.1", Stage.PREVIOUS, 1), RuntimeFacts("4.3.0", Stage.GENERAL, 2)]
    pinned = assign_runtime(fingerprint, general_new, {fingerprint: "4.2.1"})
    assert (pinned.runtime, pinned.fallback) == ("4.2.1", "")
    assert pinned.reason == "pinned to 4.2.1"
    retired = [RuntimeFacts("4.2.1", Stage.RETIRED, 1), RuntimeFacts("4.3.0", Stage.GENERAL, 2)]
    assert assign_runtime(fingerprint, retired, {fingerprint: "4.2.1"}).runtime == "4.3.0"
    # A general runtime blinks back to the one before it while that one still serves.
    unpinned = assign_runtime(fingerprint, general_new, {})
    assert (unpinned.runtime, unpinned.fallback) == ("4.3.0", "4.2.1")


def test_a_runtime_without_clusters_is_not_assigned() -> None:
    everyone_canary = RolloutSettings(canary_fraction=1.0)
    assert assign_runtime("f", FLEET, {}, everyone_canary).runtime == NEW.name
    no_canary_clusters = assign_runtime("f", FLEET, {}, everyone_canary, available=frozenset({OLD.name}))
    assert (no_canary_clusters.runtime, no_canary_clusters.fallback) == (OLD.name, "")
    pinned_nowhere = assign_runtime("f", [RuntimeFacts("a", Stage.PREVIOUS, 1), RuntimeFacts("b", Stage.GENERAL, 2)],
                                    {"f": "a"}, available=frozenset({"b"}))
    assert pinned_nowhere.runtime == "b"


def test_without_a_general_runtime_assignment_is_an_error() -> None:
    with pytest.raises(ValueError, match="general"):
        assign_runtime("f", [NEW], {})


def test_the_previous_runtime_is_the_newest_older_one_still_serving() -> None:
    fleet = [RuntimeFacts("a", Stage.RETIRED, 1), RuntimeFacts("b", Stage.PREVIOUS, 2),
             RuntimeFacts("c", Stage.GENERAL, 3), RuntimeFacts("d", Stage.CANARY, 4)]
    assert previous_of("d", fleet).name == "c"  # type: ignore[union-attr]
    assert previous_of("c", fleet).name == "b"  # type: ignore[union-attr]
    assert previous_of("b", fleet) is None  # "a" is retired


def test_failures_are_classified_by_what_they_say_about_the_runtime() -> None:
    # Data and analysis errors are suspects: a runtime with other defaults causes exactly those.
    for suspect in ("DIVIDE_BY_ZERO", "CAST_INVALID_INPUT", "UNRESOLVED_COLUMN.WITH_SUGGESTION",
                    "PARSE_SYNTAX_ERROR", None):
        assert classify_failure(suspect, "INTERNAL") is FailureKind.SUSPECT
    assert classify_failure("SPARKFLEET.CLUSTER_LOST", "INTERNAL") is FailureKind.RECOVERY
    assert classify_failure("SPARKFLEET.OUT_OF_MEMORY", "INTERNAL") is FailureKind.RECOVERY
    assert classify_failure("SPARKFLEET.QUERY_CANCELLED", "CANCELLED") is FailureKind.NOT_A_QUERY_ERROR
    assert classify_failure("INVALID_HANDLE.SESSION_CLOSED", "FAILED_PRECONDITION") is FailureKind.NOT_A_QUERY_ERROR
    assert classify_failure("OPERATION_CANCELED", "UNKNOWN") is FailureKind.NOT_A_QUERY_ERROR
    assert classify_failure(None, "UNAVAILABLE") is FailureKind.TRANSIENT


def test_blinking_twice_pins_on_success_and_blames_the_workload_on_failure() -> None:
    pin = after_blink("f1", "4.3.0", "4.2.1", "CAST_INVALID_INPUT", retry_succeeded=True)
    assert pin == Pin("f1", "4.2.1", "4.3.0", pin.reason)  # type: ignore[union-attr]
    assert "failed on 4.3.0 with CAST_INVALID_INPUT and succeeded on 4.2.1" in pin.reason
    users = after_blink("f1", "4.3.0", "4.2.1", "TABLE_OR_VIEW_NOT_FOUND", retry_succeeded=False)
    assert isinstance(users, UsersError) and "the workload's own error" in users.reason


def test_only_what_a_second_run_cannot_duplicate_blinks() -> None:
    assert blink_refusal("read", True, 0) is None
    assert blink_refusal("session_state", True, 0) is None
    assert blink_refusal("write", True, 0) is None  # e.g. an overwrite
    assert "not idempotent" in blink_refusal("write", False, 0)  # type: ignore[operator]
    assert "received 2 response" in blink_refusal("read", True, 2)  # type: ignore[operator]


def _runs(seconds: float, n: int, input_bytes: int = 1000) -> list[RunFacts]:
    return [RunFacts(seconds, input_bytes) for _ in range(n)]


def test_a_workload_much_slower_on_the_new_runtime_is_a_slowdown() -> None:
    found = slowdown(_runs(5.0, 3), _runs(2.0, 3))
    assert found is not None and found.ratio == pytest.approx(2.5) and "2.5x slower" in found.reason
    assert slowdown(_runs(3.0, 3), _runs(2.0, 3)) is None  # 1.5x: under the limit
    assert slowdown(_runs(5.0, 2), _runs(2.0, 3)) is None  # too few runs to tell
    # Runs on far larger input are not compared: bigger input, not the runtime, made them slow.
    assert slowdown(_runs(5.0, 3, input_bytes=10_000), _runs(2.0, 3, input_bytes=1000)) is None


@given(st.lists(st.floats(0.01, 100), min_size=3, max_size=8), st.lists(st.floats(0.01, 100), min_size=3, max_size=8))
def test_a_slowdown_is_found_exactly_when_the_medians_differ_enough(new: list[float], old: list[float]) -> None:
    import statistics

    found = slowdown([RunFacts(s, 0) for s in new], [RunFacts(s, 0) for s in old])
    assert (found is not None) == (statistics.median(new) / statistics.median(old) >= 2.0)


def test_a_canary_is_promoted_after_enough_clean_workloads_and_the_old_general_retired_when_unpinned() -> None:
    settings = RolloutSettings(promote_after_workloads=20, max_regression_rate=0.05)
    young = [RuntimeRecord(OLD), RuntimeRecord(NEW, workloads_run=5)]
    assert plan_rollout(young, settings) == []
    ready = [RuntimeRecord(OLD, pinned_to_it=0), RuntimeRecord(NEW, workloads_run=40, workloads_regressed=1)]
    actions = plan_rollout(ready, settings)
    assert [(a.runtime, a.stage) for a in actions if isinstance(a, ChangeStage)] == [
        ("4.3.0", Stage.GENERAL), ("4.2.1", Stage.PREVIOUS)]
    # Demoted just now, it stays while the new general runtime proves itself (failures there
    # blink back to it), and is retired once that ran enough workloads and nothing is pinned to it.
    young_general = [RuntimeRecord(RuntimeFacts("4.2.1", Stage.PREVIOUS, 1), pinned_to_it=0),
                     RuntimeRecord(RuntimeFacts("4.3.0", Stage.GENERAL, 2), workloads_run=3)]
    assert plan_rollout(young_general, settings) == []
    later = [RuntimeRecord(RuntimeFacts("4.2.1", Stage.PREVIOUS, 1), pinned_to_it=0),
             RuntimeRecord(RuntimeFacts("4.3.0", Stage.GENERAL, 2), workloads_run=25)]
    [retire] = plan_rollout(later, settings)
    assert (retire.runtime, retire.stage) == ("4.2.1", Stage.RETIRED)  # type: ignore[union-attr]
    assert "no workload is pinned to it" in retire.reason
    pinned = [RuntimeRecord(RuntimeFacts("4.2.1", Stage.PREVIOUS, 1), pinned_to_it=3),
              RuntimeRecord(RuntimeFacts("4.3.0", Stage.GENERAL, 2), workloads_run=25)]
    assert plan_rollout(pinned, settings) == []


def test_a_canary_with_too_many_regressions_is_held() -> None:
    [hold] = plan_rollout([RuntimeRecord(OLD), RuntimeRecord(NEW, workloads_run=40, workloads_regressed=4)])
    assert isinstance(hold, HoldRollout) and "4 of 40 workloads regressed" in hold.reason


def test_a_pinned_read_is_probed_on_a_newer_runtime_and_a_write_is_not() -> None:
    fleet = [RuntimeFacts("4.2.1", Stage.PREVIOUS, 1), RuntimeFacts("4.3.0", Stage.GENERAL, 2),
             RuntimeFacts("4.4.0", Stage.CANARY, 3)]
    probe = probe_for("4.2.1", "4.3.0", fleet, is_read=True)
    assert probe is not None and (probe.runtime, probe.pinned) == ("4.4.0", "4.2.1")
    assert probe_for("4.2.1", "4.3.0", fleet, is_read=False) is None
    # Nothing newer than the runtime that broke it: stay pinned.
    assert probe_for("4.2.1", "4.3.0", fleet[:2], is_read=True) is None


def test_a_pinned_read_is_assigned_to_its_probe_and_falls_back_to_its_pin() -> None:
    fleet = [RuntimeFacts("4.2.1", Stage.PREVIOUS, 1), RuntimeFacts("4.3.0", Stage.GENERAL, 2),
             RuntimeFacts("4.4.0", Stage.CANARY, 3)]
    probe = assign_runtime("f", fleet, {"f": "4.2.1"}, broken_on="4.3.0", is_read=True)
    assert (probe.runtime, probe.fallback, probe.probe) == ("4.4.0", "4.2.1", True)
    # A write stays where it is pinned; so does a read with nothing newer than what broke it.
    assert assign_runtime("f", fleet, {"f": "4.2.1"}, broken_on="4.3.0", is_read=False).runtime == "4.2.1"
    assert assign_runtime("f", fleet[:2], {"f": "4.2.1"}, broken_on="4.3.0", is_read=True).runtime == "4.2.1"


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="canary_fraction"):
        RolloutSettings(canary_fraction=1.5)
    with pytest.raises(ValueError, match="slowdown_ratio"):
        RolloutSettings(slowdown_ratio=1.0)
