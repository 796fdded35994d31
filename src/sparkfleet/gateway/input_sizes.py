"""Sizes on disk of a plan's inputs (local paths, shared-warehouse tables), cached for a while.

The impure shell of the static cost estimate: ``plan/estimate.py`` needs bytes per ``Scan`` and
this module finds them. Only what the gateway can see is sized: absolute local paths and ``file:``
URIs (directories summed recursively, globs expanded) and managed tables of the shared warehouse.
Remote schemes, relative paths, external tables and other sources are ``None`` (unknown).

Bounded work: a walk stops after ``max_files`` files and returns the bytes counted so far, a lower
bound. A lower bound still tells "big" far better than "unknown" would (the estimate's guess for an
unknown input is smaller than what tens of thousands of files usually hold). Results, unknowns
included, are cached for ``ttl_s`` on the injected clock, so a dashboard re-running one query
does not re-walk its directory tree each time.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote, urlparse

from sparkfleet.clock import Clock
from sparkfleet.gateway.targets import managed_table_location
from sparkfleet.plan.relations import Scan

DEFAULT_TTL_S = 60.0
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_ENTRIES = 4096
_GLOB_CHARS = re.compile(r"[*?\[{]")
_BRACES = re.compile(r"\{([^{}]*)\}")  # an innermost {a,b,c} alternative, as Hadoop globs have
_MAX_BRACE_EXPANSIONS = 1024


@dataclass(frozen=True, slots=True)
class _Cached:
    size: int | None
    expires: float  # on the clock's monotonic scale


class InputSizer:
    """Sizes ``Scan``s in bytes; ``None`` when the gateway cannot see the input."""

    def __init__(
        self,
        warehouse: Path | None,
        clock: Clock,
        ttl_s: float = DEFAULT_TTL_S,
        max_files: int = DEFAULT_MAX_FILES,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._warehouse = warehouse
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_files = max_files
        self._max_entries = max_entries
        self._cache: OrderedDict[tuple[str, str, str], _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def sizes(self, scans: Iterable[Scan], current_database: str = "default") -> dict[Scan, int | None]:
        """The size of each scan (what ``estimate_static`` takes as ``input_bytes``)."""
        return {scan: self.size_of(scan, current_database) for scan in scans}

    def size_of(self, scan: Scan, current_database: str = "default") -> int | None:
        """Bytes on disk of one input, from the cache while it is fresh."""
        # An unqualified table name resolves against the session's database; a path does not.
        key = (scan.kind, scan.name, current_database if scan.kind == "table" else "")
        now = self._clock.monotonic()
        with self._lock:  # big plans are assessed on worker threads
            cached = self._cache.get(key)
            if cached is not None and cached.expires > now:
                self._cache.move_to_end(key)
                return cached.size
        size = self._measure(scan, current_database)
        with self._lock:
            self._cache[key] = _Cached(size, now + self._ttl_s)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return size

    def _measure(self, scan: Scan, current_database: str) -> int | None:
        if scan.kind == "path":
            return path_bytes(scan.name, self._max_files)
        if scan.kind == "table" and self._warehouse is not None:
            location = managed_table_location(self._warehouse, scan.name, current_database)
            return None if location is None else tree_bytes([location], self._max_files)
        return None


def local_path(name: str) -> str | None:
    """The local filesystem path (maybe a glob) a Spark path names; None if it is not local."""
    parsed = urlparse(name)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return unquote(parsed.path) or None
    if parsed.scheme and len(parsed.scheme) > 1:  # s3a:, hdfs:, abfss:... (a 1-letter one is a drive)
        return None
    # A relative path resolves against the cluster's working directory, which the gateway does not share.
    return name if os.path.isabs(name) else None


def path_bytes(name: str, max_files: int = DEFAULT_MAX_FILES) -> int | None:
    """Bytes under a local path or glob, like Spark would list them; None if not local or absent."""
    path = local_path(name)
    if path is None:
        return None
    if not _GLOB_CHARS.search(path):
        return tree_bytes([Path(path)], max_files)
    matches: list[Path] = []
    for pattern in expand_braces(path):
        matches.extend(Path(match) for match in sorted(glob.glob(pattern)))
    return tree_bytes(list(dict.fromkeys(matches)), max_files) if matches else None


def expand_braces(pattern: str) -> list[str]:
    """Expand Hadoop-glob alternatives: ``/d/{a,b}/*.csv`` -> ``/d/a/*.csv``, ``/d/b/*.csv``."""
    done: list[str] = []
    pending = [pattern]
    while pending and len(done) + len(pending) <= _MAX_BRACE_EXPANSIONS:
        current = pending.pop()
        match = _BRACES.search(current)
        if match is None:
            done.append(current)
            continue
        for choice in reversed(match.group(1).split(",")):
            pending.append(current[: match.start()] + choice + current[match.end() :])
    return done + pending


def is_hidden(name: str) -> bool:
    """Files Spark does not read: ``_SUCCESS``, ``.crc`` files, ``_temporary`` (not ``_col=1`` partitions)."""
    return name.startswith(".") or (name.startswith("_") and "=" not in name)


def tree_bytes(roots: list[Path], max_files: int = DEFAULT_MAX_FILES) -> int | None:
    """Bytes of the files under ``roots`` (hidden ones skipped); None if none of them exists.

    Counting stops after ``max_files`` files: the result is then a lower bound.
    """
    total = 0
    files = 0
    found = False
    stack: list[Path] = []
    for root in roots:
        try:
            if root.is_file():
                found = True
                total += root.stat().st_size
                files += 1
            elif root.is_dir():
                found = True
                stack.append(root)
        except OSError:
            continue
    while stack and files < max_files:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # unreadable or removed meanwhile: what it holds cannot be counted
        for entry in entries:
            if is_hidden(entry.name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file():
                    total += entry.stat().st_size
                    files += 1
            except OSError:
                continue
            if files >= max_files:
                break
    return total if found else None
