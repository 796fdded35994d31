"""A real ``sparkfleet up`` in a child process, for tests and benchmarks.

It starts the CLI exactly as a user would (free ports, a private data dir), waits for the ready
line, and on stop checks that every cluster JVM it started is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from prometheus_client.parser import text_string_to_metric_families

_READY = re.compile(r"sparkfleet ready: sc://localhost:(\d+) admin (https?)://localhost:(\d+)")


# Appended to a pool's config: the clusters it names are the whole fleet, started once and
# replaced when lost (tests and benchmarks that compare fixed fleets).
FIXED_FLEET = "\n[autoscaler]\nenabled = false\n"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition") -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


class SparkfleetProcess:
    def __init__(self, config_toml: str | None = None, data_dir: Path | None = None, name: str = "sparkfleet",
                 ca_file: Path | None = None, admin_token: str | None = None):
        """For admin API calls: ``ca_file``, the certificate to trust (a config with ``[tls]``);
        ``admin_token``, the bearer token to send (a config with ``[auth]``)."""
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix=f"{name}-")
        self.data_dir = data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.config_path: Path | None = None
        if config_toml is not None:
            self.config_path = self.data_dir / "sparkfleet.toml"
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(config_toml)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.admin_port = 0
        self.admin_scheme = "http"
        self._admin_tls = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._admin_headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.stderr_lines: list[str] = []
        self.cluster_pids: set[int] = set()

    @property
    def url(self) -> str:
        return f"sc://localhost:{self.port}"

    @property
    def admin(self) -> str:
        return f"{self.admin_scheme}://localhost:{self.admin_port}"

    def start(self, timeout_s: float = 240, port: int = 0, admin_port: int = 0) -> "SparkfleetProcess":
        cmd = [sys.executable, "-m", "sparkfleet", "up", "--port", str(port), "--admin-port", str(admin_port),
               "--data-dir", str(self.data_dir)]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        ready = threading.Event()

        def read_stdout() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                match = _READY.search(line)
                if match:
                    self.port, self.admin_scheme, self.admin_port = int(match[1]), match[2], int(match[3])
                    ready.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"sparkfleet did not become ready (exit {self.proc.returncode}):\n" + "".join(self.stderr_lines[-40:])
                )
        try:
            self.remember_cluster_pids()
        except BaseException:  # e.g. an admin API this helper may not read: stop what started
            self.stop()
            raise
        return self

    def _drain_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def api(self, path: str) -> Any:
        return json.loads(self.text(path))

    def text(self, path: str) -> str:
        request = urllib.request.Request(f"{self.admin}{path}", headers=self._admin_headers)
        with urllib.request.urlopen(request, timeout=30, context=self._admin_tls) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` in ``/metrics`` whose labels include ``labels``."""
        total = 0.0
        for family in text_string_to_metric_families(self.text("/metrics")):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def remember_cluster_pids(self) -> set[int]:
        """Pids of every JVM this sparkfleet runs (clusters and the shared catalog's metastore)."""
        for cluster in self.api("/api/clusters?history=0"):
            if cluster["pid"]:
                self.cluster_pids.add(cluster["pid"])
        catalog = self.api("/api/health").get("catalog")
        if catalog and catalog.get("pid"):
            self.cluster_pids.add(catalog["pid"])
        return self.cluster_pids

    def ready_clusters(self) -> list[dict[str, Any]]:
        return [c for c in self.api("/api/clusters?history=0") if c["state"] == "ready"]

    def restart(self, sig: int = signal.SIGTERM) -> "SparkfleetProcess":
        """Stop sparkfleet (keeping its data dir) and start it again on the same ports."""
        port, admin_port = self.port, self.admin_port
        self._stop_process(sig, 60)
        return self.start(port=port, admin_port=admin_port)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int | None:
        """Stop sparkfleet and wait for every cluster JVM it ran to be gone."""
        code = self._stop_process(sig, timeout_s)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    def _stop_process(self, sig: int, timeout_s: float) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.remember_cluster_pids()
            except OSError:
                pass
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        wait_until(lambda: not any(pid_alive(p) for p in self.cluster_pids), 30, what="cluster JVMs to exit")
        return self.proc.returncode

    def __enter__(self) -> "SparkfleetProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sparkfleet_runtimes(data_dir: Path, *args: str, timeout_s: float = 1800) -> str:
    """Run ``sparkfleet runtimes ARGS --data-dir DATA_DIR``; its output, or RuntimeError with its errors."""
    done = subprocess.run([sys.executable, "-m", "sparkfleet", "runtimes", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"sparkfleet runtimes {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout + done.stderr


@contextlib.contextmanager
def spark_session(url: str) -> Iterator[Any]:
    """A fresh stock Spark Connect session on ``url``, stopped afterwards whatever happened."""
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(url).create()
    try:
        yield session
    finally:
        try:
            session.stop()
        except Exception:  # noqa: BLE001 - the server may be gone; nothing left to release
            pass


def hang_once_udf(marker_dir: str):  # type: ignore[no-untyped-def]
    """A Python UDF doubling its input that, the first time it runs anywhere, creates
    ``marker_dir/started`` and hangs (until its cluster dies); once that file exists it returns at once."""
    from pyspark.sql.functions import udf

    @udf("long")
    def double_after_hang(x):  # type: ignore[no-untyped-def]
        import os
        import time

        marker = os.path.join(marker_dir, "started")
        if not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(600)
        return x * 2

    return double_after_hang


def wait_until_running_on_cluster(proc: SparkfleetProcess, spark: Any, timeout_s: float = 60) -> list[str]:
    """Operation ids of ``spark``'s queries that the gateway records as running AND that their
    cluster reports running (GetStatus through the gateway); waits until there is one."""
    running_state = 2  # OPERATION_STATE_RUNNING

    def check() -> list[str] | None:
        records = [q for q in proc.api(f"/api/queries?session_id={spark.session_id}") if q["state"] == "running"]
        if not records:
            return None
        statuses = spark._client._get_operation_statuses([q["id"] for q in records]).operation_statuses
        return [st.operation_id for st in statuses if st.state == running_state] or None

    return wait_until(check, timeout_s, what="a query running on its cluster")


def run_in_thread(fn) -> tuple[threading.Thread, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Run ``fn`` in a daemon thread; its result or exception lands in the returned box."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the caller inspects it
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box
