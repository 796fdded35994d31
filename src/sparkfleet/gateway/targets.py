"""Looking at a write's target from the gateway: does it exist yet (before re-running a write)?"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def local_path_exists(target: str) -> bool | None:
    """Whether a local-filesystem write target exists; None when it is not on this machine's disk.

    Local clusters share the gateway's filesystem, so a plain path or a ``file:`` URI can be
    checked directly. Anything else (hdfs:, s3a:, ...) is unknown here.
    """
    if not target:
        return None
    parsed = urlparse(target)
    if parsed.scheme == "file":
        return Path(parsed.path).exists()
    if parsed.scheme == "" and Path(target).is_absolute():
        return Path(target).exists()
    return None  # another filesystem, or relative to a cluster's working directory
