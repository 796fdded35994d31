"""A Spark Connect server JVM run by a synchronous program: started, probed until it answers, stopped."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from sparkfleet.fleet.provisioners.local import (
    START_ATTEMPTS,
    _readiness_probe,
    cause_in,
    died_of_port_clash,
    free_port,
    log_size,
    signal_process_group,
)


class ServerJvm:
    """A Spark Connect server in a temporary directory of its own (log: ``server.log``).

    It is started again on fresh ports if a port it was given was taken before it bound it, is
    ready once it answers an authenticated Config call, and is stopped with its whole process
    group (its Python workers too) whether its start succeeded, failed or was interrupted; its
    directory goes with it. Subclasses say how it is started: ``command`` and ``environment``.
    """

    what = "Spark Connect server"  # for messages

    def __init__(self, prefix: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.workdir = Path(self._tmp.name)
        self.token = uuid.uuid4().hex
        self.port = free_port()
        self.ui_port = free_port()  # Spark UI and its REST API, if the command uses it
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, port: int, ui_port: int) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        # The stock client sends a token without TLS only to host "localhost", exactly.
        return f"sc://localhost:{self.port}/;token={self.token}"

    @property
    def pid(self) -> int:
        """The JVM's pid (its Python workers are its children)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self, timeout_s: float = 180) -> "ServerJvm":
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                log_offset = log_size(self.log_path)
                if self._launch_and_wait(timeout_s):
                    return self
                if attempt == START_ATTEMPTS or not died_of_port_clash(self.log_path, log_offset):
                    break
                self.port, self.ui_port = free_port(), free_port()  # taken before the JVM bound them
        except BaseException:  # Ctrl-C or SIGTERM while it starts: no JVM may outlive us
            self.stop()
            raise
        log_text = self.log_path.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"{self.what} did not start{cause_in(log_text)}")

    def _launch_and_wait(self, timeout_s: float) -> bool:
        """Start the JVM and wait until it answers; False (and the JVM stopped) if it exits or times out."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(self.port, self.ui_port), cwd=self.workdir, env=self.environment(),
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
        """Stop the JVM and remove its directory (idempotent)."""
        self._stop_jvm()
        self._tmp.cleanup()

    def _stop_jvm(self) -> None:
        """SIGTERM its process group, then SIGKILL what is left after 15 s."""
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

    def __enter__(self) -> "ServerJvm":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
