"""Pure watchdog policy: which running queries are runaways, and what to do about each.

A query is a runaway when it runs far beyond what was expected of it: an interactive query past its
time budget, or any query several times slower than its estimate. The policy reclassifies the
workload as batch, so that its future runs are placed away from interactive work; when the user
set ``sparkfleet.maxQueryDuration`` and the query exceeds it, the query is cancelled with a
clear error. Each query is acted on at most once per kind of action.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkfleet.fleet.model import Profile

MAX_DURATION_CONF = "sparkfleet.maxQueryDuration"


@dataclass(frozen=True, slots=True)
class WatchdogSettings:
    # Seconds an interactive query may run before its workload counts as batch.
    interactive_budget_s: float = 30.0
    # A query slower than this many times its expected wall time is a runaway...
    runaway_factor: float = 10.0
    # ...once it has run at least this long (tiny estimates are noisy).
    runaway_min_s: float = 10.0


@dataclass(frozen=True, slots=True)
class WatchedQuery:
    query_id: str
    fingerprint: str
    profile: Profile
    started_at: float  # monotonic seconds
    expected_s: float | None  # expected wall time on its cluster; None when unknown
    max_duration_s: float | None = None  # the session's sparkfleet.maxQueryDuration
    reclassified: bool = False  # already reclassified (act once)
    cancelling: bool = False  # already being cancelled


@dataclass(frozen=True, slots=True)
class Cancel:
    query_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reclassify:
    """Treat future runs of ``fingerprint`` as batch."""

    query_id: str
    fingerprint: str
    reason: str


WatchdogDecision = Cancel | Reclassify


def parse_duration_s(value: str) -> float:
    """``sparkfleet.maxQueryDuration`` as seconds: ``90``, ``90s``, ``5m``, ``1h``, ``250ms``."""
    text = value.strip().lower()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            number, unit = text[: -len(suffix)], factor
            break
    else:
        number, unit = text, 1.0
    try:
        seconds = float(number) * unit
    except ValueError:
        raise ValueError(f"{MAX_DURATION_CONF} must be a duration such as 90s, 5m or 1h, not {value!r}") from None
    if seconds <= 0:
        raise ValueError(f"{MAX_DURATION_CONF} must be positive, not {value!r}")
    return seconds


def check_running(
    queries: list[WatchedQuery], now: float, settings: WatchdogSettings = WatchdogSettings()
) -> list[WatchdogDecision]:
    """Decisions for the queries that ran too long; nothing for the others."""
    decisions: list[WatchdogDecision] = []
    for query in queries:
        elapsed = now - query.started_at
        if query.max_duration_s is not None and elapsed > query.max_duration_s and not query.cancelling:
            decisions.append(
                Cancel(
                    query.query_id,
                    f"it ran {elapsed:.0f}s, longer than {MAX_DURATION_CONF}={query.max_duration_s:g}s set by "
                    "the session",
                )
            )
            continue
        if query.reclassified or not query.fingerprint:
            continue
        if query.profile is Profile.INTERACTIVE and elapsed > settings.interactive_budget_s:
            decisions.append(
                Reclassify(
                    query.query_id, query.fingerprint,
                    f"interactive query still running after {elapsed:.0f}s (budget "
                    f"{settings.interactive_budget_s:g}s): its workload is batch from now on",
                )
            )
        elif (
            query.expected_s is not None
            and elapsed >= settings.runaway_min_s
            and elapsed > settings.runaway_factor * query.expected_s
        ):
            decisions.append(
                Reclassify(
                    query.query_id, query.fingerprint,
                    f"running {elapsed:.0f}s, over {settings.runaway_factor:g}x its expected "
                    f"{query.expected_s:.1f}s: its workload is batch from now on",
                )
            )
    return decisions
