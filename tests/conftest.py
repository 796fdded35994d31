"""Shared fixtures: one real sparkfleet (gateway + local pool) for the whole integration run."""

from __future__ import annotations

import os
import uuid

import pytest

from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, spark_session


@pytest.fixture(scope="session")
def fleet():
    """A real `sparkfleet up` with its default pool, shared by integration tests."""
    with SparkfleetProcess(name="sparkfleet-it") as proc:
        yield proc


# Two clusters, and every request of a session moves to the other one: proves that a session's
# state follows its queries to any cluster.
ALTERNATING_POOL = """
[pool]
clusters = ["S", "S"]
placement = "alternate"
""" + FIXED_FLEET


@pytest.fixture(scope="session")
def alternating_pool():
    with SparkfleetProcess(ALTERNATING_POOL, name="sparkfleet-alternate") as proc:
        yield proc


@pytest.fixture
def alternating_session(alternating_pool):
    with spark_session(alternating_pool.url) as session:
        yield session


@pytest.fixture
def spark(fleet):
    """A fresh stock PySpark Spark Connect session through the gateway."""
    with spark_session(fleet.url) as session:
        yield session


@pytest.fixture
def tag():
    return f"t{uuid.uuid4().hex[:8]}"


def pytest_configure(config):
    # The stock client reads this in some code paths; make sure a developer's shell doesn't leak in.
    os.environ.pop("SPARK_REMOTE", None)
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
