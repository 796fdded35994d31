"""What a cluster is: size class, lifecycle states with their allowed transitions, snapshots."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sparkfleet.errors import InvalidTransition


@dataclass(frozen=True, slots=True)
class SizeClass:
    """A cluster size: cores for ``local[N]`` (or executors) and driver heap in MiB."""

    name: str
    cores: int
    memory_mb: int


class ClusterState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    LOST = "lost"


_S = ClusterState
ALLOWED_TRANSITIONS: dict[ClusterState, dict[ClusterState, str]] = {
    _S.STARTING: {
        _S.READY: "the Spark Connect server answered an authenticated call",
        _S.FAILED: "the server exited or did not answer before the start timeout",
        _S.STOPPING: "shutdown began while the cluster was still starting",
    },
    _S.READY: {
        _S.DRAINING: "no new queries; running ones finish first (scale-in, replacement)",
        _S.STOPPING: "stop requested (shutdown or scale-in of an idle cluster)",
        _S.LOST: "the server process exited or stopped answering without being asked to",
    },
    _S.DRAINING: {
        _S.READY: "drain cancelled: the cluster is needed again",
        _S.STOPPING: "drained: nothing runs on it any more",
        _S.LOST: "died while draining",
    },
    _S.STOPPING: {
        _S.STOPPED: "the processes exited after SIGTERM (or SIGKILL after the grace period)",
    },
    # Terminal states: a cluster id is never reused.
    _S.STOPPED: {},
    _S.FAILED: {},
    _S.LOST: {},
}

ACCEPTS_QUERIES = frozenset({ClusterState.READY})
ALIVE = frozenset({ClusterState.STARTING, ClusterState.READY, ClusterState.DRAINING})
ENDED = frozenset({ClusterState.STOPPED, ClusterState.FAILED, ClusterState.LOST})


def check_transition(cluster_id: str, old: ClusterState, new: ClusterState) -> str:
    """Return the reason an edge exists, or raise InvalidTransition."""
    reason = ALLOWED_TRANSITIONS[old].get(new)
    if reason is None:
        raise InvalidTransition(f"cluster {cluster_id}: {old.value} -> {new.value} is not allowed")
    return reason


class Profile(str, enum.Enum):
    """A query's latency profile: who waits for it, and how."""

    INTERACTIVE = "interactive"  # a person waits: latency matters more than throughput
    BATCH = "batch"  # a pipeline waits: throughput matters, seconds of delay do not


@dataclass(frozen=True, slots=True)
class RunningWork:
    """A query placed on a cluster and not yet finished, as the gateway accounts for it."""

    query_id: str
    profile: Profile
    core_seconds: float  # its estimate
    memory_bytes: int  # its estimated peak execution memory
    started_at: float  # monotonic seconds
    # The tenant that sent it (policy/tenancy.py counts its queries and cores from these).
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class LoadReading:
    """What a cluster's Spark reported about itself, and when (monotonic seconds)."""

    observed_at: float
    active_tasks: int
    task_slots: int
    heap_used_bytes: int | None = None
    heap_max_bytes: int | None = None
    # Execution memory held by running tasks (as of Spark's last heartbeat) plus cached blocks.
    memory_in_use_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What policies see of a cluster: an immutable snapshot."""

    id: str
    size: SizeClass
    runtime: str
    state: ClusterState
    running_queries: int
    sessions: int
    # The queries the gateway placed there (running, or catching up to run).
    work: tuple[RunningWork, ...] = ()
    # The latest reading of its Spark REST API; None when none was ever taken.
    load: LoadReading | None = None
    # When batch work last ended there (monotonic seconds): a pipeline's next query follows at once.
    batch_ended_at: float | None = None
    # When any work last ended there: a load reading taken before it no longer says what runs now.
    work_ended_at: float | None = None
    # The CPUs it owns (local clusters; empty when the provisioner does not pin CPUs).
    cpus: tuple[int, ...] = ()

    def batch_ended_within(self, now: float, seconds: float) -> bool:
        """Batch work ended here less than ``seconds`` ago: a pipeline's next query is coming."""
        return self.batch_ended_at is not None and now - self.batch_ended_at < seconds


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    clusters: tuple[ClusterView, ...] = field(default_factory=tuple)

    def ready(self) -> tuple[ClusterView, ...]:
        return tuple(c for c in self.clusters if c.state in ACCEPTS_QUERIES)
