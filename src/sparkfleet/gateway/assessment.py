"""What the gateway knows about an ExecutePlan before placing it: fingerprint, estimate, profile.

The shell around the pure parts: it reads the plan (``plan/relations.py``, ``plan/fingerprint.py``),
sizes its inputs on disk (``gateway/input_sizes.py``), looks up the workload's history, and asks
``policy/profile.py`` for the latency profile. A plan it cannot read still runs: it is then an
interactive query of unknown cost, and the record says so.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from sparkfleet.errors import MalformedMessage, PlanTooLarge
from sparkfleet.gateway.admission import QueryTraits
from sparkfleet.gateway.input_sizes import InputSizer
from sparkfleet.gateway.sessions import VirtualSession
from sparkfleet.plan.cost import Estimate, ObservedCost
from sparkfleet.plan.estimate import best_estimate, estimate_static
from sparkfleet.plan.fingerprint import fingerprint
from sparkfleet.plan.relations import PlanSummary, Scan, summarize_plan
from sparkfleet.plan.wire import as_message, read_fields
from sparkfleet.policy.profile import PROFILE_CONF, SessionActivity, infer_profile, parse_profile
from sparkfleet.policy.scaling import MODE_CONF, parse_mode

log = logging.getLogger(__name__)

HistoryLookup = Callable[[str], ObservedCost | None]
_PLAN = 3  # ExecutePlanRequest.plan
_MAX_VIEW_DEPTH = 4  # views over views, read this deep


def current_database(session: VirtualSession) -> str:
    """The session's current database if it never ran USE, else "" (not known to the gateway)."""
    journal = session.journal
    if journal is not None and any(e.key == "current:namespace" for e in journal.entries):
        return ""
    return "default"


class QueryAssessor:
    def __init__(self, sizer: InputSizer | None = None, history: HistoryLookup | None = None,
                 memory_floor: Callable[[str], int] | None = None) -> None:
        self._sizer = sizer
        self._history = history
        self._memory_floor = memory_floor
        # Workloads the watchdog saw run far past their estimate: batch from now on.
        self.reclassified: set[str] = set()

    def estimate(self, session: VirtualSession, plan: bytes | memoryview) -> tuple[str, Estimate | None]:
        """The plan's workload fingerprint and expected cost (history first, else the plan's)."""
        if self._sizer is None:
            return "", None
        summary = summarize_plan(plan)
        if any(scan.kind == "table" for scan in summary.scans):  # maybe a temp view: look through it
            summary = with_temp_views(summary, temp_view_plans(session))
        workload = fingerprint(plan)
        sizes = self._sizer.sizes(summary.scans, current_database(session) or "default")
        static = estimate_static(summary, sizes)
        observed = self._history(workload) if self._history is not None else None
        return workload, best_estimate(static, observed)

    def assess(self, session: VirtualSession, plan: bytes | memoryview, intent: Any, label: str = "") -> QueryTraits:
        """``label``: the plan's kind as query records show it (``relation``, ``sql_command``...)."""
        workload, estimate = "", None
        try:
            workload, estimate = self.estimate(session, plan)
        except PlanTooLarge as error:  # it runs, of unknown cost
            log.info("the plan of a query of session %s was not estimated: %s", session.session_id, error.message)
        except Exception:  # an unreadable plan still runs; Spark will judge it
            log.warning("could not read the plan of a query of session %s", session.session_id, exc_info=True)
        override = session.options.get(PROFILE_CONF, "auto")
        profile, why = infer_profile(
            estimate,
            SessionActivity(tuple(session.recent_gaps_s), tuple(session.recent_result_bytes), session.client_type),
            None if override == "auto" else parse_profile(override),
            workload in self.reclassified,
            writes=getattr(intent, "kind", "") == "write",
        )
        kind = getattr(intent, "kind", "")
        # SET, temp views, UDFs, variables, and spark.sql() of a query (which returns the relation
        # its DataFrame then runs): Spark analyses them and runs no job.
        runs_job = not (kind == "session_state" or (label == "sql_command" and kind == "read"))
        floor = self._memory_floor(workload) if (self._memory_floor is not None and workload and runs_job) else 0
        mode = session.options.get(MODE_CONF, "")
        return QueryTraits(workload, profile, why, estimate, runs_job, floor, parse_mode(mode).value if mode else "")


def temp_view_plans(session: VirtualSession) -> dict[str, bytes]:
    """The plan that defines each of the session's temp views (from its journal), by view name."""
    journal = session.journal
    if journal is None:
        return {}
    views: dict[str, bytes] = {}
    for entry in journal.entries:
        if entry.key.startswith("view:") and entry.rpc == "ExecutePlan":
            if entry.removes:
                views.pop(entry.key[5:], None)
            else:
                plan = read_fields(entry.payload, frozenset({_PLAN})).get(_PLAN)
                if plan is not None:
                    views[entry.key[5:]] = bytes(as_message(plan, "plan"))
    return views


def with_temp_views(summary: PlanSummary, views: dict[str, bytes], depth: int = 0) -> PlanSummary:
    """``summary`` with each scan of a temp view replaced by what the view reads.

    A view over files is invisible in SQL text (``select ... from lineitem``); the journal keeps
    the plan that defined it, so its files can be sized like a direct read.
    """
    if not views or depth >= _MAX_VIEW_DEPTH:
        return summary
    scans: list[Scan] = []
    range_rows, local_bytes = summary.range_rows, summary.local_bytes
    changed = False
    for scan in summary.scans:
        name = scan.name.strip().strip("`").lower()
        definition = views.get(name) if scan.kind == "table" else None
        if definition is None:
            scans.append(scan)
            continue
        try:
            inner = with_temp_views(summarize_plan(definition), views, depth + 1)
        except MalformedMessage:
            scans.append(scan)
            continue
        changed = True
        scans.extend(inner.scans)
        range_rows += inner.range_rows
        local_bytes += inner.local_bytes
    if not changed:
        return summary
    return dataclasses.replace(summary, scans=tuple(scans), range_rows=range_rows, local_bytes=local_bytes)


def query_started(session: VirtualSession, now: float) -> None:
    """Feed the session's think time (idle time before this query) to later profile decisions."""
    if session.last_query_ended_at is not None and session.queries_running == 0:
        session.recent_gaps_s.append(max(now - session.last_query_ended_at, 0.0))
    session.queries_running += 1


def query_ended(session: VirtualSession, now: float, result_bytes: int) -> None:
    session.queries_running = max(session.queries_running - 1, 0)
    session.recent_result_bytes.append(result_bytes)
    session.last_query_ended_at = now


def build_assessor(history: HistoryLookup, warehouse: Any, clock: Any,
                   memory_floor: Callable[[str], int] | None = None) -> QueryAssessor:
    """The live assessor: the plan reader, input sizes from disk, the workload history and the
    memory floor each workload learned by running clusters out of memory."""
    return QueryAssessor(InputSizer(warehouse, clock), history, memory_floor)
