"""What ``sparkfleet bench faults`` observed and its summaries: plain data and pure functions.

Times are seconds of one monotonic clock shared by the client sessions and the killer, so a
query's start and end compare with the moment a cluster was killed.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from sparkfleet.bench.harness import median

@dataclass(frozen=True, slots=True)
class QueryOutcome:
    session: int
    kind: str
    started: float
    ended: float
    error_class: str | None = None  # set when the query raised
    message: str = ""
    wrong: str = ""  # set when the query returned a wrong result

    @property
    def ok(self) -> bool:
        return self.error_class is None and not self.wrong

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True, slots=True)
class Kill:
    cluster_id: str
    pid: int
    at: float
    left_ready_s: float | None  # until the gateway no longer listed it as ready
    recovered_s: float | None  # until the fleet had its full count of ready clusters again
    replaced_by: str = ""  # the ready cluster that was not there before the kill


_ERROR_CLASS = re.compile(r"\[([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)\]")


def error_class_of(exc: BaseException) -> str:
    """Spark's error class (condition) if the exception has one, else the first ``[CLASS]`` of
    its message, else the exception's type name."""
    getter = getattr(exc, "getCondition", None)
    try:
        condition = getter() if callable(getter) else None
    except Exception:  # noqa: BLE001 - a half-built exception; fall back to the message
        condition = None
    if condition:
        return str(condition)
    match = _ERROR_CLASS.search(str(exc))
    return match.group(1) if match else type(exc).__name__


def first_line(text: str, limit: int = 240) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def ready_count(clusters: Sequence[dict[str, Any]]) -> int:
    return sum(1 for c in clusters if c["state"] == "ready")


def pick_victim(clusters: Sequence[dict[str, Any]], rng: random.Random) -> dict[str, Any] | None:
    """A ready cluster with a pid, chosen with ``rng``; None if there is none."""
    candidates = sorted((c for c in clusters if c["state"] == "ready" and c.get("pid")), key=lambda c: c["id"])
    return rng.choice(candidates) if candidates else None


# ---- summaries (pure) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindSummary:
    kind: str
    ok: int
    failed: int
    wrong: int
    p50_s: float  # of successful queries; NaN when none
    max_s: float


def summarize_kinds(outcomes: Sequence[QueryOutcome], kinds: Sequence[str]) -> list[KindSummary]:
    rows = []
    for kind in kinds:
        mine = [o for o in outcomes if o.kind == kind]
        times = [o.seconds for o in mine if o.ok]
        rows.append(KindSummary(
            kind, len(times), sum(1 for o in mine if o.error_class), sum(1 for o in mine if o.wrong),
            median(times), max(times, default=math.nan),
        ))
    return rows


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    what: str  # the error class, or "wrong result"
    count: int
    example: str  # the first message


def group_problems(outcomes: Sequence[QueryOutcome]) -> list[Problem]:
    """Failures and wrong results grouped by (kind, error class), most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str] = {}
    for o in outcomes:
        if o.ok:
            continue
        key = (o.kind, o.error_class or "wrong result")
        counts[key] += 1
        examples.setdefault(key, o.message or o.wrong)
    return [Problem(kind, what, n, examples[(kind, what)]) for (kind, what), n in counts.most_common()]


@dataclass(frozen=True, slots=True)
class KillImpact:
    kill: Kill
    failures: int  # client-visible failures that ended between this kill and the next
    failed_sessions: tuple[int, ...]
    # From the kill until every failed session completed a query again: 0 when none failed,
    # None when one of them never succeeded again before the run ended.
    gap_s: float | None
    slowest_across_s: float | None  # longest successful query that was running at the kill


def kill_impacts(kills: Sequence[Kill], outcomes: Sequence[QueryOutcome]) -> list[KillImpact]:
    impacts = []
    ordered = sorted(kills, key=lambda k: k.at)
    for i, kill in enumerate(ordered):
        window_end = ordered[i + 1].at if i + 1 < len(ordered) else math.inf
        failed = [o for o in outcomes if o.error_class and kill.at <= o.ended < window_end]
        sessions = tuple(sorted({o.session for o in failed}))
        gap: float | None = 0.0
        for session in sessions:
            last_failure = max(o.ended for o in failed if o.session == session)
            back = [o.ended for o in outcomes if o.session == session and o.ok and o.ended > last_failure]
            if not back:
                gap = None
                break
            gap = max(gap, min(back) - kill.at)  # type: ignore[type-var]
        spanning = [o.seconds for o in outcomes if o.ok and o.started <= kill.at <= o.ended]
        impacts.append(KillImpact(kill, len(failed), sessions, gap, max(spanning, default=None)))
    return impacts


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max); NaNs when there are no values."""
    if not values:
        return math.nan, math.nan, math.nan
    return min(values), median(values), max(values)


def retried_queries(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gateway query records with more than one attempt (the gateway ran them again)."""
    return [r for r in records if len(r.get("attempts") or ()) > 1]


def exit_code(outcomes: Sequence[QueryOutcome]) -> int:
    return 0 if all(o.ok for o in outcomes) else 1
