"""Artifacts a session uploads (py files, files, archives, cached local data) follow it to every
cluster: the gateway keeps each upload on disk and replays it before the session's next request
reaches a cluster that lacks it."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from sparkfleet.gateway.artifacts import ArtifactStore
from sparkfleet.testing.process import spark_session


def _clusters_that_served(proc, spark) -> set[str]:
    queries = proc.api(f"/api/queries?session_id={spark.session_id}&limit=1000")
    return {q["cluster_id"] for q in queries if q["state"] == "succeeded"}


def _repeat(spark, action, times: int = 4) -> list:  # type: ignore[no-untyped-def]
    """Run ``action`` several times; an extra request every other time shifts which cluster the
    next one lands on, whatever number of requests ``action`` makes."""
    results = []
    for i in range(times):
        results.append(action())
        if i % 2 == 0:
            spark.conf.get("spark.sql.shuffle.partitions")
    return results


def _session_files(proc, spark) -> list[Path]:
    directory = ArtifactStore(proc.data_dir / "artifacts").session_dir(spark._client._user_id or "", spark.session_id)
    return sorted(directory.glob("*.bin")) if directory.exists() else []


def test_a_py_file_follows_the_session(alternating_pool, alternating_session, tmp_path):
    spark = alternating_session
    module = f"sf_artifact_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("def scale(x):\n    return x * 7\n")
    spark.addArtifacts(str(tmp_path / f"{module}.py"), pyfile=True)

    @F.udf("long")
    def scaled(x):
        import importlib

        return importlib.import_module(module).scale(x)

    results = _repeat(spark, lambda: [r[0] for r in spark.range(4).select(scaled("id")).collect()])
    assert results == [[0, 7, 14, 21]] * 4
    assert len(_clusters_that_served(alternating_pool, spark)) == 2
    (first,) = _session_files(alternating_pool, spark)
    # Adding the same file again supersedes the first upload: its copy is deleted.
    spark.addArtifacts(str(tmp_path / f"{module}.py"), pyfile=True)
    (second,) = _session_files(alternating_pool, spark)
    assert second != first
    assert _repeat(spark, lambda: spark.range(2).select(scaled("id")).collect()[1][0], times=2) == [7, 7]


def test_a_file_follows_the_session(alternating_pool, alternating_session, tmp_path):
    spark = alternating_session
    name = f"sf_data_{uuid.uuid4().hex[:8]}.txt"
    (tmp_path / name).write_text("forty-two\n")
    spark.addArtifacts(str(tmp_path / name), file=True)

    @F.udf("string")
    def read_file(_):
        from pyspark import SparkFiles

        with open(SparkFiles.get(name)) as f:
            return f.read().strip()

    results = _repeat(spark, lambda: spark.range(1).select(read_file("id")).first()[0])
    assert results == ["forty-two"] * 4
    assert len(_clusters_that_served(alternating_pool, spark)) == 2


def test_an_archive_follows_the_session(alternating_pool, alternating_session, tmp_path):
    spark = alternating_session
    content = tmp_path / "content" / "inner"
    content.mkdir(parents=True)
    (content / "greeting.txt").write_text("hello from an archive\n")
    archive = shutil.make_archive(str(tmp_path / f"sf_archive_{uuid.uuid4().hex[:8]}"), "zip", tmp_path / "content")
    spark.addArtifacts(f"{archive}#unpacked", archive=True)

    @F.udf("string")
    def read_archive(_):
        import os

        from pyspark import SparkFiles

        with open(os.path.join(SparkFiles.getRootDirectory(), "unpacked", "inner", "greeting.txt")) as f:
            return f.read().strip()

    results = _repeat(spark, lambda: spark.range(1).select(read_archive("id")).first()[0])
    assert results == ["hello from an archive"] * 4
    assert len(_clusters_that_served(alternating_pool, spark)) == 2


def test_cached_local_data_follows_the_session(alternating_pool, alternating_session):
    spark = alternating_session
    threshold = int(spark.conf.get("spark.sql.session.localRelationCacheThreshold"))
    if threshold > 4 << 20:
        # Keep the test light; the conf itself follows the session like any other.
        threshold = 1 << 20
        spark.conf.set("spark.sql.session.localRelationCacheThreshold", str(threshold))
    rows = threshold // 16 + 10_000  # two int64 columns: comfortably over the threshold
    frame = pd.DataFrame({"id": np.arange(rows, dtype="int64"), "twice": np.arange(rows, dtype="int64") * 2})
    assert frame.memory_usage(index=False).sum() > threshold

    df = spark.createDataFrame(frame)
    plan = df._plan
    while type(plan).__name__ != "ChunkedCachedLocalRelation" and getattr(plan, "_child", None) is not None:
        plan = plan._child
    assert type(plan).__name__ == "ChunkedCachedLocalRelation"  # went up as cache/<sha256>
    assert _session_files(alternating_pool, spark), "the upload was not kept by the gateway"

    def total():  # type: ignore[no-untyped-def]
        row = df.agg(F.count("*").alias("n"), F.sum("twice").alias("s")).first()
        return row.n, row.s

    assert _repeat(spark, total) == [(rows, rows * (rows - 1))] * 4
    assert len(_clusters_that_served(alternating_pool, spark)) == 2


def test_every_cluster_answers_artifact_status_for_replayed_blobs(alternating_session):
    spark = alternating_session
    manager = spark._client._artifact_manager
    blob = uuid.uuid4().bytes * 3000
    digest = hashlib.sha256(blob).hexdigest()
    assert not manager.is_cached_artifact(digest)
    assert manager.cache_artifact(blob) == digest
    # Each status check lands on the other cluster; both must have the blob by then.
    assert [manager.is_cached_artifact(digest) for _ in range(4)] == [True] * 4
    assert manager.get_cached_artifacts([digest, "0" * 64]) == {digest}


def test_a_clone_keeps_its_artifacts_after_the_source_is_released(alternating_pool, tmp_path):
    module = f"sf_clone_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("OFFSET = 100\n")

    with spark_session(alternating_pool.url) as source:

        @F.udf("long")
        def shifted(x):
            import importlib

            return x + importlib.import_module(module).OFFSET

        source.addArtifacts(str(tmp_path / f"{module}.py"), pyfile=True)
        assert source.range(2).select(shifted("id")).first()[0] == 100
        clone = source.cloneSession()
        assert len(_session_files(alternating_pool, source)) == len(_session_files(alternating_pool, clone)) == 1
    try:
        # The source is released now, and with it its own artifact files.
        assert _session_files(alternating_pool, source) == []
        results = _repeat(clone, lambda: [r[0] for r in clone.range(3).select(shifted("id")).collect()])
        assert results == [[100, 101, 102]] * 4
        assert len(_clusters_that_served(alternating_pool, clone)) == 2
    finally:
        clone.stop()
    assert _session_files(alternating_pool, clone) == []


def test_a_lost_artifact_file_fails_the_replay_clearly(alternating_pool, alternating_session, tmp_path):
    spark = alternating_session
    (tmp_path / "lost.txt").write_text("gone\n")
    spark.addArtifacts(str(tmp_path / "lost.txt"), file=True)
    (kept,) = _session_files(alternating_pool, spark)
    kept.unlink()
    # The next request goes to the other cluster, which must first receive the file.
    with pytest.raises(Exception) as info:
        spark.range(1).collect()
    assert info.value.getCondition() == "SPARKFLEET.REPLAY_FAILED"
    assert "files/lost.txt" in str(info.value) and "missing" in str(info.value)
