"""Install a Spark runtime: the ``pyspark`` package of a version, from the package index, into
the data dir (``data_dir/runtimes/pyspark-<version>``), with pip's progress shown as it goes.

The package carries Spark's jars and launch scripts, which is all a cluster needs; its Python
dependencies are not installed (no user code runs beside the gateway). The version installed
next to sparkfleet itself is used in place, without a download.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from sparkfleet.errors import EnvironmentProblem
from sparkfleet.fleet.runtimes import installed_pyspark_runtime

_VERSION = re.compile(r"^\d+\.\d+\.\d+([.-]?(rc|dev|post)\d+)?$")


def runtime_dir(data_dir: Path, version: str) -> Path:
    return data_dir / "runtimes" / f"pyspark-{version}"


def install_pyspark(version: str, data_dir: Path, progress: Callable[[str], None] = lambda _line: None,
                    index_url: str | None = None) -> Path:
    """Return the Spark home of pyspark ``version``, installing it first if needed."""
    if not _VERSION.match(version):
        raise EnvironmentProblem(f"{version!r} is not a pyspark version (like 4.2.1)")
    installed = installed_pyspark_runtime()
    if installed.version == version:
        progress(f"pyspark {version} is the one installed with sparkfleet: using {installed.spark_home}")
        return installed.spark_home
    target = runtime_dir(data_dir, version)
    home = target / "pyspark"
    if (home / "jars").is_dir() and (home / "bin" / "spark-submit").exists():
        progress(f"pyspark {version} is already installed in {target}")
        return home
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--disable-pip-version-check",
               "--progress-bar", "raw", "--target", str(staging), f"pyspark=={version}"]
    if index_url:
        command += ["--index-url", index_url]
    progress(f"downloading pyspark {version} (about 400 MB) into {target}")
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pip:
        assert pip.stdout is not None
        tail: list[str] = []
        last_shown = -1
        for line in pip.stdout:
            line = line.strip()
            tail = (tail + [line])[-20:]
            shown = _percent(line)
            if shown is None:
                if line and not line.startswith("Progress"):
                    progress(line)
            elif shown >= last_shown + 10:
                last_shown = shown - shown % 10
                progress(f"downloaded {last_shown}%")
        code = pip.wait()
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise EnvironmentProblem(f"could not install pyspark {version} (pip exited with {code}):\n" + "\n".join(tail))
    if not (staging / "pyspark" / "jars").is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise EnvironmentProblem(f"pyspark {version} from the index has no jars/: it cannot run a cluster")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    for script in (home / "bin").iterdir():
        script.chmod(script.stat().st_mode | 0o111)
    progress(f"installed pyspark {version} in {target}")
    return home


def _percent(line: str) -> int | None:
    """pip's ``--progress-bar raw`` lines: "Progress 1234 of 5678"."""
    match = re.match(r"Progress (\d+) of (\d+)", line)
    if match is None or int(match.group(2)) == 0:
        return None
    return int(100 * int(match.group(1)) / int(match.group(2)))
