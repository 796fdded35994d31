"""A session's requests alternate between two clusters; its state follows them (journal replay)."""

from __future__ import annotations

import pytest
from pyspark.errors import AnalysisException


def _clusters_used(proc, spark) -> set[str]:
    return {q["cluster_id"] for q in proc.api(f"/api/queries?session_id={spark.session_id}&limit=1000")}


def test_state_follows_a_session_across_clusters(alternating_pool, alternating_session):
    spark = alternating_session
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    spark.range(6).createOrReplaceTempView("nums")
    spark.sql("create or replace temp view evens as select id from nums where id % 2 = 0")
    spark.udf.register("plus_one", lambda x: x + 1, "long")
    for _ in range(4):
        assert spark.conf.get("spark.sql.shuffle.partitions") == "7"
        rows = spark.sql("select plus_one(id) as p from evens order by id").collect()
        assert [r.p for r in rows] == [1, 3, 5]
    assert len(_clusters_used(alternating_pool, spark)) == 2


def test_shared_catalog_describes_default_like_a_spark_server(alternating_session):
    # Hive names it "Default Hive database"; a Spark Connect server's own catalog does not.
    spark = alternating_session
    for _ in range(2):
        assert spark.catalog.getDatabase("default").description == "default database"


def test_drops_and_unsets_reach_every_cluster(alternating_pool, alternating_session):
    spark = alternating_session
    spark.conf.set("spark.sql.shuffle.partitions", "9")
    spark.range(3).createOrReplaceTempView("short_lived")
    for _ in range(2):  # both clusters now hold the view and the conf
        assert spark.sql("select count(*) c from short_lived").collect()[0].c == 3
        assert spark.conf.get("spark.sql.shuffle.partitions") == "9"
    spark.sql("drop view short_lived")
    spark.conf.unset("spark.sql.shuffle.partitions")
    for _ in range(3):
        with pytest.raises(AnalysisException):
            spark.sql("select * from short_lived").collect()
        assert spark.conf.get("spark.sql.shuffle.partitions") == "200"


def test_sql_set_and_variables_follow_the_session(alternating_session):
    spark = alternating_session
    spark.sql("SET spark.sql.ansi.enabled = false")
    spark.sql("DECLARE VARIABLE answer INT DEFAULT 40")
    spark.sql("SET VAR answer = answer + 2")
    for _ in range(3):
        assert spark.sql("select answer").collect()[0][0] == 42
        assert spark.sql("select 1/0 as r").collect()[0].r is None  # ANSI off everywhere


def test_cloned_session_has_the_state_on_every_cluster(alternating_pool, alternating_session):
    spark = alternating_session
    spark.range(4).createOrReplaceTempView("cloned")
    clone = spark.cloneSession()
    try:
        for _ in range(3):
            assert clone.sql("select count(*) c from cloned").collect()[0].c == 4
    finally:
        clone.stop()


def _records(proc, spark) -> list[dict]:
    return proc.api(f"/api/queries?session_id={spark.session_id}&limit=1000")


def test_a_checkpointed_dataframe_stays_on_its_cluster(alternating_pool, alternating_session):
    spark = alternating_session
    checkpointed = spark.range(100).selectExpr("id", "id % 7 as k").localCheckpoint()
    holder = _records(alternating_pool, spark)[0]["cluster_id"]  # where the checkpoint ran
    for _ in range(3):
        assert checkpointed.count() == 100
        assert checkpointed.groupBy("k").count().count() == 7
        assert checkpointed.columns == ["id", "k"]
        # Queries that do not read it still move from cluster to cluster.
        assert spark.range(3).count() == 3
    pinned = [q for q in _records(alternating_pool, spark) if "checkpointed DataFrame" in (q["placement_reason"] or "")]
    assert len(pinned) == 6
    assert {q["cluster_id"] for q in pinned} == {holder}
    assert all(q["placement_reason"].startswith(f"pinned to {holder}") for q in pinned)
    assert len({q["cluster_id"] for q in _records(alternating_pool, spark)}) == 2


def test_persisted_data_keeps_the_session_where_it_is_cached(alternating_pool, alternating_session):
    spark = alternating_session
    cached = spark.range(50).selectExpr("id * 2 as doubled")
    cached.persist()
    levels = set()
    for _ in range(3):
        assert cached.agg({"doubled": "sum"}).collect()[0][0] == 2450
        levels.add(str(cached.storageLevel))
    # Every cluster would answer NONE but the one holding the cache: the session stays there.
    assert len(levels) == 1 and cached.is_cached
    latest = _records(alternating_pool, spark)[:3]
    assert len({q["cluster_id"] for q in latest}) == 1
    assert all("persisted (cached) DataFrame" in q["placement_reason"] for q in latest)


def test_catalog_calls_change_the_session_on_every_cluster(alternating_pool, alternating_session, tag):
    spark = alternating_session
    database = f"db_{tag}"
    spark.sql(f"CREATE DATABASE {database}")
    try:
        spark.range(3).write.saveAsTable(f"{database}.three")
        spark.catalog.setCurrentDatabase(database)
        spark.range(2).createOrReplaceTempView("gone_soon")
        for _ in range(3):  # the current database and the view reached both clusters
            assert spark.catalog.currentDatabase() == database
            assert spark.table("three").count() == 3
            assert spark.table("gone_soon").count() == 2
        assert spark.catalog.dropTempView("gone_soon")
        for _ in range(3):
            assert not spark.catalog.tableExists("gone_soon")
        spark.catalog.setCurrentDatabase("default")
        for _ in range(2):
            assert spark.catalog.currentDatabase() == "default"
        assert len(_clusters_used(alternating_pool, spark)) == 2
    finally:
        spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")


def test_a_cached_table_keeps_the_session_where_it_is_cached(alternating_pool, alternating_session, tag):
    spark = alternating_session
    table = f"cached_{tag}"
    spark.range(10).write.saveAsTable(table)
    try:
        spark.catalog.cacheTable(table)
        holder = _records(alternating_pool, spark)[0]["cluster_id"]
        for _ in range(3):
            assert spark.catalog.isCached(table)  # only the cluster holding the cache says so
        latest = _records(alternating_pool, spark)[:3]
        assert {q["cluster_id"] for q in latest} == {holder}
        assert all("cached table" in q["placement_reason"] for q in latest)
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")


def test_refreshing_a_cached_table_lists_its_files_again(alternating_pool, alternating_session, tag, tmp_path):
    # pyspark's Catalog.refreshTable doctest. Clusters keep no table relation cache (shared
    # catalog), so Spark re-caches the table with the file listing taken when it was cached; the
    # gateway refreshes the table's path after REFRESH TABLE, as a single Spark server would.
    spark = alternating_session
    table = f"refreshed_{tag}"
    location = tmp_path / "data"
    location.mkdir()
    try:
        spark.sql(f"CREATE TABLE {table} (col STRING) USING TEXT LOCATION '{location}'")
        spark.sql(f"INSERT INTO {table} SELECT 'abc'")
        spark.catalog.cacheTable(table)
        assert spark.table(table).count() == 1
        for data_file in location.iterdir():
            data_file.unlink()
        assert spark.table(table).count() == 1  # from the cache
        spark.catalog.refreshTable(table)
        assert spark.table(table).count() == 0
        spark.sql(f"INSERT INTO {table} SELECT 'def'")
        spark.sql(f"REFRESH TABLE {table}")
        assert spark.table(table).count() == 1
        holder = _records(alternating_pool, spark)[0]["cluster_id"]
        assert all(q["cluster_id"] == holder for q in _records(alternating_pool, spark)[:6])
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")
