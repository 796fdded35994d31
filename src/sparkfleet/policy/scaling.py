"""Pure scaling policy: which clusters of which size class to start, drain or stop, and why.

Given the fleet (each cluster's size, state, work, idleness and whether it holds session state no
replay can rebuild), the queries waiting for a cluster, the size classes, the machine's budget and
the mode, ``plan_scaling`` returns actions with reasons. Rules:

1. **Budget.** The cores and memory of live clusters never exceed the machine's budget; a start
   that would is not planned. Idle ready clusters smaller than the one waiting queries need may be
   stopped first to make room, however young; warm capacity never stops a cluster.
2. **Vertical.** A waiting query whose expected memory fits no live cluster's budget gets a
   cluster of the smallest size class it fits (the largest, if none does).
3. **Horizontal out, quickly.** Queries waiting longer than the mode's ``scale_out_after_s`` get one
   more cluster of the size the oldest of them needs, unless a cluster that could take it is
   already starting; with no cluster running at all, at once.
4. **Warm capacity (Performance).** At least ``warm_idle_clusters`` clusters of the smallest size
   class stay ready (or starting) with nothing to do, so a burst does not wait for a JVM.
5. **In, slowly.** A ready cluster idle for the mode's ``idle_before_stop_s``, older than
   ``min_lifetime_s``, and not needed for warm capacity or the mode's minimum, is stopped
   (Standard scales to zero); one that holds session state is drained instead, and stopped once
   it is empty and the state released.
6. **Never** is a cluster with running work, or with state no replay can rebuild, stopped.

No I/O, no clock: the controller and the simulator call the same function.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Sequence

from sparkfleet.fleet.model import ClusterState, ClusterView, SizeClass

_MB = 1024 * 1024


class Mode(str, enum.Enum):
    STANDARD = "standard"  # least compute: pack tighter, scale to zero, accept a cold start
    PERFORMANCE = "performance"  # warm capacity, scale out sooner


MODE_CONF = "sparkfleet.mode"


def parse_mode(value: str) -> Mode:
    """The mode a session set with ``sparkfleet.mode``; ValueError naming the allowed values."""
    try:
        return Mode(value.strip().lower())
    except ValueError:
        raise ValueError(f"{MODE_CONF} must be {'|'.join(m.value for m in Mode)}, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class ModeSettings:
    # Seconds the oldest waiting query waits before another cluster is started for it.
    scale_out_after_s: float
    # Seconds a ready cluster is idle before it is stopped.
    idle_before_stop_s: float
    # Idle ready (or starting) clusters of the smallest size kept for bursts.
    warm_idle_clusters: int
    # Live clusters never scaled in below this.
    min_clusters: int


DEFAULT_MODES = {
    Mode.STANDARD: ModeSettings(scale_out_after_s=5.0, idle_before_stop_s=60.0, warm_idle_clusters=0, min_clusters=0),
    Mode.PERFORMANCE: ModeSettings(scale_out_after_s=0.5, idle_before_stop_s=600.0, warm_idle_clusters=1,
                                   min_clusters=1),
}


@dataclass(frozen=True, slots=True)
class ScalingSettings:
    modes: dict[Mode, ModeSettings] = field(default_factory=lambda: dict(DEFAULT_MODES))
    # A cluster is not stopped within this many seconds of starting (no flapping).
    min_lifetime_s: float = 30.0
    # Share of a cluster's heap its queries' expected memory may take (as placement admits it).
    memory_fraction: float = 0.6


@dataclass(frozen=True, slots=True)
class Budget:
    """What the machine (or the operator) allows all clusters together."""

    cores: int
    memory_mb: int


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    view: ClusterView
    started_at: float  # monotonic seconds
    # Since when it has had no work (None: it has work now).
    idle_since: float | None
    # It holds session state no replay can rebuild (cached data, checkpoints, streaming, ...).
    holds_state: bool = False


@dataclass(frozen=True, slots=True)
class Demand:
    """A query waiting for a cluster that admits it."""

    query_id: str
    memory_bytes: int  # its expected peak execution memory
    waited_s: float
    # It ran a cluster with this much memory out of memory: only a larger size class will do.
    floor_mb: int = 0
    # The mode its session set (sparkfleet.mode); None: the fleet's.
    mode: Mode | None = None
    # The runtime it must run on (policy/versions.py); "": any.
    runtime: str = ""
    # The size classes its tenant may use (policy/tenancy.py); empty: any.
    sizes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StartCluster:
    size: str
    reason: str
    # Run a few small queries on it before it takes work (fleet/provisioners/warmup.py): worth it
    # for capacity started ahead of demand; a query already waiting would rather run cold at once.
    warm_up: bool = True
    # Its runtime; "": the general one.
    runtime: str = ""


@dataclass(frozen=True, slots=True)
class DrainCluster:
    """Take no new work; stop once its work has ended and its session state is released."""

    cluster_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StopCluster:
    cluster_id: str
    reason: str


ScalingAction = StartCluster | DrainCluster | StopCluster

_LIVE = frozenset({ClusterState.STARTING, ClusterState.READY, ClusterState.DRAINING})


def plan_scaling(
    clusters: Sequence[ClusterFacts],
    demand: Sequence[Demand],
    sizes: Sequence[SizeClass],
    budget: Budget,
    mode: Mode,
    now: float,
    settings: ScalingSettings = ScalingSettings(),
    general_runtime: str = "",
) -> list[ScalingAction]:
    """What to start and stop now, each with its reason. Warm capacity runs ``general_runtime``
    ("": whatever runtime clusters run)."""
    if not sizes:
        return []
    mode_settings = settings.modes[mode]
    by_size = sorted(sizes, key=lambda s: (s.memory_mb, s.cores, s.name))
    live = sorted((c for c in clusters if c.view.state in _LIVE), key=lambda c: c.view.id)
    actions: list[ScalingAction] = []
    stopping: set[str] = set()
    used_cores = sum(c.view.size.cores for c in live)
    used_mb = sum(c.view.size.memory_mb for c in live)

    def fits_budget(size: SizeClass) -> bool:
        return used_cores + size.cores <= budget.cores and used_mb + size.memory_mb <= budget.memory_mb

    def start(size: SizeClass, reason: str, for_waiting: bool = True, runtime: str = "") -> bool:
        # Started for queries already waiting: it may make room, and it skips the warm-up.
        nonlocal used_cores, used_mb
        if not fits_budget(size) and for_waiting:
            _make_room(size)
        if not fits_budget(size):
            return False
        actions.append(StartCluster(size.name, reason, warm_up=not for_waiting, runtime=runtime))
        used_cores += size.cores
        used_mb += size.memory_mb
        return True

    def stoppable(c: ClusterFacts, idle_for_s: float, min_lifetime_s: float = settings.min_lifetime_s) -> bool:
        return (c.view.state is ClusterState.READY and not c.view.work and not c.holds_state
                and c.idle_since is not None and now - c.idle_since >= idle_for_s
                and now - c.started_at >= min_lifetime_s and c.view.id not in stopping)

    def stop(c: ClusterFacts, reason: str) -> None:
        nonlocal used_cores, used_mb
        actions.append(StopCluster(c.view.id, reason))
        stopping.add(c.view.id)
        used_cores -= c.view.size.cores
        used_mb -= c.view.size.memory_mb

    def _make_room(size: SizeClass) -> None:
        # Idle clusters smaller than the one needed give way to the waiting work, however young
        # (the minimum lifetime keeps scale-in from flapping; a query waiting for room is not
        # flapping). An idle cluster as large is about to take the work itself: it stays.
        for c in sorted(live, key=lambda c: (c.idle_since or now, c.view.id)):
            if fits_budget(size):
                return
            if c.view.size.memory_mb < size.memory_mb and stoppable(c, 0.0, min_lifetime_s=0.0):
                stop(c, f"idle; stopped to make room for a {size.name} cluster that waiting queries need")

    # A draining cluster leaves once its work is done and its session state released.
    for c in live:
        if c.view.state is ClusterState.DRAINING and not c.view.work and not c.holds_state:
            stop(c, "drained: its last query ended and it holds no session state")

    starting_all = [c for c in live if c.view.state is ClusterState.STARTING]
    accepting_all = [c for c in live if c.view.state in (ClusterState.STARTING, ClusterState.READY)]

    def delay(d: Demand) -> float:
        return settings.modes[d.mode or mode].scale_out_after_s

    # Each runtime's waiting queries need clusters of that runtime ("": any cluster will do).
    groups: dict[str, list[Demand]] = {}
    for d in demand:
        groups.setdefault(d.runtime, []).append(d)
    for runtime, group in sorted(groups.items()):
        starting = [c for c in starting_all if not runtime or c.view.runtime == runtime]
        accepting = [c for c in accepting_all if not runtime or c.view.runtime == runtime]
        runtime_note = f" (runtime {runtime})" if runtime and runtime != general_runtime else ""
        none_running = f"no {runtime} cluster is running" if runtime_note else "no cluster is running"
        # Vertical: the biggest query nobody can hold.
        waiting = sorted(group, key=lambda d: (-d.waited_s, d.query_id))
        largest_budget = max((_budget_bytes(c.view.size, settings) for c in accepting), default=0)
        largest_mb = max((c.view.size.memory_mb for c in accepting), default=0)
        # With no cluster at all, the horizontal rule below starts the size the oldest query needs.
        too_big = [d for d in waiting if accepting and (d.memory_bytes > largest_budget
                                                        or (d.floor_mb and d.floor_mb >= largest_mb))]
        # A query whose tenant may not use a larger size than the live clusters' is not too big
        # for them: a larger cluster would not take it.
        too_big = [d for d in too_big if not d.sizes
                   or _fitting(by_size, d.memory_bytes, settings, d.floor_mb, d.sizes).memory_mb > largest_mb]
        if too_big:
            d = max(too_big, key=lambda d: (d.floor_mb, d.memory_bytes, d.query_id))
            size = _fitting(by_size, d.memory_bytes, settings, d.floor_mb, d.sizes)
            why = (f"query {d.query_id} ran a {d.floor_mb:,} MB cluster out of memory" if d.floor_mb else
                   f"query {d.query_id} needs ~{d.memory_bytes / _MB:,.0f} MB; no live cluster holds more "
                   f"than ~{largest_budget / _MB:,.0f} MB")
            if start(size, why + runtime_note, runtime=runtime):
                waiting = [w for w in waiting if w is not d]
        # Horizontal: the oldest waiter has waited long enough (by its session's mode, if it set one)
        # and nothing that fits it is starting.
        # With no cluster at all (scaled to zero, or the last one lost) waiting longer helps nobody.
        due = [d for d in waiting if d.waited_s >= delay(d) or not accepting]
        if due:
            # The oldest waiter's size; with no cluster at all, the size the neediest one requires.
            d = due[0] if accepting else max(due, key=lambda d: (d.floor_mb, d.memory_bytes, d.waited_s))
            size = _fitting(by_size, d.memory_bytes, settings, d.floor_mb, d.sizes)
            on_the_way = [c for c in starting if _budget_bytes(c.view.size, settings) >= d.memory_bytes
                          and c.view.size.memory_mb > d.floor_mb]
            waiting_now = f"{len(due)} quer{'y' if len(due) == 1 else 'ies'} waiting"
            if accepting:
                why = f"{waiting_now}, the oldest {due[0].waited_s:.1f}s ({(d.mode or mode).value} mode scales " \
                      f"out after {delay(d):g}s)"
            elif d.floor_mb:
                why = f"query {d.query_id} ran a {d.floor_mb:,} MB cluster out of memory ({waiting_now}, {none_running})"
            else:
                why = f"{waiting_now}, the oldest {due[0].waited_s:.1f}s and {none_running}"
            if not on_the_way:
                start(size, why if not accepting else why + runtime_note, runtime=runtime)
    # Warm capacity (Performance mode).
    smallest = by_size[0]
    warm = [c for c in accepting_all if not c.view.work and c.view.size == smallest and c.view.id not in stopping
            and (not general_runtime or c.view.runtime == general_runtime)]
    missing = mode_settings.warm_idle_clusters - len(warm)
    for _ in range(max(0, missing)):
        if not start(smallest, f"{mode.value} mode keeps {mode_settings.warm_idle_clusters} idle "
                               f"{smallest.name} cluster(s) warm for bursts", for_waiting=False):
            break
    # Scale in: idle clusters beyond warm capacity and the mode's minimum, longest idle first.
    remaining = len([c for c in live if c.view.id not in stopping]) + sum(isinstance(a, StartCluster) for a in actions)
    keep_warm = {c.view.id for c in warm[: mode_settings.warm_idle_clusters]}
    for c in sorted(live, key=lambda c: (c.idle_since if c.idle_since is not None else now, c.view.id)):
        if remaining <= mode_settings.min_clusters:
            break
        if c.view.id in keep_warm:
            continue
        if c.holds_state and stoppable(dataclasses.replace(c, holds_state=False), mode_settings.idle_before_stop_s):
            actions.append(DrainCluster(c.view.id, f"idle for {now - c.idle_since:.0f}s but holds session state "  # type: ignore[operator]
                                                   "no replay can rebuild: drained, stopped once it is released"))
            remaining -= 1
            continue
        if not stoppable(c, mode_settings.idle_before_stop_s):
            continue
        stop(c, f"idle for {now - c.idle_since:.0f}s ({mode.value} mode stops idle clusters after "  # type: ignore[operator]
                f"{mode_settings.idle_before_stop_s:g}s)")
        remaining -= 1
    return actions


def _budget_bytes(size: SizeClass, settings: ScalingSettings) -> int:
    return int(size.memory_mb * _MB * settings.memory_fraction)


def _fitting(by_size: list[SizeClass], memory_bytes: int, settings: ScalingSettings, floor_mb: int = 0,
             allowed: frozenset[str] = frozenset()) -> SizeClass:
    """The smallest size class larger than ``floor_mb`` whose memory budget holds the query; the
    largest if none does. Only ``allowed`` ones (its tenant's), when given and any is."""
    candidates = [s for s in by_size if s.name in allowed] if allowed else by_size
    candidates = candidates or by_size
    return next((s for s in candidates if _budget_bytes(s, settings) >= memory_bytes and s.memory_mb > floor_mb),
                candidates[-1])
