"""A plain Spark Connect server, started the way a user starts one from pyspark: the baseline users compare with."""

from __future__ import annotations

import os
import shutil
import sys

from sparkfleet.fleet.provisioners.local import SERVER_CLASS
from sparkfleet.fleet.runtimes import installed_pyspark_runtime
from sparkfleet.testing.server_jvm import ServerJvm


class PlainServer(ServerJvm):
    """``$SPARK_HOME/bin/spark-submit --class ...SparkConnectServer`` with nothing but its port set.

    Spark's defaults are kept on purpose: ``local[*]`` on every core, a 1 GiB driver heap, the
    Spark UI on (4040, or the next free port). SPARK_HOME is the installed pyspark package, its
    Python workers run this interpreter, and the token comes from the environment, so the stock
    client needs ``sc://localhost:PORT/;token=T`` (``url``).
    """

    what = "plain Spark Connect server"

    def __init__(self) -> None:
        super().__init__(prefix="sparkfleet-plain-")
        self._runtime = installed_pyspark_runtime()
        # Only matters if this program is SIGKILLed: the JVM then dies with it instead of lingering.
        setpriv = shutil.which("setpriv")
        self._parent_death = [setpriv, "--pdeathsig", "KILL"] if setpriv else []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, port: int, ui_port: int) -> list[str]:  # the UI port is left to Spark, as a user does
        return [*self._parent_death, str(self._runtime.spark_submit), "--class", SERVER_CLASS,
                "--conf", f"spark.connect.grpc.binding.port={port}"]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "SPARK_HOME": str(self._runtime.spark_home), "PYSPARK_PYTHON": sys.executable,
                "SPARK_CONNECT_AUTHENTICATE_TOKEN": self.token}
