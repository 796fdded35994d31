"""Control groups for clusters: the kernel's own (cgroup v1, as root) on a real child process, the
cgroup v2 file layout, and the clean fallback where no hierarchy is writable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkfleet.fleet.cgroups import SYSFS_CGROUP, ClusterGroups, GroupsUnavailable

_V1_WRITABLE = (SYSFS_CGROUP / "cpu" / "cpu.shares").is_file() and os.access(SYSFS_CGROUP / "cpu", os.W_OK)
# Starts three threads, then (on a line on stdin) a child process of its own, and sleeps.
_CHILD = (
    "import subprocess, sys, threading, time\n"
    "for _ in range(3): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    "print('up', flush=True)\n"
    "sys.stdin.readline()\n"
    "print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']).pid, flush=True)\n"
    "time.sleep(60)\n"
)


def _groups_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return {controllers: path for _, controllers, path in (line.strip().split(":", 2) for line in f)}


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        yield proc
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


@pytest.mark.skipif(not _V1_WRITABLE, reason="needs the cgroup v1 cpu hierarchy, writable (root)")
def test_a_cluster_and_everything_it_starts_run_in_its_group_set_by_a_few_writes(child) -> None:
    instance = f"sparkfleet-{os.getpid()}"
    groups = ClusterGroups.open(os.sched_getaffinity(0), instance=instance)
    cpu_dir = SYSFS_CGROUP / "cpu" / instance / "c1"
    try:
        groups.join("c1", child.pid)
        assert groups.group_of("c1") == f"/{instance}/c1"
        assert _groups_of(child.pid)["cpu"] == f"/{instance}/c1"
        assert _groups_of(child.pid)["cpuset"] == f"/{instance}/c1"
        threads = {int(t) for t in os.listdir(f"/proc/{child.pid}/task")}
        assert threads <= {int(t) for t in (cpu_dir / "tasks").read_text().split()}  # all four threads
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        grandchild = int(child.stdout.readline())
        assert _groups_of(grandchild)["cpu"] == f"/{instance}/c1"  # a worker it starts later inherits it

        groups.set_cpu("c1", 2048, idle=True)
        assert (cpu_dir / "cpu.idle").read_text().strip() == "1"
        groups.set_cpu("c1", 2048, idle=False)
        assert (cpu_dir / "cpu.idle").read_text().strip() == "0"
        assert (cpu_dir / "cpu.shares").read_text().strip() == "2048"
        cpus = (SYSFS_CGROUP / "cpuset" / instance / "c1" / "cpuset.cpus").read_text().strip()
        assert cpus  # the pool's CPUs, e.g. "0-1"

        os.killpg(child.pid, 9)
        child.wait()
        groups.remove("c1")
        assert not cpu_dir.exists() and groups.group_of("c1") is None
    finally:
        groups.close()
    assert not (SYSFS_CGROUP / "cpu" / instance).exists()
    assert not (SYSFS_CGROUP / "cpuset" / instance).exists()


@pytest.mark.skipif(not _V1_WRITABLE, reason="needs the cgroup v1 cpu hierarchy, writable (root)")
def test_groups_a_killed_sparkfleet_left_behind_are_removed_at_the_next_start() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = SYSFS_CGROUP / "cpu" / f"sparkfleet-{gone.pid}"
    (stale / "s-123456").mkdir(parents=True)
    groups = ClusterGroups.open(os.sched_getaffinity(0), instance=f"sparkfleet-{os.getpid()}")
    groups.close()
    assert not stale.exists()


@pytest.mark.skipif(not _V1_WRITABLE, reason="needs the cgroup v1 cpu hierarchy, writable (root)")
def test_a_group_still_held_when_its_cluster_exits_is_removed_at_the_next_change_and_at_stop() -> None:
    """A killed JVM's Python workers are still exiting when it is reaped: the kernel neither moves
    an exiting process nor removes a group that holds one (EBUSY). A group inside the cluster's
    group makes the kernel answer the same, for as long as the test wants."""
    instance = f"sparkfleet-{os.getpid()}"
    groups = ClusterGroups.open(os.sched_getaffinity(0), instance=instance)
    first, second = (subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2))
    held, later = SYSFS_CGROUP / "cpu" / instance / "c1", SYSFS_CGROUP / "cpu" / instance / "c2"
    try:
        groups.join("c1", first.pid)
        (held / "exiting").mkdir()
        first.kill()
        first.wait()
        groups.remove("c1")  # no error, nothing waited for: it is left for later
        assert held.is_dir() and groups.group_of("c1") is None
        (held / "exiting").rmdir()
        groups.join("c2", second.pid)  # the next change removes it
        assert not held.exists() and later.is_dir()
        (later / "exiting").mkdir()
        second.kill()
        second.wait()
        groups.remove("c2")
        assert later.is_dir()
        (later / "exiting").rmdir()  # gone by the time sparkfleet stops
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
        groups.close()
    assert not (SYSFS_CGROUP / "cpu" / instance).exists()
    assert not (SYSFS_CGROUP / "cpuset" / instance).exists()


def test_on_cgroup_v2_a_cluster_gets_a_weight_and_the_controllers_are_enabled_down_to_it(tmp_path: Path) -> None:
    # The unified hierarchy's files as the kernel shows them at its root (the kernel makes a new
    # group's files itself; here the writes create them, which is what is checked).
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "cpuset.mems.effective").write_text("0\n")
    groups = ClusterGroups.open((0, 1), root=tmp_path, instance="sparkfleet-1")
    assert groups.version == 2
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +cpuset"
    assert (tmp_path / "sparkfleet-1" / "cgroup.subtree_control").read_text() == "+cpu +cpuset"
    groups.join("m-1", 4242)
    group = tmp_path / "sparkfleet-1" / "m-1"
    assert (group / "cgroup.procs").read_text() == "4242"
    assert (group / "cpuset.cpus").read_text() == "0,1" and (group / "cpuset.mems").read_text() == "0"
    groups.set_cpu("m-1", 2048, idle=False)
    assert (group / "cpu.weight").read_text() == "200"  # 2 cores' worth, as 1024 shares is weight 100


def test_without_a_writable_hierarchy_groups_are_unavailable_and_say_why(tmp_path: Path) -> None:
    with pytest.raises(GroupsUnavailable, match="no writable cpu controller"):
        ClusterGroups.open((0,), root=tmp_path)
