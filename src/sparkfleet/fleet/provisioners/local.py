"""The ``local`` provisioner: Spark Connect servers as child processes of this machine.

Each cluster is one JVM started with ``spark-submit --class ...SparkConnectServer`` from a
runtime's Spark home, with its own gRPC port, heap and ``local[N]`` task slots, bound to loopback
and protected by a token only the gateway knows. The JVM gets a parent-death signal (``setpriv
--pdeathsig KILL``) so it dies with sparkfleet even if sparkfleet is killed, its own process group
so a stop takes its Python workers with it, and, where the kernel's control groups are writable,
a group of its own (``fleet/cgroups.py``) that the CPU policy sets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc

from sparkfleet.errors import ClusterStartFailed, EnvironmentProblem
from sparkfleet.fleet.cgroups import ClusterGroups
from sparkfleet.fleet.model import SizeClass
from sparkfleet.fleet.provisioners.warmup import warm_up
from sparkfleet.fleet.query_costs import build_listener, listener_conf
from sparkfleet.fleet.runtimes import Runtime

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
LOOPBACK = "127.0.0.1"
_DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# Spark analyses a plan recursively: with the JVM's default 1 MiB thread stacks a plan ~500
# operators deep (the protocol admits 1024 message levels) dies of StackOverflowError and the
# client gets a bare UNKNOWN. 16 MiB held the deepest plans the protocol admits (measured: 510
# nested Projects, 509 nested functions); twice that for operators that recurse more per level.
# Stacks are reserved address space, not memory, until used. A user's own -Xss comes later and wins.
_THREAD_STACK = "-Xss32m"
# A port from free_port() is free when chosen, not when the JVM binds it seconds later: another
# process (often an outgoing connection given the same ephemeral port) may take it first. The JVM
# then exits with this in its log, and the cluster is started again on fresh ports.
_PORT_CLASH = b"java.net.BindException"
START_ATTEMPTS = 3
# Environment variables of the parent that would change how a child Spark behaves.
_SCRUBBED_ENV = ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_CONNECT_TESTING_REMOTE",
                 "PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR", "SPARK_LOCAL_DIRS")

ProgressCallback = Callable[[str, str], None]
log = logging.getLogger(__name__)


def free_port(host: str = LOOPBACK) -> int:
    """A port free on ``host`` now, for a process that binds it later.

    Drawn at random below the kernel's ephemeral range when it can be: the kernel hands ports of
    that range to every outgoing connection, so one handed out by ``bind(0)`` may be taken by some
    connection before the JVM binds it. Parallel runs draw different ports (and a clash is retried).
    """
    low = _ephemeral_range_start()
    for _ in range(20):
        port = _PORTS_RANDOM.randrange(_SERVICE_PORTS_FROM, low) if low > _SERVICE_PORTS_FROM else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_SERVICE_PORTS_FROM = 20000
_PORTS_RANDOM = random.SystemRandom()  # not the seeded module random: two seeded runs must not draw alike


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    id: str
    size: SizeClass
    runtime: Runtime
    spark_conf: dict[str, str] = field(default_factory=dict)
    # Tasks it runs at once (``local[N]``); None: one per core. More than its cores when it may
    # use idle CPUs of the pool (fleet/cpu_sharing.py).
    task_slots: int | None = None
    # Run the warm-up queries (fleet/provisioners/warmup.py) before it is reported ready.
    warm_up: bool = False


@dataclass
class LocalCluster:
    """A running child JVM and what the gateway needs to reach it."""

    spec: ClusterSpec
    process: asyncio.subprocess.Process
    grpc_port: int
    ui_port: int
    token: str
    workdir: Path
    exit_code: int | None = None
    # Where its query-cost listener writes (fleet/query_costs.py); None: it runs without one.
    costs_dir: Path | None = None
    # Called once the JVM has exited (e.g. to remove its control group).
    on_exit: Callable[[], None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    async def wait(self) -> int:
        """Wait for the JVM to exit; return its exit status (negative: killed by that signal)."""
        self.exit_code = await self.process.wait()
        self._exited()
        return self.exit_code

    def _exited(self) -> None:
        if self.on_exit is not None:
            on_exit, self.on_exit = self.on_exit, None
            on_exit()

    async def stop(self, timeout_s: float) -> int:
        """SIGTERM the cluster's process group, then SIGKILL whatever is left after the timeout."""
        if self.process.returncode is None:
            signal_process_group(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        # The JVM may be gone while Python workers of its group linger: kill the group regardless.
        signal_process_group(self.pid, signal.SIGKILL)
        self.exit_code = await self.process.wait()
        self._exited()
        return self.exit_code


def signal_process_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalProvisioner:
    """Starts clusters as child processes under ``data_dir/clusters/<id>``."""

    name = "local"

    def __init__(self, data_dir: Path, start_timeout_s: float, stop_timeout_s: float,
                 groups: ClusterGroups | None = None) -> None:
        self._data_dir = data_dir
        self._start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._setpriv = shutil.which("setpriv")
        self._groups = groups
        # The query-cost listener's classes by Spark version (None: it could not be built); one
        # build per version, however many clusters start at once.
        self._listeners: dict[str, asyncio.Task[Path | None]] = {}

    async def _listener_for(self, runtime: Runtime) -> Path | None:
        if runtime.version not in self._listeners:
            self._listeners[runtime.version] = asyncio.get_running_loop().create_task(self._build_listener(runtime))
        return await asyncio.shield(self._listeners[runtime.version])

    @staticmethod
    async def _build_listener(runtime: Runtime) -> Path | None:
        try:
            return await build_listener(runtime.spark_home, runtime.version)
        except EnvironmentProblem as exc:
            log.warning("clusters of Spark %s run without the query-cost listener, so workloads have no cost "
                        "history (%s); install a JDK, e.g. apt-get install openjdk-17-jdk-headless", runtime.version, exc)
            return None

    def command(self, spec: ClusterSpec, grpc_port: int, ui_port: int, workdir: Path,
                listener: Path | None = None) -> list[str]:
        """The JVM's command line; ``listener``: the query-cost listener's classes, to run it."""
        conf = {
            "spark.connect.grpc.binding.address": LOOPBACK,
            "spark.connect.grpc.binding.port": str(grpc_port),
            "spark.connect.grpc.maxInboundMessageSize": str(128 * 1024 * 1024),
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
            "spark.ui.enabled": "true",
            "spark.ui.port": str(ui_port),
            # Live JVM heap (used/max) in the UI's metrics servlet, read by fleet/monitor.py.
            "spark.metrics.conf.*.source.jvm.class": "org.apache.spark.metrics.source.JvmSource",
            "spark.port.maxRetries": "0",
            "spark.local.dir": str(workdir / "tmp"),
            "spark.sql.warehouse.dir": str(workdir / "spark-warehouse"),
            "spark.app.name": f"sparkfleet-{spec.id}",
            **spec.runtime.default_conf,
            **spec.spark_conf,
        }
        if listener is not None:
            conf.update(listener_conf(listener, workdir / "costs", conf))
        # The JVM's own temp files (Spark Connect artifacts, Hive session dirs, native libraries)
        # stay in the cluster's directory, so a killed cluster leaves nothing in the machine's /tmp.
        java_options = conf.get(_DRIVER_JAVA_OPTIONS, "")
        conf[_DRIVER_JAVA_OPTIONS] = f"-Djava.io.tmpdir={workdir / 'tmp'} {_THREAD_STACK} {java_options}".strip()
        cmd: list[str] = []
        if self._setpriv:
            cmd += [self._setpriv, "--pdeathsig", "KILL"]
        cmd += [
            str(spec.runtime.spark_submit),
            "--class", SERVER_CLASS,
            "--master", f"local[{spec.task_slots or spec.size.cores}]",
            "--driver-memory", f"{spec.size.memory_mb}m",
        ]
        for key, value in conf.items():
            cmd += ["--conf", f"{key}={value}"]
        return cmd

    def environment(self, spec: ClusterSpec, token: str, workdir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(
            SPARK_HOME=str(spec.runtime.spark_home),
            # The server's Python workers need pyarrow and pandas: use sparkfleet's interpreter.
            PYSPARK_PYTHON=sys.executable,
            PYSPARK_DRIVER_PYTHON=sys.executable,
            SPARK_LOCAL_IP=LOOPBACK,
            TMPDIR=str(workdir / "tmp"),
            # Passed in the environment, not on the command line, so `ps` does not show it.
            SPARK_CONNECT_AUTHENTICATE_TOKEN=token,
        )
        return env

    async def start(self, spec: ClusterSpec, progress: ProgressCallback | None = None) -> LocalCluster:
        """Start a cluster and return once it answers an authenticated Spark Connect call."""
        if not spec.runtime.spark_submit.exists():
            raise EnvironmentProblem(f"{spec.runtime.spark_submit} does not exist")
        workdir = self._data_dir / "clusters" / spec.id
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        # Kept beside the cluster's other private files (owner-only), for tools that measure a
        # cluster directly, such as `sparkfleet bench overhead`.
        token_file = workdir / "token"
        token_file.touch(mode=0o600)
        token_file.write_text(token)
        for attempt in range(1, START_ATTEMPTS + 1):
            log_offset = log_size(workdir / "server.log")
            cluster = await self._launch(spec, token, workdir)
            if progress:
                progress(spec.id, f"JVM started (pid {cluster.pid}), waiting for Spark Connect")
            try:
                await asyncio.wait_for(self._until_ready(cluster), self._start_timeout_s)
                break
            except asyncio.TimeoutError:
                await cluster.stop(self.stop_timeout_s)
                raise ClusterStartFailed(
                    f"cluster {spec.id} did not answer within {self._start_timeout_s:.0f}s; "
                    f"see {cluster.log_path}. Last lines:\n{cluster.log_tail(1500)}"
                ) from None
            except ClusterStartFailed:
                await cluster.stop(self.stop_timeout_s)
                if attempt == START_ATTEMPTS or not died_of_port_clash(cluster.log_path, log_offset):
                    raise
                if progress:
                    progress(spec.id, "a port it was given was taken before it could bind it; starting it again")
            except BaseException:
                await cluster.stop(self.stop_timeout_s)
                raise
        if spec.warm_up:
            if progress:
                progress(spec.id, "answering Spark Connect; warming up")
            try:
                took = await warm_up(cluster.address, token, spec.id)
            except BaseException:
                await cluster.stop(self.stop_timeout_s)
                raise
            if progress and took is not None:
                progress(spec.id, f"warmed up in {took:.1f}s")
        return cluster

    async def _launch(self, spec: ClusterSpec, token: str, workdir: Path) -> LocalCluster:
        grpc_port, ui_port = free_port(), free_port()
        listener = await self._listener_for(spec.runtime)
        log_file = (workdir / "server.log").open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(spec, grpc_port, ui_port, workdir, listener),
                cwd=workdir,
                env=self.environment(spec, token, workdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log_file.close()
        cluster = LocalCluster(spec, process, grpc_port, ui_port, token, workdir,
                               costs_dir=workdir / "costs" if listener is not None else None)
        if self._groups is not None:
            groups = self._groups
            try:
                # Before the JVM starts its threads and workers: they inherit the group.
                groups.join(spec.id, process.pid)
                cluster.on_exit = lambda: groups.remove(spec.id)
            except OSError as exc:
                log.warning("cluster %s runs outside its control group: %s", spec.id, exc)
        return cluster

    async def _until_ready(self, cluster: LocalCluster) -> None:
        probe = _readiness_probe()
        async with grpc.aio.insecure_channel(cluster.address) as channel:
            config = channel.unary_unary("/spark.connect.SparkConnectService/Config")
            while True:
                if cluster.process.returncode is not None:
                    raise ClusterStartFailed(
                        f"cluster {cluster.spec.id} exited with status {cluster.process.returncode} "
                        f"while starting{cause_in(cluster.log_tail(64_000))}; see {cluster.log_path}. "
                        f"Last lines:\n{cluster.log_tail(1500)}"
                    )
                try:
                    await config(probe, timeout=5, metadata=(("authorization", f"Bearer {cluster.token}"),))
                    return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise ClusterStartFailed(
                            f"cluster {cluster.spec.id} answered the readiness probe with "
                            f"{exc.code().name}: {exc.details()}"
                        ) from exc
                await asyncio.sleep(0.25)


def log_size(path: Path) -> int:
    """Bytes in a JVM's log so far (0 if there is none yet): where the next start's lines begin."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def died_of_port_clash(log_path: Path, since: int) -> bool:
    """Whether the JVM whose lines begin at byte ``since`` of its log could not bind a port."""
    try:
        with log_path.open("rb") as f:
            f.seek(since)
            return _PORT_CLASH in f.read()
    except OSError:
        return False


# The head line of a Java stack trace: ``java.net.BindException: Failed to bind ...``.
_EXCEPTION_LINE = re.compile(r"^(?:Exception in thread \S+ )?[a-z][\w$]*(?:\.[\w$]+)+(?:Exception|Error)\b.*$", re.M)


def cause_in(log_text: str) -> str:
    """The last exception a JVM's log begins a stack trace with, as ``: <line>``; '' if none."""
    heads = _EXCEPTION_LINE.findall(log_text)
    return f": {heads[-1].strip()[:300]}" if heads else ""


def _readiness_probe() -> bytes:
    from pyspark.sql.connect.proto import base_pb2

    request = base_pb2.ConfigRequest(session_id=str(uuid.uuid4()), client_type="sparkfleet-probe")
    request.user_context.user_id = "sparkfleet"
    request.operation.get_option.keys.append("spark.app.name")
    return request.SerializeToString()
