"""Set the CPU set and nice value of a running cluster: every thread of its process tree.

Linux keeps both per thread, so the JVM's threads and its Python workers' are each set; threads
started later inherit them from the thread that starts them. Where the kernel groups processes
by session for scheduling (autogroup, on by default on desktop and many server kernels), a
thread's nice value only ranks it within its session's group, and each cluster runs in a session
of its own: the group's nice value (``/proc/<pid>/autogroup``) is set too, or a niced cluster
would still get an equal share of a contested core. Lowering a nice value again (batch
work ended, interactive work arrived) needs CAP_SYS_NICE or a matching RLIMIT_NICE:
``can_restore_priority`` says whether this process has it.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_PROC = Path("/proc")
_CAP_SYS_NICE = 23
_MAX_PASSES = 5


def can_restore_priority() -> bool:
    """Whether this process may set a child thread's nice value back to 0 after raising it."""
    if not hasattr(os, "sched_setaffinity") or not _PROC.is_dir():
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    if soft == resource.RLIM_INFINITY or soft >= 20:  # nice 0 is within the limit (20 - rlimit)
        return True
    try:
        for line in (_PROC / "self" / "status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_NICE & 1)
    except OSError:
        pass
    return False


def process_tree_threads(pid: int) -> list[int]:
    """Thread ids of ``pid`` and of all its descendants (empty when it is gone)."""
    threads: list[int] = []
    pending = [pid]
    seen: set[int] = set()
    while pending:
        process = pending.pop()
        if process in seen:
            continue
        seen.add(process)
        try:
            tids = [int(t) for t in os.listdir(_PROC / str(process) / "task")]
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
        threads += tids
        for tid in tids:
            try:
                pending += [int(c) for c in (_PROC / str(process) / "task" / str(tid) / "children").read_text().split()]
            except OSError:
                continue
    return threads


def apply_cpu_share(pid: int, cpus: tuple[int, ...], nice: int) -> int:
    """Pin every thread of ``pid``'s tree to ``cpus`` at ``nice``; how many threads were set.

    A thread started while the threads are being set may inherit the old share from a thread not
    set yet: the tree is listed again until a pass finds no thread it has not set. Threads that
    exit meanwhile are skipped. Raises PermissionError when the priority cannot be set (the
    caller turns sharing off)."""
    done: set[int] = set()
    changed = 0
    for _ in range(_MAX_PASSES):
        pending = [tid for tid in process_tree_threads(pid) if tid not in done]
        if not pending:
            break
        for tid in pending:
            done.add(tid)
            try:
                os.sched_setaffinity(tid, cpus)
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except ProcessLookupError:
                continue
            changed += 1
    if changed:
        _set_autogroup_nice(pid, nice)
    return changed


def autogroup_nice(pid: int) -> int | None:
    """The nice value of ``pid``'s scheduling autogroup; None without autogroups."""
    try:
        return int((_PROC / str(pid) / "autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _set_autogroup_nice(pid: int, nice: int) -> None:
    try:
        (_PROC / str(pid) / "autogroup").write_text(str(nice))
    except FileNotFoundError:
        pass  # a kernel without autogroups (or the process is gone): thread nice values rank alone


def thread_share(tid: int) -> tuple[tuple[int, ...], int]:
    """(CPU set, nice) of one thread, as the kernel has it."""
    return tuple(sorted(os.sched_getaffinity(tid))), os.getpriority(os.PRIO_PROCESS, tid)
