"""What the benchmarks share: the default fleet beside a plain Spark Connect server, cleanup, stats, CPU.

A comparison runs the same work through the default fleet (what ``./scripts/up`` starts) and
against a plain Spark Connect server started the way a user starts one, in one run, so both sides
share the machine's load and drift.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, NoReturn, Protocol, Sequence, TypeVar

from rich.console import Console

from sparkfleet.testing.plain import PlainServer
from sparkfleet.testing.process import SparkfleetProcess

_LIVE = frozenset({"starting", "ready", "draining", "stopping"})


class Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> object: ...


S = TypeVar("S", bound=Startable)


@contextlib.contextmanager
def running(server: S) -> Iterator[S]:
    """``server.start()``, then ``server.stop()`` whatever happens, an interrupt during the start
    included (``with server:`` would not stop a server whose ``__enter__`` was interrupted)."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


def live_clusters(fleet: SparkfleetProcess) -> list[dict[str, Any]]:
    """The fleet's clusters that are not over (starting, ready, draining or stopping)."""
    return [c for c in fleet.api("/api/clusters?history=0") if c["state"] in _LIVE]


def wait_until_settled(fleet: SparkfleetProcess, quiet_s: float = 5.0, timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Wait until the fleet has stopped starting and stopping clusters: every live cluster ready,
    and the same ones for ``quiet_s``. Returns them."""
    deadline = time.monotonic() + timeout_s
    seen: tuple[str, ...] = ()
    since = time.monotonic()
    while True:
        clusters = live_clusters(fleet)
        ids = tuple(c["id"] for c in clusters)
        now = time.monotonic()
        if ids != seen or not all(c["state"] == "ready" for c in clusters):
            seen, since = ids, now
        elif clusters and now - since >= quiet_s:
            return clusters
        if now > deadline:
            raise TimeoutError(f"the fleet did not settle within {timeout_s:.0f}s: {[(c['id'], c['state']) for c in clusters]}")
        time.sleep(0.5)


@dataclass(frozen=True, slots=True)
class Contenders:
    """The default fleet and a plain Spark Connect server, both running."""

    fleet: SparkfleetProcess
    plain: PlainServer

    @property
    def gateway_pid(self) -> int:
        assert self.fleet.proc is not None
        return self.fleet.proc.pid

    def metastore_pid(self) -> int | None:
        catalog = self.fleet.api("/api/health").get("catalog") or {}
        return int(catalog["pid"]) if catalog.get("pid") else None

    def cpu_parts(self) -> dict[str, RootsOf]:
        """For ``CpuMeter``: this client, the gateway, the fleet's clusters (every child of the
        gateway but the metastore: the cluster JVMs, found anew at each reading), the shared
        catalog's metastore, the plain server. The metastore's pid is asked for now, so that the
        gateway's CPU for the answer is not inside what is measured next."""
        me, gateway, metastore, plain = os.getpid(), self.gateway_pid, self.metastore_pid(), self.plain.pid
        return {
            "client": lambda table: (me,),
            "gateway": lambda table: (gateway,),
            "clusters": lambda table: [pid for pid, (parent, _) in table.items() if parent == gateway and pid != metastore],
            "metastore": lambda table: (metastore,) if metastore else (),
            "plain": lambda table: (plain,),
        }


@contextlib.contextmanager
def default_fleet_and_plain_server(out: Console) -> Iterator[Contenders]:
    """Start the default fleet exactly as ``./scripts/up`` does (no config; a private data dir),
    wait until it has settled, and start a plain server; stop both whatever happens."""
    out.print("[dim]starting the default fleet (no config) ...[/dim]")
    with running(SparkfleetProcess(name="sparkfleet-bench")) as fleet:
        clusters = wait_until_settled(fleet)
        described = ", ".join(f"{c['id']} ({c['size']}, pid {c['pid']})" for c in clusters)
        out.print(f"[dim]fleet settled: gateway {fleet.url}, clusters {described}[/dim]")
        out.print("[dim]starting a plain Spark Connect server (spark-submit with its defaults) ...[/dim]")
        with running(PlainServer()) as plain:
            out.print(f"[dim]plain server on port {plain.port} (pid {plain.pid})[/dim]")
            yield Contenders(fleet, plain)


# ---- running a measurement ----------------------------------------------------------------------

T = TypeVar("T")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the same cleanup runs for both."""

    def raise_interrupt(signum, frame):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_now(code: int) -> NoReturn:
    """Exit without waiting for the stock client's release threads: they are not daemons, and
    after an interrupt they retry a gateway that is gone for minutes. Everything of ours (the
    gateway and every cluster JVM) was stopped before this is called."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def measured(out: Console, name: str, measure: Callable[[], T], catch_failures: bool = True) -> T:
    """``measure()``, whose fleets stop themselves whatever happens; after Ctrl-C or SIGTERM (or a
    failure, with ``catch_failures``) say so and exit at once (130, or 1)."""
    try:
        with sigterm_as_interrupt():
            return measure()
    except KeyboardInterrupt:
        out.print(f"sparkfleet bench {name}: interrupted; sparkfleet and every cluster were stopped")
        exit_now(130)
    except Exception:  # noqa: BLE001 - the fleet was stopped; the sessions' threads would hang the exit
        if not catch_failures:
            raise
        out.print_exception()
        out.print(f"sparkfleet bench {name}: failed; sparkfleet and every cluster were stopped")
        exit_now(1)


# ---- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


# ---- CPU accounting --------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of all its threads) from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command: state ppid ... utime(12) stime(13), counted from state = index 0.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def process_table() -> dict[int, tuple[int, float]]:
    """Every live process: pid -> (parent pid, CPU seconds so far)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                table[int(entry)] = found
    return table


def tree_cpu_seconds(table: Mapping[int, tuple[int, float]], root: int, apart: frozenset[int] = frozenset()) -> float:
    """CPU seconds of ``root`` and every process below it, except the subtrees of the pids in ``apart``."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    total, todo = 0.0, [root]
    while todo:
        current = todo.pop()
        if current in table:
            total += table[current][1]
        todo.extend(c for c in children.get(current, ()) if c not in apart)
    return total


def cpu_seconds(pid: int, descendants: bool = False) -> float:
    """CPU time used so far by ``pid`` (and, if asked, every live process below it)."""
    if not descendants:
        found = _stat(pid)
        return found[1] if found else 0.0
    return tree_cpu_seconds(process_table(), pid)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICKS


ProcessTable = Mapping[int, tuple[int, float]]  # pid -> (parent pid, CPU seconds so far)
RootsOf = Callable[[ProcessTable], Iterable[int]]  # a part's root processes, found in the table


@dataclass(frozen=True, slots=True)
class CpuReading:
    trees: dict[str, dict[int, float]]  # part -> root pid -> CPU seconds so far of its tree
    machine_busy_s: float


class CpuMeter:
    """CPU seconds used by named parts and by everything else ("other").

    Each part finds its root processes in the process table at every reading, so a cluster JVM
    that starts during a phase is counted. A root counts with every process below it, up to where
    another root begins: the gateway's cluster JVMs are its children, yet count as "clusters". On
    a small machine the parts share the cores, so the split tells whether a side was limited by
    the gateway, by the client, or by unrelated load ("other") that made the run noisy.
    """

    def __init__(self, parts: Mapping[str, RootsOf]) -> None:
        self._parts = dict(parts)

    def read(self) -> CpuReading:
        table = process_table()
        busy = machine_busy_seconds()
        roots = {part: [pid for pid in roots_of(table) if pid in table] for part, roots_of in self._parts.items()}
        every_root = frozenset(pid for pids in roots.values() for pid in pids)
        trees = {part: {pid: tree_cpu_seconds(table, pid, every_root - {pid}) for pid in pids}
                 for part, pids in roots.items()}
        return CpuReading(trees, busy)

    @staticmethod
    def used(before: CpuReading, after: CpuReading) -> dict[str, float]:
        """CPU seconds each part used between two readings, and "other" (the rest of the machine).

        Counted per root process: one that ended in between counts nothing (what it used last is
        unknown), one that began counts all it used.
        """
        used = {
            part: sum(max(0.0, seconds - before.trees.get(part, {}).get(pid, 0.0)) for pid, seconds in trees.items())
            for part, trees in after.trees.items()
        }
        used["other"] = max(0.0, after.machine_busy_s - before.machine_busy_s - sum(used.values()))
        return used

    @staticmethod
    def changes(before: CpuReading, after: CpuReading) -> list[str]:
        """The root processes that began or ended between two readings, e.g. "clusters: pid 7 began"."""
        found = []
        for part in after.trees:
            was, now = set(before.trees.get(part, {})), set(after.trees[part])
            found += [f"{part}: pid {pid} began (all its CPU counts)" for pid in sorted(now - was)]
            found += [f"{part}: pid {pid} ended (its last CPU is not counted)" for pid in sorted(was - now)]
        return found

    @staticmethod
    def describe(used: Mapping[str, float], wall_s: float) -> str:
        """One line: CPU seconds per part, and how much of the machine unrelated load took."""
        parts = ", ".join(f"{part} {seconds:.2f}" for part, seconds in used.items())
        cores = len(os.sched_getaffinity(0))
        other = used.get("other", 0.0) / (wall_s * cores) if wall_s > 0 else 0.0
        line = f"CPU seconds over {wall_s:.1f}s on {cores} cores: {parts}"
        if other > 0.10:
            line += f"  [yellow](other processes took {other:.0%} of the machine: expect noise)[/yellow]"
        return line
