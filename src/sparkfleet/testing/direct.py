"""A Spark Connect server started directly (no gateway), as the baseline for comparisons.

It is launched exactly like a ``local`` cluster (same command builder) but synchronously, so
tools that are not asyncio programs can use it.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from sparkfleet.fleet.model import SizeClass
from sparkfleet.fleet.provisioners.local import (
    START_ATTEMPTS,
    ClusterSpec,
    LocalProvisioner,
    _readiness_probe,
    cause_in,
    died_of_port_clash,
    free_port,
    log_size,
    signal_process_group,
)
from sparkfleet.fleet.runtimes import installed_pyspark_runtime


class DirectServer:
    def __init__(self, cores: int = 2, memory_mb: int = 2048, spark_conf: dict[str, str] | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="sparkfleet-direct-")
        self.workdir = Path(self._tmp.name)
        self.token = uuid.uuid4().hex
        self.port = free_port()
        self.ui_port = free_port()  # Spark UI and its REST API, on 127.0.0.1
        self._spec = ClusterSpec(
            id="direct",
            size=SizeClass("direct", cores, memory_mb),
            runtime=installed_pyspark_runtime(),
            cpus=(),
            spark_conf=spark_conf or {},
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"sc://localhost:{self.port}/;token={self.token}"

    def start(self, timeout_s: float = 180) -> "DirectServer":
        log_path = self.workdir / "server.log"
        for attempt in range(1, START_ATTEMPTS + 1):
            log_offset = log_size(log_path)
            if self._launch_and_wait(timeout_s):
                return self
            if attempt == START_ATTEMPTS or not died_of_port_clash(log_path, log_offset):
                break
            self.port, self.ui_port = free_port(), free_port()  # taken before the JVM bound them
        log_text = log_path.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"direct Spark Connect server did not start{cause_in(log_text)}")

    def _launch_and_wait(self, timeout_s: float) -> bool:
        """Start the JVM and wait until it answers; False (and the JVM stopped) if it exits or times out."""
        provisioner = LocalProvisioner(self.workdir, timeout_s, 10)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        cmd = provisioner.command(self._spec, self.port, self.ui_port, self.workdir)
        with (self.workdir / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=provisioner.environment(self._spec, self.token, self.workdir),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        probe = _readiness_probe()
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            config = channel.unary_unary("/spark.connect.SparkConnectService/Config")
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self._stop_jvm()
                    return False
                try:
                    config(probe, timeout=5, metadata=(("authorization", f"Bearer {self.token}"),))
                    return True
                except grpc.RpcError:
                    time.sleep(0.25)

    def stop(self) -> None:
        self._stop_jvm()
        self._tmp.cleanup()

    def _stop_jvm(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            signal_process_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        # Python workers of its group may outlive the JVM: kill the group regardless.
        signal_process_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> "DirectServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
