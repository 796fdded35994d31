"""A Spark Connect server started directly (no gateway), as the baseline for comparisons.

It is launched exactly like a ``local`` cluster (same command builder) but synchronously, so
tools that are not asyncio programs can use it.
"""

from __future__ import annotations

from pathlib import Path

from sparkfleet.fleet.model import SizeClass
from sparkfleet.fleet.provisioners.local import ClusterSpec, LocalProvisioner
from sparkfleet.fleet.runtimes import installed_pyspark_runtime
from sparkfleet.testing.server_jvm import ServerJvm


class DirectServer(ServerJvm):
    what = "direct Spark Connect server"

    def __init__(self, cores: int = 2, memory_mb: int = 2048, spark_conf: dict[str, str] | None = None,
                 listener: Path | None = None):
        """``listener``: the query-cost listener's classes (fleet/query_costs.py), to run it; it
        writes to ``costs_dir``."""
        super().__init__(prefix="sparkfleet-direct-")
        self._listener = listener
        self.costs_dir = self.workdir / "costs"
        (self.workdir / "tmp").mkdir()
        self._spec = ClusterSpec(
            id="direct",
            size=SizeClass("direct", cores, memory_mb),
            runtime=installed_pyspark_runtime(),
            spark_conf=spark_conf or {},
        )
        self._provisioner = LocalProvisioner(self.workdir, 180, 10)

    def command(self, port: int, ui_port: int) -> list[str]:
        return self._provisioner.command(self._spec, port, ui_port, self.workdir, self._listener)

    def environment(self) -> dict[str, str]:
        return self._provisioner.environment(self._spec, self.token, self.workdir)
