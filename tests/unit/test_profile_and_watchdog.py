"""policy/profile.py and policy/watchdog.py: latency profile inference and runaway handling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.fleet.model import Profile
from sparkfleet.plan.cost import Estimate
from sparkfleet.policy.profile import SessionActivity, infer_profile, parse_profile
from sparkfleet.policy.watchdog import (
    Cancel,
    Reclassify,
    WatchdogSettings,
    WatchedQuery,
    check_running,
    parse_duration_s,
)


def est(core_s: float) -> Estimate:
    return Estimate(core_s, 0, 0, "static", "test")


SCRIPT = SessionActivity(gaps_s=(0.01, 0.02, 0.01, 0.0))
PERSON = SessionActivity(gaps_s=(12.0, 4.5, 30.0))


@given(st.sampled_from(Profile), st.floats(0, 10_000), st.booleans(), st.booleans())
def test_the_session_conf_always_wins(profile: Profile, core_s: float, reclassified: bool, writes: bool) -> None:
    assert infer_profile(est(core_s), SCRIPT, profile, reclassified, writes) == (profile, "set by sparkfleet.profile")


def test_large_queries_are_batch_small_ones_interactive() -> None:
    assert infer_profile(est(500), PERSON)[0] is Profile.BATCH
    assert infer_profile(est(0.1), SCRIPT) == (Profile.INTERACTIVE, "tiny")
    assert infer_profile(est(2), PERSON) == (Profile.INTERACTIVE, "small")
    assert infer_profile(None, SessionActivity()) == (Profile.INTERACTIVE, "small")


def test_medium_queries_follow_the_session_behaviour() -> None:
    assert infer_profile(est(20), PERSON)[0] is Profile.INTERACTIVE
    assert infer_profile(est(20), SCRIPT)[0] is Profile.BATCH
    assert infer_profile(est(20), PERSON, writes=True) == (Profile.BATCH, "medium-sized write")


def test_bulk_results_and_scripted_writes_are_batch() -> None:
    bulk = SessionActivity(gaps_s=(5.0,), result_bytes=(200 * 2**20, 300 * 2**20))
    assert infer_profile(est(1), bulk)[0] is Profile.BATCH
    assert infer_profile(est(1), SCRIPT, writes=True)[0] is Profile.BATCH
    assert infer_profile(est(1), PERSON, writes=True)[0] is Profile.INTERACTIVE


def test_the_client_type_names_a_pipeline_or_a_person() -> None:
    # A fresh session (no gaps yet): what the client calls itself decides a medium query.
    airflow = SessionActivity(client_type="Airflow/2.9 _SPARK_CONNECT_PYTHON spark/4.3.0 os/linux python/3.11")
    notebook = SessionActivity(client_type="jupyter-lab _SPARK_CONNECT_PYTHON spark/4.3.0")
    stock = SessionActivity(client_type="_SPARK_CONNECT_PYTHON spark/4.3.0 os/linux python/3.11.2")
    assert infer_profile(est(20), airflow) == (Profile.BATCH, "medium-sized, from a pipeline client (airflow)")
    assert infer_profile(est(20), notebook) == (Profile.INTERACTIVE, "medium-sized, from a notebook or BI client (jupyter)")
    assert infer_profile(est(20), stock) == (Profile.INTERACTIVE, "medium-sized")
    # Small reads stay interactive whoever asks; a pipeline's small write is batch.
    assert infer_profile(est(1), airflow)[0] is Profile.INTERACTIVE
    assert infer_profile(est(1), airflow, writes=True) == (Profile.BATCH, "write from a pipeline client (airflow)")
    # A person's think time outweighs a pipeline-looking name.
    thinking_airflow = SessionActivity(gaps_s=(12.0, 4.5, 30.0), client_type="airflow")
    assert infer_profile(est(20), thinking_airflow)[0] is Profile.INTERACTIVE


def test_a_reclassified_workload_is_batch() -> None:
    assert infer_profile(est(0.1), PERSON, reclassified_as_batch=True)[0] is Profile.BATCH


def test_parse_profile_is_forgiving_about_case_and_clear_about_mistakes() -> None:
    assert parse_profile(" Batch ") is Profile.BATCH
    with pytest.raises(ValueError, match="sparkfleet.profile must be interactive\\|batch"):
        parse_profile("fast")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("250ms", 0.25), (" 2.5S ", 2.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-5s", "0"])
def test_bad_durations_are_refused_with_the_conf_name(text: str) -> None:
    with pytest.raises(ValueError, match="sparkfleet.maxQueryDuration"):
        parse_duration_s(text)


def watched(**kw) -> WatchedQuery:  # type: ignore[no-untyped-def]
    base = dict(query_id="q", fingerprint="f", profile=Profile.INTERACTIVE, started_at=0.0, expected_s=1.0)
    return WatchedQuery(**{**base, **kw})


def test_max_duration_cancels_once_and_says_why() -> None:
    [decision] = check_running([watched(max_duration_s=5.0)], now=6.0)
    assert isinstance(decision, Cancel) and "sparkfleet.maxQueryDuration=5s" in decision.reason
    assert check_running([watched(max_duration_s=5.0, cancelling=True, reclassified=True)], now=6.0) == []
    assert check_running([watched(max_duration_s=5.0)], now=4.0) == []


def test_interactive_budget_and_runaway_factor_reclassify_once() -> None:
    budget = WatchdogSettings().interactive_budget_s
    [decision] = check_running([watched(expected_s=None)], now=budget + 1)
    assert isinstance(decision, Reclassify) and decision.fingerprint == "f" and "budget" in decision.reason
    [decision] = check_running([watched(profile=Profile.BATCH, expected_s=2.0)], now=25.0)
    assert isinstance(decision, Reclassify) and "10x its expected 2.0s" in decision.reason
    assert check_running([watched(profile=Profile.BATCH, expected_s=2.0)], now=15.0) == []  # only 7.5x
    assert check_running([watched(reclassified=True)], now=budget + 1) == []
    assert check_running([watched(fingerprint="")], now=budget + 1) == []


@given(st.lists(st.builds(
    WatchedQuery, query_id=st.text(min_size=1, max_size=4), fingerprint=st.text(max_size=4),
    profile=st.sampled_from(Profile), started_at=st.floats(0, 100), expected_s=st.one_of(st.none(), st.floats(0, 50)),
    max_duration_s=st.one_of(st.none(), st.floats(0.1, 100)), reclassified=st.booleans(), cancelling=st.booleans(),
), unique_by=lambda q: q.query_id), st.floats(0, 200))
def test_only_overdue_queries_get_decisions(queries: list[WatchedQuery], now: float) -> None:
    settings = WatchdogSettings()
    for decision in check_running(queries, now, settings):
        query = next(q for q in queries if q.query_id == decision.query_id)
        elapsed = now - query.started_at
        if isinstance(decision, Cancel):
            assert query.max_duration_s is not None and elapsed > query.max_duration_s and not query.cancelling
        else:
            assert not query.reclassified and query.fingerprint
            assert elapsed > settings.interactive_budget_s or elapsed >= settings.runaway_min_s


def test_history_outranks_a_reclassification() -> None:
    from_history = Estimate(0.05, 0, 0, "history", "median of 16 runs")
    assert infer_profile(from_history, PERSON, reclassified_as_batch=True) == (Profile.INTERACTIVE, "tiny")
