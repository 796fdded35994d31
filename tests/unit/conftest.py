"""Fixtures for the fast unit suite: a real store on a temporary file and a virtual clock."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings

from sparkfleet.clock import VirtualClock
from sparkfleet.store import Database

# Tests never assert on wall-clock time (CONVENTIONS rule 11); hypothesis' per-example deadline
# would, and flakes on a loaded machine.
settings.register_profile("sparkfleet-unit", deadline=None)
settings.load_profile("sparkfleet-unit")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "store.db").open()
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()
