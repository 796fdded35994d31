"""Pure recovery policy: may a query whose cluster was lost run again on another one?

Invariant: a retry never duplicates an external effect, and never repeats a query that took its
cluster down by running it out of memory (the other queries lost with that cluster retry). Reads and session-state changes retry, as
long as the client holds none of the result yet; writes only when re-running them is idempotent,
when their target provably still does not exist, or when the request never reached the cluster.
No I/O and no clock: the gateway gathers the facts, this decides, the gateway carries it out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sparkfleet.plan.intent import QueryIntent


@dataclass(frozen=True, slots=True)
class FailureFacts:
    """What the gateway knows about the attempt that was running when its cluster was lost."""

    cluster_id: str
    # False only when the request provably never reached the cluster (e.g. the channel failed
    # before sending): nothing can have committed then.
    sent: bool
    responses_forwarded: int  # response messages the client already received for this operation
    attempts: int  # attempts made so far, the failed one included
    # Looked up after the failure, once the lost cluster can no longer commit (a cluster still
    # running could create the target after the check); None when it could not be told.
    target_exists: bool | None
    max_attempts: int = 3
    # The cluster ran out of memory and its log names this query's session as the one whose task
    # did (``policy/oom.py``), with the words that show it; "" when it did not, or is not known.
    caused_out_of_memory: str = ""
    # The lost cluster's size, and the next larger size class a cluster can be started in (or
    # already runs in), if any: where an out-of-memory query may run again.
    lost_size: str = ""
    lost_memory_mb: int = 0
    larger_size: str = ""
    # Why the query may not move to a larger size class when its tenant's quota is what stops it
    # (e.g. its max_size_class); "" otherwise.
    size_quota: str = ""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts counts the failed attempt too, so it is at least 1, not {self.attempts}")
        if self.responses_forwarded < 0:
            raise ValueError(f"responses_forwarded cannot be negative ({self.responses_forwarded})")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")


@dataclass(frozen=True, slots=True)
class Retry:
    """Run the query again on another cluster (with more memory than ``min_memory_mb``, if set)."""

    reason: str
    min_memory_mb: int = 0


@dataclass(frozen=True, slots=True)
class Surface:
    """Give the client the failure; ``reason`` says why it was not retried."""

    reason: str


RetryDecision = Retry | Surface


def decide_retry(intent: QueryIntent, failure: FailureFacts) -> RetryDecision:
    """Retry or surface the loss of ``failure.cluster_id``; every reason names it and the operation.

    Reasons start "retried" or "not retried" so that they read on as "The query was ...".
    """
    what, cluster = intent.description, failure.cluster_id
    if failure.attempts >= failure.max_attempts:
        plural = "s" if failure.attempts != 1 else ""
        return Surface(f"not retried: gave up after {failure.attempts} attempt{plural}; the {what} was "
                       f"running on cluster {cluster} when it was lost")
    if failure.caused_out_of_memory:
        return _decide_on_memory(intent, failure)
    if failure.responses_forwarded:
        # A second run could return other rows or another order; the client cannot be told to
        # drop what it already holds.
        plural = "s" if failure.responses_forwarded != 1 else ""
        return Surface(f"not retried: the client already received {failure.responses_forwarded} "
                       f"response{plural} of the {what} from cluster {cluster} before it was lost; "
                       "a re-run could return different results")
    if not failure.sent:
        return Retry(f"retried: the request for the {what} never reached cluster {cluster}, "
                     "so it cannot have taken effect")
    if intent.kind == "read":
        return Retry(f"retried on another cluster: the {what} changes nothing outside the session "
                     f"and no result had reached the client when cluster {cluster} was lost")
    if intent.kind == "session_state":
        return Retry(f"retried on another cluster: {what} (nothing outside the session changes); "
                     f"cluster {cluster} was lost")
    if intent.idempotent:
        return Retry(f"retried on another cluster: the {what} is idempotent, so re-running it after "
                     f"cluster {cluster} was lost leaves the same result")
    if intent.needs_absent_target:
        return _decide_on_target(intent, failure)
    committed = "committed" if intent.kind == "write" else "taken effect"
    return Surface(f"not retried: the {what} may have {committed} before cluster {cluster} "
                   f"was lost; {intent.rerun_risk or 're-running it could repeat its effect'}")


def _decide_on_memory(intent: QueryIntent, failure: FailureFacts) -> RetryDecision:
    """The query ran its cluster out of memory: never again on a cluster that small (it would fail
    the same way and take other queries down with it); on a larger one if a re-run is safe."""
    what, cluster = intent.description, failure.cluster_id
    ran_out = f"the {what} ran cluster {cluster} out of memory ({failure.caused_out_of_memory})"
    safe = decide_retry(intent, dataclasses.replace(failure, caused_out_of_memory=""))
    if not isinstance(safe, Retry):
        return Surface(f"not retried: {ran_out}; and {safe.reason.removeprefix('not retried: ')}")
    if failure.size_quota:
        return Surface(f"not retried: {ran_out}; {failure.size_quota}, and on a cluster of the same size it "
                       "would fail the same way. Make the query need less memory, or ask an administrator to "
                       "raise the quota")
    if not failure.larger_size:
        return Surface(f"not retried: {ran_out}; no larger size class can be started, and on a cluster "
                       "of the same size it would fail the same way and take other queries down with it")
    return Retry(f"retried on a larger cluster ({failure.larger_size}): {ran_out}", min_memory_mb=failure.lost_memory_mb)


def _decide_on_target(intent: QueryIntent, failure: FailureFacts) -> RetryDecision:
    """errorifexists and CREATE without IF NOT EXISTS: safe exactly while the target is absent."""
    what, cluster = intent.description, failure.cluster_id
    target = intent.target or "its target"
    if failure.target_exists is False:
        return Retry(f"retried on another cluster: {target} still does not exist, so the {what} "
                     f"did not commit on lost cluster {cluster}")
    if failure.target_exists:
        return Surface(f"not retried: the target {target} now exists: the {what} may have committed "
                       f"on cluster {cluster} before it was lost; check {target} before running it again")
    return Surface(f"not retried: cannot tell whether the {what} created {target} before cluster "
                   f"{cluster} was lost; check {target} before running it again")
