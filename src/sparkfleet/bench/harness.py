"""What the benchmarks share: a real sparkfleet with one cluster reachable both ways, stats, CPU.

Every comparison runs the same work through the gateway and directly against the very cluster
behind it, in one run, so the two sides share JVM, JIT state, machine load and drift.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, NoReturn, Sequence, TypeVar

from rich.console import Console

from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess

# One cluster, so the gateway can only place on the cluster the direct side talks to.
ONE_CLUSTER_TOML = '[pool]\nclusters = ["M"]\n' + FIXED_FLEET


@dataclass(frozen=True, slots=True)
class Target:
    """One cluster, reachable through the gateway and directly."""

    gateway_url: str  # sc://localhost:PORT
    cluster_id: str
    cluster_address: str  # 127.0.0.1:PORT, as the gateway dials it
    token: str
    gateway_pid: int
    cluster_pid: int

    @property
    def cluster_port(self) -> int:
        return int(self.cluster_address.rsplit(":", 1)[1])

    @property
    def direct_url(self) -> str:
        # The stock client sends a token without TLS only to host "localhost", exactly.
        return f"sc://localhost:{self.cluster_port}/;token={self.token}"


@contextlib.contextmanager
def one_cluster_fleet() -> Iterator[Target]:
    """Start ``sparkfleet up`` with one cluster; stop it and its JVM on exit, Ctrl-C included."""
    with SparkfleetProcess(config_toml=ONE_CLUSTER_TOML, name="sparkfleet-bench") as proc:
        ready = proc.ready_clusters()
        if len(ready) != 1:
            raise RuntimeError(f"expected exactly one ready cluster, found {len(ready)}: {ready}")
        cluster = ready[0]
        token = (proc.data_dir / "clusters" / cluster["id"] / "token").read_text().strip()
        assert proc.proc is not None
        yield Target(
            gateway_url=proc.url,
            cluster_id=cluster["id"],
            cluster_address=cluster["address"],
            token=token,
            gateway_pid=proc.proc.pid,
            cluster_pid=int(cluster["pid"]),
        )


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


def cpu_seconds(pid: int, descendants: bool = False) -> float:
    """CPU time used so far by ``pid`` (and, if asked, every live process below it)."""
    if not descendants:
        found = _stat(pid)
        return found[1] if found else 0.0
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                stats[int(entry)] = found
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += stats[current][1]
        todo.extend(children.get(current, ()))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICKS


class CpuMeter:
    """CPU seconds used by the client, the gateway, the cluster JVM and everything else.

    On a small machine these share the cores, so the split tells whether a side was limited by
    the gateway, by the client, or by unrelated load ("other") that made the run noisy.
    """

    def __init__(self, target: Target) -> None:
        self._target = target

    def read(self) -> dict[str, float]:
        ours = {
            "client": cpu_seconds(os.getpid()),
            "gateway": cpu_seconds(self._target.gateway_pid),
            "cluster": cpu_seconds(self._target.cluster_pid, descendants=True),
        }
        return {**ours, "other": machine_busy_seconds() - sum(ours.values())}

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {part: max(0.0, after[part] - before[part]) for part in before}

    @staticmethod
    def describe(used: dict[str, float], wall_s: float) -> str:
        """One line: CPU seconds per part, and how much of the machine unrelated load took."""
        parts = ", ".join(f"{part} {seconds:.2f}" for part, seconds in used.items())
        cores = len(os.sched_getaffinity(0))
        other = used.get("other", 0.0) / (wall_s * cores) if wall_s > 0 else 0.0
        line = f"CPU seconds over {wall_s:.1f}s on {cores} cores: {parts}"
        if other > 0.10:
            line += f"  [yellow](other processes took {other:.0%} of the machine: expect noise)[/yellow]"
        return line
