"""Pure latency-profile policy: is a query interactive (someone waits) or batch (a pipeline runs)?

Signals, strongest first: the session's ``sparkfleet.profile`` conf; the watchdog having seen this
workload run far past its estimate; the query's expected cost; and how the session behaves — a
person pauses to think between queries and reads small results, a script fires its next query
the moment the last one ends and moves data in bulk — and what client it is (the ``client_type``
every Spark Connect request carries: a scheduler's or a notebook's name when they set one).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sparkfleet.fleet.model import Profile
from sparkfleet.plan.cost import CostClass, Estimate

PROFILE_CONF = "sparkfleet.profile"
# Gaps between one query's end and the session's next query, seconds.
_SCRIPT_GAP_S = 0.25  # below this, nobody read the result: a program is driving
_THINKING_GAP_S = 1.0  # above this, somebody looked at it
_LARGE_RESULT_BYTES = 64 * 1024 * 1024  # a result no person reads on a screen
_RECENT = 8  # how many past queries of the session count
# Words in a client_type that name what drives the session (matched case-insensitively).
_PIPELINE_CLIENTS = ("airflow", "dagster", "prefect", "dbt", "luigi", "oozie", "spark-submit", "scheduler")
_PERSON_CLIENTS = ("jupyter", "ipykernel", "ipython", "notebook", "zeppelin", "vscode", "superset", "tableau", "shell")


@dataclass(frozen=True, slots=True)
class SessionActivity:
    """What the gateway saw of a session's recent queries (newest last)."""

    gaps_s: tuple[float, ...] = ()  # idle time before each of the recent queries
    result_bytes: tuple[int, ...] = ()  # response bytes of the recent queries
    client_type: str = ""


def parse_profile(value: str) -> Profile:
    """The profile a user set with ``sparkfleet.profile``; ValueError with the allowed values."""
    try:
        return Profile(value.strip().lower())
    except ValueError:
        allowed = "|".join(p.value for p in Profile)
        raise ValueError(f"{PROFILE_CONF} must be {allowed}, not {value!r}") from None


def infer_profile(
    estimate: Estimate | None,
    activity: SessionActivity,
    override: Profile | None = None,
    reclassified_as_batch: bool = False,
    writes: bool = False,
) -> tuple[Profile, str]:
    """The query's profile and the reason, in words."""
    if override is not None:
        return override, f"set by {PROFILE_CONF}"
    # History of successful runs outranks the watchdog's one observation (which may have been a
    # cold cluster or a loaded machine): it says what the workload really costs.
    if reclassified_as_batch and (estimate is None or estimate.source != "history"):
        return Profile.BATCH, "this workload ran far past its estimate before"
    cost = estimate.cost_class if estimate is not None else CostClass.SMALL
    if cost is CostClass.LARGE:
        return Profile.BATCH, "large"
    gaps = activity.gaps_s[-_RECENT:]
    results = activity.result_bytes[-_RECENT:]
    scripted = len(gaps) >= 3 and statistics.median(gaps) < _SCRIPT_GAP_S
    thinking = len(gaps) >= 1 and statistics.median(gaps) >= _THINKING_GAP_S
    bulk = bool(results) and statistics.median(results) >= _LARGE_RESULT_BYTES
    pipeline = _client_named(activity.client_type, _PIPELINE_CLIENTS)
    person = _client_named(activity.client_type, _PERSON_CLIENTS)
    if cost is CostClass.MEDIUM:
        if writes:
            return Profile.BATCH, "medium-sized write"
        if scripted or bulk:
            return Profile.BATCH, "medium-sized, from a session that runs queries back to back"
        if pipeline and not thinking:
            return Profile.BATCH, f"medium-sized, from a pipeline client ({pipeline})"
        if person:
            return Profile.INTERACTIVE, f"medium-sized, from a notebook or BI client ({person})"
        return Profile.INTERACTIVE, "medium-sized, from a session with think time" if thinking else "medium-sized"
    if writes and scripted:
        return Profile.BATCH, "write from a session that runs queries back to back"
    if writes and pipeline:
        return Profile.BATCH, f"write from a pipeline client ({pipeline})"
    if bulk:
        return Profile.BATCH, "the session reads results in bulk"
    return Profile.INTERACTIVE, "small" if cost is CostClass.SMALL else "tiny"


def _client_named(client_type: str, words: tuple[str, ...]) -> str:
    """The first of ``words`` the client type names, or ""."""
    lowered = client_type.lower()
    return next((w for w in words if w in lowered), "")
