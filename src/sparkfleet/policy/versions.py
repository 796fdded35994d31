"""Pure versions policy: which runtime a workload runs on, and what a failure on a new one means.

Versionless Spark: users never pick a Spark version. Runtimes move through stages:

- ``canary``: new; a deterministic fraction of workload fingerprints runs on it;
- ``general``: every workload that is not pinned or in the canary fraction runs on it;
- ``previous``: the runtime ``general`` replaced; only workloads pinned to it run there;
- ``retired``: runs nothing (retired once no workload is pinned to it).

"Blink twice": a workload that fails on a runtime newer than the one before it, with an error that
is neither transient nor handled by recovery (cluster lost, out of memory), is run again on the
previous runtime. If that run succeeds, the runtime broke it: the workload is pinned to the
previous runtime and a regression recorded. If it fails too, the error is the workload's own and
nothing is pinned. A workload much slower on the new runtime than its history on the previous one
(on comparable input) is a performance regression and is pinned too. A pinned workload is probed
again when a newer runtime arrives, and unpinned when it passes there.

No I/O and no clock: the gateway and the store gather the facts, this decides.
"""

from __future__ import annotations

import enum
import hashlib
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence


class Stage(str, enum.Enum):
    CANARY = "canary"
    GENERAL = "general"
    PREVIOUS = "previous"
    RETIRED = "retired"


SERVING = frozenset({Stage.CANARY, Stage.GENERAL, Stage.PREVIOUS})


@dataclass(frozen=True, slots=True)
class RuntimeFacts:
    name: str
    stage: Stage
    # Order of release: larger is newer (the order runtimes were added in).
    order: int


@dataclass(frozen=True, slots=True)
class RolloutSettings:
    # Share of workload fingerprints a canary runtime runs.
    canary_fraction: float = 0.1
    # A canary is promoted to general after this many distinct workloads ran on it ...
    promote_after_workloads: int = 20
    # ... with at most this share of them regressed (pinned back).
    max_regression_rate: float = 0.05
    # A workload this many times slower on the new runtime than on the previous one is a
    # performance regression ...
    slowdown_ratio: float = 2.0
    # ... once each side has this many runs on comparable input (within this factor).
    min_runs_for_slowdown: int = 3
    comparable_input_factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_fraction <= 1.0:
            raise ValueError(f"canary_fraction must be within [0, 1], not {self.canary_fraction}")
        if self.slowdown_ratio <= 1.0:
            raise ValueError(f"slowdown_ratio must be above 1, not {self.slowdown_ratio}")
        if self.promote_after_workloads < 1 or self.min_runs_for_slowdown < 1:
            raise ValueError("promote_after_workloads and min_runs_for_slowdown must be at least 1")


# ---- assignment --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assignment:
    runtime: str
    reason: str
    # The runtime to run it on again if it fails with a suspect error ("blink twice"), or "".
    fallback: str = ""
    # A pinned workload tried on a newer runtime: unpinned if it passes there.
    probe: bool = False


def canary_bucket(fingerprint: str, runtime: str) -> float:
    """Where a workload falls in [0, 1) for a runtime's canary: stable across runs and restarts,
    and independent between runtimes (each rollout tries a different subset first)."""
    digest = hashlib.sha256(f"{runtime}\0{fingerprint}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_runtime(
    fingerprint: str,
    runtimes: Sequence[RuntimeFacts],
    pins: Mapping[str, str],
    settings: RolloutSettings = RolloutSettings(),
    available: frozenset[str] | None = None,
    broken_on: str = "",
    is_read: bool = False,
) -> Assignment:
    """The runtime ``fingerprint``'s next run goes to, with its reason and fallback.
    ``available``: the runtimes that have (or can get) clusters; None: all of them. A runtime
    with none is skipped (a fixed fleet without canary clusters runs no canary). A pinned read
    (``broken_on``: the runtime that broke it) is probed on a runtime newer than that one, with
    its pinned runtime to fall back on."""
    if available is not None:
        runtimes = [r for r in runtimes if r.name in available or r.stage is Stage.GENERAL]
    serving = {r.name: r for r in runtimes if r.stage in SERVING}
    general = _newest(r for r in runtimes if r.stage is Stage.GENERAL)
    if general is None:
        raise ValueError("no runtime is in the general stage")
    pinned = pins.get(fingerprint)
    if pinned is not None and pinned in serving:
        probe = probe_for(pinned, broken_on or pinned, runtimes, is_read) if broken_on else None
        if probe is not None:
            return Assignment(probe.runtime, probe.reason, fallback=pinned, probe=True)
        return Assignment(pinned, f"pinned to {pinned}")
    canary = _newest(r for r in runtimes if r.stage is Stage.CANARY)
    if canary is not None:
        bucket = canary_bucket(fingerprint, canary.name)
        if bucket < settings.canary_fraction:
            return Assignment(canary.name, f"canary of {canary.name} ({settings.canary_fraction:.0%} of workloads; "
                                           f"this one falls at {bucket:.3f})", fallback=general.name)
    before = previous_of(general.name, runtimes)
    return Assignment(general.name, f"general runtime {general.name}", fallback=before.name if before else "")


def previous_of(name: str, runtimes: Sequence[RuntimeFacts]) -> RuntimeFacts | None:
    """The newest serving runtime older than ``name``: where a workload that fails on it blinks."""
    order = {r.name: r.order for r in runtimes}[name]
    return _newest(r for r in runtimes if r.stage in (Stage.GENERAL, Stage.PREVIOUS) and r.order < order)


def _newest(candidates) -> RuntimeFacts | None:  # type: ignore[no-untyped-def]
    return max(candidates, key=lambda r: r.order, default=None)


# ---- failures ----------------------------------------------------------------------------------


class FailureKind(str, enum.Enum):
    SUSPECT = "suspect"  # may be the runtime's fault: worth a run on the previous runtime
    TRANSIENT = "transient"  # retrying later may pass anywhere: not evidence against a runtime
    RECOVERY = "recovery"  # cluster lost, out of memory: policy/recovery.py handles it
    NOT_A_QUERY_ERROR = "not a query error"  # cancelled, session handles, sparkfleet's own limits


_RECOVERY_CLASSES = ("SPARKFLEET.CLUSTER_LOST", "SPARKFLEET.OUT_OF_MEMORY")
_NOT_QUERY_PREFIXES = ("SPARKFLEET.", "INVALID_HANDLE.", "OPERATION_CANCELED", "INVALID_CURSOR.")
_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"})


def classify_failure(error_class: str | None, grpc_code: str) -> FailureKind:
    """What a failed run says about its runtime. Most deterministic errors are suspects, the
    analysis and data errors included: a runtime whose defaults differ (ANSI mode, parser, time
    zone handling) breaks a workload with exactly such errors. The run on the previous runtime
    tells them apart: a user's error fails there too."""
    error_class = error_class or ""
    if error_class in _RECOVERY_CLASSES:
        return FailureKind.RECOVERY
    if error_class.startswith(_NOT_QUERY_PREFIXES):
        return FailureKind.NOT_A_QUERY_ERROR
    if grpc_code in _TRANSIENT_CODES:
        return FailureKind.TRANSIENT
    return FailureKind.SUSPECT


def blink_refusal(kind: str, idempotent: bool, responses_forwarded: int) -> str | None:
    """Why a failed run may not run again on the previous runtime, or None if it may: only
    what a second run cannot duplicate (reads, session-state changes, idempotent writes), and
    only while the client holds none of the first run's results."""
    if responses_forwarded:
        return f"the client already received {responses_forwarded} response(s) of the failed run"
    if kind in ("read", "session_state") or idempotent:
        return None
    return f"a {kind} that is not idempotent is never run twice"


@dataclass(frozen=True, slots=True)
class Pin:
    """Pin the workload to ``runtime``: ``broken_on`` broke it (a regression)."""

    fingerprint: str
    runtime: str
    broken_on: str
    reason: str


@dataclass(frozen=True, slots=True)
class UsersError:
    """The workload fails on both runtimes: its error is its own; nothing is pinned."""

    reason: str


def after_blink(fingerprint: str, failed_on: str, retried_on: str, error_class: str | None,
                retry_succeeded: bool) -> Pin | UsersError:
    """The verdict once a suspect failure on ``failed_on`` was run again on ``retried_on``."""
    what = error_class or "an error"
    if retry_succeeded:
        return Pin(fingerprint, retried_on, failed_on,
                   f"failed on {failed_on} with {what} and succeeded on {retried_on}: pinned to {retried_on}")
    return UsersError(f"failed on {failed_on} with {what} and on {retried_on} too: the workload's own error")


# ---- performance -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunFacts:
    seconds: float
    input_bytes: int  # what it read (0 when unknown)


@dataclass(frozen=True, slots=True)
class Slowdown:
    ratio: float
    reason: str


def slowdown(on_new: Sequence[RunFacts], on_previous: Sequence[RunFacts],
             settings: RolloutSettings = RolloutSettings()) -> Slowdown | None:
    """Whether a workload runs ``slowdown_ratio`` times slower on the new runtime than on the
    previous one, comparing medians of runs whose input is comparable; None when it does not or
    the history is too short to tell."""
    if len(on_new) < settings.min_runs_for_slowdown or len(on_previous) < settings.min_runs_for_slowdown:
        return None
    reference = statistics.median(r.input_bytes for r in on_new)
    lo, hi = reference / settings.comparable_input_factor, reference * settings.comparable_input_factor

    def comparable(runs: Sequence[RunFacts]) -> list[float]:
        return [r.seconds for r in runs if reference == 0 or lo <= r.input_bytes <= hi]

    new, old = comparable(on_new), comparable(on_previous)
    if len(new) < settings.min_runs_for_slowdown or len(old) < settings.min_runs_for_slowdown:
        return None
    new_median, old_median = statistics.median(new), statistics.median(old)
    if old_median <= 0:
        return None
    ratio = new_median / old_median
    if ratio < settings.slowdown_ratio:
        return None
    return Slowdown(ratio, f"median {new_median:.2f}s over {len(new)} runs against {old_median:.2f}s over "
                           f"{len(old)} runs before: {ratio:.1f}x slower (limit {settings.slowdown_ratio:g}x)")


# ---- rollout -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeRecord:
    """A runtime and what its workloads showed so far."""

    facts: RuntimeFacts
    workloads_run: int = 0  # distinct workload fingerprints that ran on it in its current stage
    workloads_regressed: int = 0  # of those, pinned back because of it
    pinned_to_it: int = 0  # workloads pinned to it


@dataclass(frozen=True, slots=True)
class ChangeStage:
    runtime: str
    stage: Stage
    reason: str


@dataclass(frozen=True, slots=True)
class HoldRollout:
    runtime: str
    reason: str


RolloutAction = ChangeStage | HoldRollout


def plan_rollout(records: Sequence[RuntimeRecord], settings: RolloutSettings = RolloutSettings()) -> list[RolloutAction]:
    """Stage changes that observed success calls for: promote a canary that ran enough workloads
    with few regressions (its general becomes previous), hold one with too many, and retire a
    previous runtime nothing is pinned to."""
    actions: list[RolloutAction] = []
    general = [r for r in records if r.facts.stage is Stage.GENERAL]
    for r in records:
        if r.facts.stage is not Stage.CANARY:
            continue
        rate = r.workloads_regressed / r.workloads_run if r.workloads_run else 0.0
        if rate > settings.max_regression_rate:
            actions.append(HoldRollout(r.facts.name, f"{r.workloads_regressed} of {r.workloads_run} workloads "
                                                     f"regressed ({rate:.0%} > {settings.max_regression_rate:.0%})"))
        elif r.workloads_run >= settings.promote_after_workloads and all(g.facts.order < r.facts.order for g in general):
            actions.append(ChangeStage(r.facts.name, Stage.GENERAL,
                                       f"{r.workloads_run} workloads ran on it, {r.workloads_regressed} regressed "
                                       f"({rate:.0%} <= {settings.max_regression_rate:.0%})"))
            for g in general:
                actions.append(ChangeStage(g.facts.name, Stage.PREVIOUS, f"{r.facts.name} became general"))
    # A previous runtime is what a failure on the general one blinks back to: it stays until the
    # general runtime has proven itself (as many workloads as promote a canary) and nothing is
    # pinned to it.
    demoted = {a.runtime for a in actions if isinstance(a, ChangeStage) and a.stage is Stage.PREVIOUS}
    proven = bool(general) and all(g.workloads_run >= settings.promote_after_workloads for g in general)
    for r in records:
        if (r.facts.stage is Stage.PREVIOUS and r.pinned_to_it == 0 and r.facts.name not in demoted and proven):
            actions.append(ChangeStage(r.facts.name, Stage.RETIRED,
                                       "no workload is pinned to it and the general runtime ran "
                                       f"{min(g.workloads_run for g in general)} workloads"))
    return actions


# ---- unpinning ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """Run a pinned workload's next (safe) run on ``runtime``, falling back to ``pinned``; unpin
    it if it passes."""

    runtime: str
    pinned: str
    reason: str


def probe_for(pinned_runtime: str, broken_on: str, runtimes: Sequence[RuntimeFacts],
              is_read: bool) -> Probe | None:
    """Whether a workload pinned to ``pinned_runtime`` (because ``broken_on`` broke it) should try
    a newer runtime: only reads (a write is not repeated to find out), and only on a runtime newer
    than the one that broke it."""
    if not is_read:
        return None
    by_name = {r.name: r for r in runtimes}
    broken = by_name.get(broken_on)
    if broken is None and pinned_runtime not in by_name:
        return None
    floor = broken.order if broken is not None else by_name[pinned_runtime].order
    newer = _newest(r for r in runtimes if r.stage in (Stage.GENERAL, Stage.CANARY) and r.order > floor)
    if newer is None:
        return None
    return Probe(newer.name, pinned_runtime, f"pinned to {pinned_runtime} since {broken_on} broke it; "
                                              f"{newer.name} is newer: probing it, with {pinned_runtime} to fall back on")

