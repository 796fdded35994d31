"""A Spark Connect server started directly (no gateway), as the baseline for comparisons.

It is launched exactly like a ``local`` cluster (same command builder) but synchronously, so
tools that are not asyncio programs can use it.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from sparkfleet.fleet.model import SizeClass
from sparkfleet.fleet.provisioners.local import ClusterSpec, LocalProvisioner, _readiness_probe, free_port
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
                    self.stop()
                    raise RuntimeError(f"direct Spark Connect server did not start; see {self.workdir}/server.log")
                try:
                    config(probe, timeout=5, metadata=(("authorization", f"Bearer {self.token}"),))
                    return self
                except grpc.RpcError:
                    time.sleep(0.25)

    def stop(self) -> None:
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> "DirectServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
