"""The kernel's control groups for local clusters: one group per cluster, set once per change.

Each cluster JVM (and every process it starts: Python workers inherit their parent's group) runs
in a group of its own under ``sparkfleet-<pid>``, this sparkfleet's group, in the ``cpu`` and
``cpuset`` hierarchies (cgroup v1) or the unified hierarchy (cgroup v2, with the ``cpu`` and
``cpuset`` controllers). What the CPU policy decides is a few writes to the group's files:

- ``cpu.shares`` (v1) / ``cpu.weight`` (v2): the cluster's share of contested CPU time, by its
  cores; idle CPUs go to whoever wants them, so a 1-core cluster runs its JIT, GC and a second
  task on a second core nobody uses;
- ``cpu.idle``: the group runs only on CPU time nothing else wants (batch-only clusters);
- ``cpuset.cpus`` / ``cpuset.mems``: the CPUs the pool may use.

Groups are removed when their cluster exits (one its last processes still hold, e.g. Python
workers exiting with a killed JVM, at the next change or at stop); groups a killed sparkfleet left
behind are removed at the next start. Where the hierarchies are not writable (no root, a read-only
mount), :meth:`ClusterGroups.open` raises :class:`GroupsUnavailable` with the reason and the caller
runs clusters without groups.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

SYSFS_CGROUP = Path("/sys/fs/cgroup")
# cpu.shares of a group by default (v1); cpu.weight 100 is the same on v2.
DEFAULT_SHARES = 1024
_INSTANCE = re.compile(r"^sparkfleet-(\d+)$")
# At stop, how long the groups of clusters just stopped may take to empty (their processes exiting).
_CLOSE_ATTEMPTS = 100
_CLOSE_RETRY_S = 0.02


class GroupsUnavailable(Exception):
    """Control groups cannot be used here; the message says why."""


class _Hierarchy:
    """One mounted hierarchy directory and the files sparkfleet writes in it."""

    def __init__(self, root: Path, controllers: frozenset[str]) -> None:
        self.root = root
        self.controllers = controllers

    def write(self, group: Path, name: str, value: str) -> None:
        (group / name).write_text(value)


class ClusterGroups:
    """The groups of one sparkfleet's clusters (created on first use, removed with the cluster)."""

    def __init__(self, hierarchies: list[_Hierarchy], instance: str, version: int, cpus: tuple[int, ...],
                 mems: str) -> None:
        self._hierarchies = hierarchies
        self._instance = instance
        self.version = version
        self._cpus = cpus
        self._mems = mems
        self._groups: set[str] = set()
        # Groups of exited clusters that processes still held when removed: removed at a later call.
        self._leftovers: set[str] = set()

    # ---- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, cpus: Iterable[int], root: Path = SYSFS_CGROUP, instance: str | None = None) -> "ClusterGroups":
        """This process's parent group in every usable hierarchy; GroupsUnavailable if none."""
        instance = instance or f"sparkfleet-{os.getpid()}"
        cpus = tuple(sorted(cpus))
        if (root / "cgroup.controllers").is_file():
            hierarchies, version = cls._unified(root), 2
        else:
            hierarchies, version = cls._legacy(root), 1
        if not any("cpu" in h.controllers for h in hierarchies):
            raise GroupsUnavailable(f"no writable cpu controller under {root}")
        mems = _read(root / "cpuset.mems.effective") if version == 2 else _read(root / "cpuset" / "cpuset.mems")
        groups = cls(hierarchies, instance, version, cpus, mems or "0")
        groups._remove_stale()
        try:
            for h in hierarchies:
                top = h.root / instance
                top.mkdir(exist_ok=True)
                groups._configure(h, top)
        except OSError as exc:
            groups.close()
            raise GroupsUnavailable(f"cannot create control groups under {root}: {exc}") from exc
        return groups

    @staticmethod
    def _legacy(root: Path) -> list[_Hierarchy]:
        found = []
        for name in ("cpu", "cpuset"):
            path = root / name
            marker = path / ("cpu.shares" if name == "cpu" else "cpuset.cpus")
            if marker.is_file() and os.access(path, os.W_OK):
                found.append(_Hierarchy(path, frozenset({name})))
        return found

    @staticmethod
    def _unified(root: Path) -> list[_Hierarchy]:
        available = set(_read(root / "cgroup.controllers").split())
        wanted = {"cpu", "cpuset"} & available
        if "cpu" not in wanted or not os.access(root, os.W_OK):
            return []
        try:
            (root / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
        except OSError:
            return []
        return [_Hierarchy(root, frozenset(wanted))]

    def _configure(self, h: _Hierarchy, group: Path) -> None:
        """Settings a new group needs before it can hold processes (and, in v2, children)."""
        if "cpuset" in h.controllers:
            h.write(group, "cpuset.cpus", ",".join(map(str, self._cpus)))
            h.write(group, "cpuset.mems", self._mems)
        if self.version == 2 and group.name == self._instance:
            h.write(group, "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(h.controllers)))

    # ---- clusters ----------------------------------------------------------------------------------

    def join(self, cluster_id: str, pid: int) -> None:
        """Move ``pid`` (and its threads) into the cluster's group, creating it first."""
        self._remove_leftovers()
        for h in self._hierarchies:
            group = h.root / self._instance / cluster_id
            if cluster_id not in self._groups:
                group.mkdir(exist_ok=True)
                self._configure(h, group)
            h.write(group, "cgroup.procs", str(pid))
        self._groups.add(cluster_id)

    def set_cpu(self, cluster_id: str, shares: int, idle: bool) -> None:
        """How the cluster's group competes for CPU time: ``shares`` on the v1 scale (1024 is one
        core's worth; converted to ``cpu.weight`` on v2), ``idle``: only CPU time nothing else
        wants. A few file writes."""
        if cluster_id not in self._groups:
            return
        for h in self._hierarchies:
            if "cpu" not in h.controllers:
                continue
            group = h.root / self._instance / cluster_id
            # The kernel refuses a weight for a group in the idle class: the class goes first.
            # Kernels before 5.15 have no idle class: the least weight is the nearest thing.
            if (group / "cpu.idle").exists():
                h.write(group, "cpu.idle", "1" if idle else "0")
                if idle:
                    continue
            elif idle:
                shares = 2
            if self.version == 2:
                h.write(group, "cpu.weight", str(max(1, min(10_000, round(shares * 100 / DEFAULT_SHARES)))))
            else:
                h.write(group, "cpu.shares", str(max(2, shares)))

    def group_of(self, cluster_id: str) -> str | None:
        """The group's path below each hierarchy's root, as /proc/PID/cgroup shows it."""
        return f"/{self._instance}/{cluster_id}" if cluster_id in self._groups else None

    def remove(self, cluster_id: str) -> None:
        """Remove the cluster's group once its JVM is gone (live stragglers move to the root). A
        process still exiting holds the group and cannot be moved (measured: a killed JVM's Python
        workers, exiting with it): such a group is removed at the next join, remove or close."""
        if cluster_id not in self._groups:
            return
        self._groups.discard(cluster_id)
        self._leftovers.add(cluster_id)
        self._remove_leftovers()

    def close(self) -> None:
        for cluster_id in list(self._groups):
            self.remove(cluster_id)
        for _ in range(_CLOSE_ATTEMPTS):  # processes of clusters stopped just now may still be exiting
            if not self._remove_leftovers():
                break
            time.sleep(_CLOSE_RETRY_S)
        for h in self._hierarchies:
            for group in [h.root / self._instance / c for c in sorted(self._leftovers)] + [h.root / self._instance]:
                if not _remove_group(h.root, group):
                    log.warning("control group %s still holds processes; left in place", group)

    def _remove_leftovers(self) -> bool:
        """Remove the groups of exited clusters that nothing holds any more; True if some remain."""
        for cluster_id in list(self._leftovers):
            if all([_remove_group(h.root, h.root / self._instance / cluster_id) for h in self._hierarchies]):
                self._leftovers.discard(cluster_id)
        return bool(self._leftovers)

    def _remove_stale(self) -> None:
        """Groups of sparkfleets that no longer run (killed before they could remove theirs)."""
        for h in self._hierarchies:
            try:
                entries = list(h.root.iterdir())
            except OSError:
                continue
            for entry in entries:
                match = _INSTANCE.match(entry.name)
                if match and entry.is_dir() and not _alive(int(match[1])):
                    for group in [c for c in entry.iterdir() if c.is_dir()] + [entry]:
                        if not _remove_group(h.root, group):
                            log.warning("control group %s still holds processes; left in place", group)


def _remove_group(root: Path, group: Path) -> bool:
    """Remove ``group``; False while processes (or groups) in it keep the kernel from it."""
    for attempt in range(2):
        if not group.is_dir():
            return True
        try:
            group.rmdir()
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.debug("could not remove control group %s: %s", group, exc)
                return True  # nothing a later attempt would change
        if attempt == 0:
            # Processes still in it (a child that outlived the JVM): move them to the root first.
            # The kernel skips a process that is exiting; it leaves the group once it is gone.
            for pid in _read(group / "cgroup.procs").split():
                try:
                    (root / "cgroup.procs").write_text(pid)
                except OSError:
                    pass
    return False


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
