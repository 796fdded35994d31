"""gateway/assessment.py: fingerprint, estimate and profile of real client plans, temp views seen through."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql.connect.proto import base_pb2

from sparkfleet.fleet.model import Profile
from sparkfleet.gateway.assessment import QueryAssessor, query_ended, query_started, temp_view_plans
from sparkfleet.gateway.input_sizes import InputSizer
from sparkfleet.gateway.journal import SessionJournal
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.plan.cost import CostClass, ObservedCost
from sparkfleet.plan.state import Effect
from pyspark.sql.connect.plan import CreateView

from .spark_plans import command_plan, offline_session, plan_of, sql_df

GB = 1024**3


def _session(db, clock) -> VirtualSession:  # type: ignore[no-untyped-def]
    session = VirtualSession("u", "00112233-4455-6677-8899-aabbccddeeff", "ss", 0.0, 0.0)
    session.journal = SessionJournal(db, clock, session.user_id, session.session_id)
    return session


def _execute(plan: bytes) -> bytes:
    request = base_pb2.ExecutePlanRequest(session_id="00112233-4455-6677-8899-aabbccddeeff")
    request.plan.ParseFromString(plan)
    return request.SerializeToString()


def _dataset(root: Path, size: int) -> Path:
    root.mkdir(parents=True)
    (root / "part-0.parquet").write_bytes(b"\0" * size)
    return root


def test_sql_over_a_temp_view_is_sized_by_the_files_behind_the_view(tmp_path, db, clock) -> None:  # type: ignore[no-untyped-def]
    data = _dataset(tmp_path / "lineitem", 50 * 1024 * 1024)
    spark = offline_session()
    session = _session(db, clock)
    # What df.createOrReplaceTempView("lineitem") sends, journaled as the gateway does.
    view = CreateView(spark.read.parquet(str(data))._plan, "lineitem", is_global=False, replace=True)
    session.journal.record(Effect("view:lineitem"), "ExecutePlan", _execute(command_plan(spark, view.command(spark.client))))
    assert set(temp_view_plans(session)) == {"lineitem"}

    assessor = QueryAssessor(InputSizer(None, clock))
    query = plan_of(sql_df(spark, "select l_returnflag, count(*) from lineitem group by l_returnflag"))
    _, through_view = assessor.estimate(session, query)
    assert through_view is not None and through_view.scan_bytes >= 50 * 1024 * 1024 and through_view.known
    # Without the journal entry the view is an unknown table: a guess, and the estimate says so.
    _, unknown = assessor.estimate(_session(db, clock), query)
    assert unknown is not None and not unknown.known


def test_history_dominates_and_profile_follows_conf_and_reclassification(tmp_path, db, clock) -> None:  # type: ignore[no-untyped-def]
    spark = offline_session()
    plan = plan_of(spark.range(10).selectExpr("sum(id)"))
    heavy = ObservedCost(runs=3, duration_ms=90_000, task_ms=180_000, cpu_ms=170_000, peak_execution_memory=GB,
                         spilled_bytes=0, shuffle_bytes=0, input_bytes=0)
    assessor = QueryAssessor(InputSizer(None, clock), history=lambda fingerprint: heavy)
    session = _session(db, clock)
    traits = assessor.assess(session, plan, intent=None)
    assert traits.estimate is not None and traits.estimate.source == "history"
    assert traits.estimate.cost_class is CostClass.LARGE and traits.profile is Profile.BATCH
    # The user's word wins over history.
    session.options["sparkfleet.profile"] = "interactive"
    assert assessor.assess(session, plan, intent=None).profile is Profile.INTERACTIVE
    # A tiny query whose workload the watchdog reclassified is batch from then on.
    tiny = QueryAssessor(InputSizer(None, clock))
    session.options.clear()
    traits = tiny.assess(session, plan, intent=None)
    assert traits.profile is Profile.INTERACTIVE and traits.estimate.cost_class is CostClass.TINY
    tiny.reclassified.add(traits.fingerprint)
    assert tiny.assess(session, plan, intent=None).profile is Profile.BATCH


def test_unreadable_plans_still_run_as_interactive_of_unknown_cost(db, clock) -> None:  # type: ignore[no-untyped-def]
    traits = QueryAssessor(InputSizer(None, clock)).assess(_session(db, clock), b"\xff\xff\xff", intent=None)
    assert traits.fingerprint == "" and traits.estimate is None and traits.profile is Profile.INTERACTIVE


def test_think_time_is_measured_between_queries_not_during_them(db, clock) -> None:  # type: ignore[no-untyped-def]
    session = _session(db, clock)
    query_started(session, 10.0)
    query_ended(session, 11.0, 100)
    query_started(session, 14.0)  # 3 s of thinking
    query_started(session, 14.5)  # concurrent: no gap
    query_ended(session, 15.0, 10)
    query_ended(session, 15.5, 20)
    assert list(session.recent_gaps_s) == [3.0] and list(session.recent_result_bytes) == [100, 10, 20]
