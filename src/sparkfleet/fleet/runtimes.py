"""Spark runtimes: a named Spark distribution plus default confs, and the Java it needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sparkfleet.errors import EnvironmentProblem

MIN_JAVA = 17


@dataclass(frozen=True, slots=True)
class Runtime:
    name: str
    spark_home: Path
    version: str
    default_conf: dict[str, str] = field(default_factory=dict)

    @property
    def spark_submit(self) -> Path:
        return self.spark_home / "bin" / "spark-submit"


def installed_pyspark_runtime() -> Runtime:
    """The runtime of the pyspark package installed next to sparkfleet (the embedded default)."""
    try:
        import pyspark
    except ImportError as exc:  # pragma: no cover - pyspark is a pinned dependency
        raise EnvironmentProblem("pyspark is not installed; run the README's setup command") from exc
    home = Path(pyspark.__file__).resolve().parent
    if not (home / "jars").is_dir():
        raise EnvironmentProblem(
            f"pyspark at {home} has no jars/ folder: install the full 'pyspark' package, "
            "not 'pyspark-client' or 'pyspark-connect'"
        )
    return Runtime(name=pyspark.__version__, spark_home=home, version=pyspark.__version__)


def check_java() -> str:
    """Return the Java version string, or explain precisely what is missing."""
    java = shutil.which("java")
    if java is None:
        raise EnvironmentProblem(
            f"Java {MIN_JAVA} or newer is required to run Spark but 'java' is not on PATH. "
            "Install it (e.g. 'apt-get install openjdk-17-jre-headless') and try again."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    text = out.stderr + out.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if match is None:
        raise EnvironmentProblem(f"could not read the Java version from '{java} -version': {text!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise EnvironmentProblem(
            f"Java {MIN_JAVA} or newer is required, but {java} is Java {major}. "
            f"Install Java {MIN_JAVA} and put it first on PATH (or set JAVA_HOME)."
        )
    return text.splitlines()[0] if text else f"java {major}"
