"""Processes: lost clusters, replacements, clean stops, crashes and Ctrl-C leave no orphans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

import pytest
from pyspark.sql import SparkSession

from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, pid_alive, wait_until, wait_until_running_on_cluster

SMALL_POOL = '[pool]\nclusters = ["S"]\n' + FIXED_FLEET


def test_the_only_cluster_killed_mid_read_is_replaced_and_the_read_completes_there():
    with SparkfleetProcess(SMALL_POOL, name="sparkfleet-loss") as proc:
        victim = proc.ready_clusters()[0]
        spark = SparkSession.builder.remote(proc.url).create()
        box: dict = {}

        def long_read():
            try:
                # One ExecutePlan (spark.sql would send a SqlCommand first, which may be the
                # operation seen running if the machine is slow).
                box["rows"] = spark.range(1).selectExpr("reflect('java.lang.Thread', 'sleep', bigint(8000)) as s").collect()
            except BaseException as exc:  # noqa: BLE001 - inspected below
                box["error"] = exc

        thread = threading.Thread(target=long_read, daemon=True)
        thread.start()
        op_id = wait_until_running_on_cluster(proc, spark)[0]
        os.kill(victim["pid"], signal.SIGKILL)
        thread.join(240)
        assert not thread.is_alive()
        # The read waited for the replacement (no other cluster was left) and ran there.
        assert "error" not in box, box.get("error")
        assert len(box["rows"]) == 1

        record = next(q for q in proc.api(f"/api/queries?session_id={spark.session_id}") if q["id"] == op_id)
        assert record["state"] == "succeeded"
        lost_attempt, good_attempt = record["attempts"]
        assert lost_attempt["cluster_id"] == victim["id"] and lost_attempt["error_class"] == "SPARKFLEET.CLUSTER_LOST"
        new_id = good_attempt["cluster_id"]
        assert new_id != victim["id"] and good_attempt["outcome"] == "succeeded"

        clusters = {c["id"]: c for c in proc.api("/api/clusters")}
        assert clusters[victim["id"]]["state"] == "lost"
        assert "exited with status" in clusters[victim["id"]]["history"][-1]["reason"]
        assert clusters[new_id]["size"] == victim["size"] and clusters[new_id]["state"] == "ready"
        assert f"replaces lost cluster {victim['id']}" in clusters[new_id]["history"][0]["reason"]
        spark.stop()


def test_sigint_stops_every_cluster_and_exits_cleanly():
    proc = SparkfleetProcess(SMALL_POOL, name="sparkfleet-sigint").start()
    pids = set(proc.cluster_pids)
    assert pids and all(pid_alive(p) for p in pids)
    code = proc.stop(sig=signal.SIGINT)
    assert code == 0
    assert not any(pid_alive(p) for p in pids)


def test_gateway_crash_takes_its_clusters_down_and_a_restart_recovers():
    with tempfile.TemporaryDirectory(prefix="sparkfleet-crash-") as data_dir:
        from pathlib import Path

        first = SparkfleetProcess(SMALL_POOL, data_dir=Path(data_dir), name="sparkfleet-crash").start()
        pids = set(first.cluster_pids)
        old_ids = {c["id"] for c in first.ready_clusters()}
        first.proc.kill()  # SIGKILL: no chance to clean up
        first.proc.wait()
        wait_until(lambda: not any(pid_alive(p) for p in pids), 30, what="orphaned JVMs to die with their parent")

        second = SparkfleetProcess(SMALL_POOL, data_dir=Path(data_dir), name="sparkfleet-crash").start()
        try:
            clusters = {c["id"]: c for c in second.api("/api/clusters")}
            for old in old_ids:
                assert clusters[old]["state"] == "lost"
                assert clusters[old]["history"][-1]["reason"] == "the sparkfleet process that ran it ended"
            assert [c for c in second.ready_clusters() if c["id"] not in old_ids]
        finally:
            second.stop()


def test_ctrl_c_during_startup_stops_the_starting_cluster():
    with tempfile.TemporaryDirectory(prefix="sparkfleet-early-") as data_dir:
        config = os.path.join(data_dir, "sparkfleet.toml")
        with open(config, "w") as f:
            f.write(SMALL_POOL)
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparkfleet", "up", "--port", "0", "--admin-port", "0",
             "--data-dir", data_dir, "--config", config],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        jvm_pid = None
        assert proc.stderr is not None
        for line in proc.stderr:
            match = re.search(r"JVM started \(pid (\d+)\)", line)
            if match:
                jvm_pid = int(match.group(1))
                break
        assert jvm_pid and pid_alive(jvm_pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted while starting" in err
        assert "sparkfleet ready" not in out
        wait_until(lambda: not pid_alive(jvm_pid), 30, what="the starting JVM to be stopped")


def test_bad_config_is_a_clear_error_not_a_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[pool]\nclusters = ["HUGE"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "sparkfleet", "up", "--config", str(config), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "HUGE" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--port", "--admin-port"])
def test_port_in_use_is_a_clear_error(tmp_path, flag):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(SMALL_POOL)
        other = "--admin-port" if flag == "--port" else "--port"
        result = subprocess.run(
            [sys.executable, "-m", "sparkfleet", "up", flag, str(port), other, "0",
             "--data-dir", str(tmp_path), "--config", str(config)],
            capture_output=True, text=True, timeout=240,
        )
    assert result.returncode == 2, result.stderr
    assert str(port) in result.stderr and "Traceback" not in result.stderr


def test_a_cluster_whose_port_is_taken_before_it_binds_starts_again_on_fresh_ports(tmp_path, monkeypatch):
    """The race that a chosen-then-released port invites: another process takes it first."""
    import asyncio
    import socket

    from sparkfleet.fleet.model import SizeClass
    from sparkfleet.fleet.provisioners import local
    from sparkfleet.fleet.runtimes import installed_pyspark_runtime

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        handed_out: list[int] = []
        real_free_port = local.free_port

        def free_port_taken_first(host: str = local.LOOPBACK) -> int:
            port = taken_port if not handed_out else real_free_port(host)
            handed_out.append(port)
            return port

        monkeypatch.setattr(local, "free_port", free_port_taken_first)
        provisioner = local.LocalProvisioner(tmp_path, start_timeout_s=180, stop_timeout_s=10)
        spec = local.ClusterSpec("s-clash", SizeClass("S", 1, 1024), installed_pyspark_runtime())
        said: list[str] = []

        async def start_and_stop() -> tuple[int, int | None]:
            cluster = await provisioner.start(spec, progress=lambda _id, text: said.append(text))
            try:
                return cluster.grpc_port, cluster.process.returncode
            finally:
                await cluster.stop(10)

        port, returncode = asyncio.run(start_and_stop())
    assert handed_out[0] == taken_port and port not in (taken_port,) and returncode is None
    assert sum("JVM started" in text for text in said) == 2, said
    assert any("taken before it could bind" in text for text in said), said
    assert b"java.net.BindException" in (tmp_path / "clusters" / "s-clash" / "server.log").read_bytes()
