"""The runtime each workload runs on, and what the gateway learns when a new one breaks it.

The shell around ``policy/versions.py``: it reads the registry and the pins from the store, gives
each ExecutePlan its runtime (and the runtime to blink back to), and records the verdicts: a pin
and a regression when a blink succeeded, a performance regression (and a pin) when a workload's
history shows it much slower on its runtime than on the one before, and the end of a pin when a
probe on a newer runtime passed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sparkfleet.clock import Clock
from sparkfleet.fleet.runtime_registry import RuntimeRegistry
from sparkfleet.policy.versions import (
    Assignment,
    ChangeStage,
    FailureKind,
    Pin,
    RolloutSettings,
    RunFacts,
    RuntimeRecord,
    Stage,
    after_blink,
    assign_runtime,
    classify_failure,
    plan_rollout,
    previous_of,
    slowdown,
)
from sparkfleet.store import runtimes as rows
from sparkfleet.store.db import Database
from sparkfleet.store.history import recent_runs

log = logging.getLogger(__name__)

# How long the registry and the pins read from the store stay fresh: `sparkfleet runtimes ...`
# in another process is seen within this.
_FRESH_S = 2.0


@dataclass
class FailedRun:
    """The run on the newer runtime that failed, kept while its blink runs."""

    runtime: str
    error_class: str
    message: str
    seconds: float
    query_id: str
    # What the client gets if the run on the previous runtime fails too: the original error.
    error: BaseException


class BlinkTwice(Exception):
    """Internal to the gateway: run the failed operation again on runtime ``to``."""

    def __init__(self, failed: FailedRun, to: str) -> None:
        super().__init__(f"blink from {failed.runtime} to {to}")
        self.failed = failed
        self.to = to


class WorkloadRuntimes:
    def __init__(self, registry: RuntimeRegistry, db: Database, clock: Clock,
                 settings: RolloutSettings = RolloutSettings()) -> None:
        self._registry = registry
        self._db = db
        self._clock = clock
        self.settings = settings
        self._pins: dict[str, str] = {}
        self._broken_on: dict[str, str] = {}
        self._read_at = float("-inf")
        self._held: dict[str, str] = {}  # runtime -> why its rollout is held (logged once)
        # (workload, runtime) pairs that succeeded since the last slowdown check.
        self._slowdown_candidates: set[tuple[str, str]] = set()

    def _refresh(self) -> None:
        now = self._clock.monotonic()
        if now - self._read_at >= _FRESH_S:
            self._registry.refresh()
            self._pins = rows.pins(self._db)
            self._broken_on = rows.broken_on(self._db)
            self._read_at = now

    def advance_rollout(self) -> list[str]:
        """Apply the stage changes observed success calls for (policy/versions.plan_rollout);
        return what changed, each with its reason."""
        self._registry.refresh()
        pinned = rows.pins(self._db)
        records = []
        for r in self._registry.records():
            facts = next(f for f in self._registry.facts() if f.name == r["name"])
            records.append(RuntimeRecord(
                facts,
                workloads_run=rows.workloads_run_on(self._db, r["name"], r["stage_changed_at"]),
                workloads_regressed=rows.workloads_regressed_on(self._db, r["name"]),
                pinned_to_it=sum(1 for runtime in pinned.values() if runtime == r["name"]),
            ))
        changed = []
        for action in plan_rollout(records, self.settings):
            if isinstance(action, ChangeStage):
                self._registry.set_stage(action.runtime, action.stage, f"rollout: {action.reason}")
                changed.append(f"{action.runtime} -> {action.stage.value}: {action.reason}")
            elif action.reason != self._held.get(action.runtime):
                self._held[action.runtime] = action.reason
                log.warning("rollout of %s held: %s", action.runtime, action.reason)
        for line in changed:
            log.warning("rollout: %s", line)
        self._read_at = float("-inf")
        return changed

    async def advance_every(self, seconds: float, promote: bool = True) -> None:
        """Every ``seconds`` until cancelled: look for slowdowns among the workloads that succeeded
        since the last pass, and (``promote``) advance the rollout."""
        while True:
            await asyncio.sleep(seconds)
            try:
                self.check_slowdowns()
                if promote:
                    self.advance_rollout()
            except Exception:  # the loop must outlive a bad pass (e.g. the store busy a moment)
                log.exception("rollout pass failed")

    def check_slowdowns(self) -> list[str]:
        """Check each (workload, runtime) that succeeded since the last pass; the history reads
        happen here, off the queries' path."""
        pending, self._slowdown_candidates = self._slowdown_candidates, set()
        found = [self.check_slowdown(fingerprint, runtime) for fingerprint, runtime in sorted(pending)]
        return [reason for reason in found if reason is not None]

    def serving(self) -> int:
        self._refresh()
        return sum(1 for f in self._registry.facts() if f.stage is not Stage.RETIRED)

    def assign(self, fingerprint: str, available: frozenset[str] | None = None,
               is_read: bool = False) -> Assignment | None:
        """Where the workload runs; None when a single runtime serves (nothing to choose).
        ``available``: runtimes that have clusters (None: any can get one); ``is_read``: a pinned
        read may be probed on a newer runtime."""
        self._refresh()
        facts = self._registry.facts()
        if sum(1 for f in facts if f.stage is not Stage.RETIRED) < 2:
            return None
        return assign_runtime(fingerprint, facts, self._pins, self.settings, available,
                              self._broken_on.get(fingerprint, ""), is_read)

    @staticmethod
    def suspect(error_class: str | None, grpc_code: str) -> bool:
        """Whether a failure may be the runtime's fault (worth a run on the previous runtime)."""
        return classify_failure(error_class, grpc_code) is FailureKind.SUSPECT

    def previous_of(self, runtime: str) -> str:
        self._refresh()
        before = previous_of(runtime, self._registry.facts()) if runtime in {f.name for f in self._registry.facts()} else None
        return before.name if before is not None else ""

    def after_success(self, op: Any, cluster: Any) -> None:
        """An operation succeeded on ``cluster``: pin its workload if it did so after a blink;
        else queue it for the next slowdown check against the runtime before ``cluster``'s."""
        fingerprint = op.traits.fingerprint
        runtime = cluster.runtime.name
        if op.blinked is not None:
            seconds = self._clock.monotonic() - op.started_mono if op.started_mono is not None else 0.0
            self.blink_succeeded(fingerprint, op.blinked, runtime, {"query_id": op.id, "runtime": runtime,
                                                                    "cluster_id": cluster.id, "seconds": round(seconds, 3)})
        elif op.probing and fingerprint in self._pins:
            rows.unpin(self._db, fingerprint)
            self._pins.pop(fingerprint, None)
            self._broken_on.pop(fingerprint, None)
            log.warning("workload %s passed on %s: unpinned", fingerprint, runtime)
        elif self.serving() > 1 and fingerprint:
            self._slowdown_candidates.add((fingerprint, runtime))  # checked by the next pass

    def blink_succeeded(self, fingerprint: str, failed: FailedRun, passed_on: str, passed_query: dict[str, Any]) -> Pin:
        """The run on ``passed_on`` succeeded where ``failed`` did not: pin, and record the regression."""
        verdict = after_blink(fingerprint, failed.runtime, passed_on, failed.error_class, retry_succeeded=True)
        assert isinstance(verdict, Pin)
        now = self._clock.now()
        rows.pin(self._db, fingerprint, passed_on, failed.runtime, "error", verdict.reason, now)
        rows.record_regression(
            self._db, "error", failed.runtime, passed_on, fingerprint, failed.error_class, failed.message,
            {"query_id": failed.query_id, "runtime": failed.runtime, "seconds": round(failed.seconds, 3)},
            passed_query, now,
        )
        self._pins[fingerprint] = passed_on
        self._broken_on[fingerprint] = failed.runtime
        log.warning("runtime regression: workload %s %s", fingerprint, verdict.reason)
        return verdict

    def blink_failed(self, fingerprint: str, failed: FailedRun, retried_on: str) -> str:
        """The run on the previous runtime failed too: the workload's own error; nothing is pinned."""
        return after_blink(fingerprint, failed.runtime, retried_on, failed.error_class, retry_succeeded=False).reason

    def check_slowdown(self, fingerprint: str, runtime: str) -> str | None:
        """After a successful run on ``runtime``: if history shows the workload far slower there
        than on the runtime before it, pin it there and record a performance regression."""
        self._refresh()
        if fingerprint in self._pins:
            return None
        previous = self.previous_of(runtime)
        if not previous:
            return None
        runs = [r for r in recent_runs(self._db, fingerprint, last_n=40) if r.outcome == "succeeded" and r.duration_ms]
        on_new = [RunFacts(r.duration_ms / 1000, r.input_bytes or 0) for r in runs if r.runtime == runtime]  # type: ignore[operator]
        on_old = [RunFacts(r.duration_ms / 1000, r.input_bytes or 0) for r in runs if r.runtime == previous]  # type: ignore[operator]
        found = slowdown(on_new, on_old, self.settings)
        if found is None:
            return None
        now = self._clock.now()
        reason = f"{found.reason} on {runtime} than on {previous}: pinned to {previous}"
        rows.pin(self._db, fingerprint, previous, runtime, "slowdown", reason, now)
        rows.record_regression(self._db, "slowdown", runtime, previous, fingerprint, "", found.reason,
                               {"runtime": runtime, "runs": len(on_new)}, {"runtime": previous, "runs": len(on_old)},
                               now)
        self._pins[fingerprint] = previous
        self._broken_on[fingerprint] = runtime
        log.warning("performance regression: workload %s %s", fingerprint, reason)
        return reason
