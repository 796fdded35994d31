"""The pool-wide catalog: one Hive metastore service, so every cluster sees the same tables.

A Spark Connect server keeps permanent tables and databases in its own catalog; with one catalog
per cluster, a table written through one cluster would be missing on the next, and gone with a
lost cluster. The local pool therefore runs one Hive metastore (from the runtime's own jars,
Derby-backed, under ``data_dir/catalog``) and every cluster uses it, with one warehouse
directory under ``data_dir/warehouse``. Tables survive lost clusters and restarts of sparkfleet.

Hive creates the ``default`` database described as "Default Hive database"; a Spark Connect server
with its own catalog says "default database". A new catalog is started once, stopped, given Spark's
description with Derby's own SQL tool, and started again, so clients see what a server shows them.

Hive 2.3's metastore listens on every interface and has no setting for the address, so the service
is started through ``java/LoopbackMetastore.java`` (Java's single-file source launch), which serves
it the way Hive does but on 127.0.0.1 only. A Java without a compiler (a JRE) cannot run that; the
catalog then falls back to Hive's own entry point and warns that the metastore is reachable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from pathlib import Path
from xml.sax.saxutils import escape

from sparkfleet.errors import ClusterStartFailed, EnvironmentProblem
from sparkfleet.fleet.provisioners.local import LOOPBACK, ProgressCallback, free_port, signal_process_group
from sparkfleet.fleet.runtimes import Runtime

log = logging.getLogger(__name__)

_METASTORE_CLASS = "org.apache.hadoop.hive.metastore.HiveMetaStore"
# Serves the same metastore bound to loopback (Hive's entry point binds every interface).
_LOOPBACK_LAUNCHER = Path(__file__).parent / "java" / "LoopbackMetastore.java"
_HEAP_MB = 384
_NAME = "catalog"
_DERBY_TOOL = "org.apache.derby.tools.ij"
# What Spark's own catalog calls its default database (SessionCatalog), in Derby SQL.
_DESCRIBE_DEFAULT_DATABASE = "UPDATE APP.DBS SET \"DESC\" = 'default database' WHERE NAME = 'default';\n"


def _hive_site(metastore_db: Path, warehouse: Path) -> str:
    properties = {
        "javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={metastore_db};create=true",
        "datanucleus.schema.autoCreateAll": "true",
        "hive.metastore.schema.verification": "false",
        "hive.metastore.warehouse.dir": str(warehouse),
        # Hive's asynchronous logging and its default connection pool (BoneCP) need libraries
        # Spark does not ship; DBCP ships with Spark.
        "hive.async.log.enabled": "false",
        "datanucleus.connectionPoolingType": "DBCP",
    }
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n" for k, v in properties.items()
    )
    return f"<configuration>\n{body}</configuration>\n"


class SharedCatalog:
    """Runs the metastore service and tells clusters how to use it."""

    def __init__(self, data_dir: Path, runtime: Runtime, start_timeout_s: float, stop_timeout_s: float) -> None:
        self._dir = (data_dir / "catalog").resolve()
        self.warehouse = (data_dir / "warehouse").resolve()
        self._runtime = runtime
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        # Chosen now: clusters are configured with the address before the service is up.
        self._port = free_port()
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._loopback_only: bool | None = None  # known once started

    @property
    def uri(self) -> str:
        return f"thrift://{LOOPBACK}:{self._port}"

    @property
    def log_path(self) -> Path:
        return self._dir / "metastore.log"

    def describe(self) -> dict[str, object]:
        process = self._process
        alive = process is not None and process.returncode is None
        return {"uri": self.uri, "pid": process.pid if process else None, "running": alive,
                "warehouse": str(self.warehouse), "loopback_only": self._loopback_only}

    def cluster_conf(self) -> dict[str, str]:
        """Spark confs that make a cluster use this catalog and the shared warehouse."""
        return {
            "spark.sql.catalogImplementation": "hive",
            "spark.hadoop.hive.metastore.uris": self.uri,
            "spark.sql.warehouse.dir": str(self.warehouse),
            # Clusters may come up first; their metastore client waits for the service.
            "spark.hadoop.hive.metastore.connect.retries": "60",
            # A cluster must not answer from a cached view of a table another cluster rewrote.
            "spark.sql.filesourceTableRelationCacheSize": "0",
        }

    async def start(self, progress: ProgressCallback | None = None) -> None:
        java = shutil.which("java")
        if java is None:
            raise EnvironmentProblem("'java' is not on PATH; the shared catalog needs it")
        self._loopback_only = await _can_compile_source(java)
        if not self._loopback_only:
            log.warning(
                "the shared catalog's metastore listens on all network interfaces without authentication: anyone "
                "who can reach this machine can create and drop every tenant's tables. Keeping it on 127.0.0.1 "
                "needs a JDK (the jdk.compiler module), which %s lacks: install one (e.g. apt-get install "
                "openjdk-17-jdk-headless), or set [pool] catalog = \"per-cluster\" (tables then live and die with "
                "their cluster)", java,
            )
        self._dir.mkdir(parents=True, exist_ok=True)
        self.warehouse.mkdir(parents=True, exist_ok=True)
        metastore_db = self._dir / "metastore_db"
        new_catalog = not metastore_db.exists()
        (self._dir / "hive-site.xml").write_text(_hive_site(metastore_db, self.warehouse))
        await self._launch(java, progress)
        if new_catalog:
            # The service creates the default database before it listens; Derby allows one process.
            await self._terminate()
            await self._describe_default_database(java, metastore_db, progress)
            await self._launch(java, progress)
        self._watcher = asyncio.get_running_loop().create_task(self._watch(java, progress))

    async def _launch(self, java: str, progress: ProgressCallback | None) -> None:
        classpath = f"{self._dir}{os.pathsep}{self._runtime.spark_home / 'jars'}/*"
        tmp = self._dir / "tmp"  # the JVM's temp files stay with the catalog, out of the machine's /tmp
        tmp.mkdir(exist_ok=True)
        main = str(_LOOPBACK_LAUNCHER) if self._loopback_only else _METASTORE_CLASS
        cmd = [java, f"-Xmx{_HEAP_MB}m", f"-Djava.io.tmpdir={tmp}", "-cp", classpath, main, "-p", str(self._port)]
        setpriv = shutil.which("setpriv")
        if setpriv:
            cmd = [setpriv, "--pdeathsig", "KILL", *cmd]  # dies with sparkfleet, even on SIGKILL
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *cmd, cwd=self._dir, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        if progress:
            progress(_NAME, f"metastore JVM started (pid {self._process.pid}), waiting for port {self._port}")
        try:
            await asyncio.wait_for(self._until_listening(), self._start_timeout_s)
        except asyncio.TimeoutError:
            await self.stop()
            raise ClusterStartFailed(
                f"the shared catalog did not listen within {self._start_timeout_s:.0f}s; see {self.log_path}"
            ) from None
        if progress:
            progress(_NAME, f"shared catalog ready at {self.uri}, warehouse {self.warehouse}")

    async def _describe_default_database(self, java: str, metastore_db: Path, progress: ProgressCallback | None) -> None:
        """Give ``default`` Spark's description; a failure only leaves Hive's wording, so it is reported, not raised."""
        jars = self._runtime.spark_home / "jars"
        classpath = os.pathsep.join(str(jar) for jar in sorted(jars.glob("derby*.jar")))
        script = self._dir / "describe_default_database.sql"
        script.write_text(_DESCRIBE_DEFAULT_DATABASE)
        tool = await asyncio.create_subprocess_exec(
            java, f"-Dij.database=jdbc:derby:{metastore_db}", f"-Dderby.stream.error.file={self._dir / 'derby.log'}",
            "-cp", classpath, _DERBY_TOOL, str(script),
            cwd=self._dir, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await tool.communicate()
        text = output.decode(errors="replace")
        if tool.returncode != 0 or "1 row inserted/updated/deleted" not in text:
            if progress:
                last = text.strip().splitlines()[-1:] or [f"exit status {tool.returncode}"]
                progress(_NAME, f"could not set the default database's description ({last[0]}); it reads Hive's")

    async def _until_listening(self) -> None:
        assert self._process is not None
        while True:
            if self._process.returncode is not None:
                raise ClusterStartFailed(
                    f"the shared catalog exited with status {self._process.returncode} while starting; "
                    f"see {self.log_path}"
                )
            try:
                _, writer = await asyncio.open_connection(LOOPBACK, self._port)
            except OSError:
                await asyncio.sleep(0.25)
                continue
            writer.close()
            return

    async def _watch(self, java: str, progress: ProgressCallback | None) -> None:
        """Restart the metastore on its port if it dies: clusters keep their configured address."""
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            if progress:
                progress(_NAME, f"metastore exited with status {code}; restarting it")
            await self._launch(java, progress)

    async def stop(self) -> None:
        self._stopping = True
        await self._terminate()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)

    async def _terminate(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            signal_process_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_timeout_s)
            except asyncio.TimeoutError:
                signal_process_group(process.pid, signal.SIGKILL)
                await process.wait()


async def _can_compile_source(java: str) -> bool:
    """Whether this Java has the compiler that single-file source launch needs (a JRE does not)."""
    try:
        probe = await asyncio.create_subprocess_exec(
            java, "--describe-module", "jdk.compiler",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise EnvironmentProblem(f"could not run {java}: {exc}") from exc
    return await probe.wait() == 0
