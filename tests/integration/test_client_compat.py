"""A stock PySpark client works through the gateway as against a Spark Connect server."""

from __future__ import annotations

import ipaddress
import os
import shutil
import zipfile

import pandas as pd
import pyarrow as pa
import pytest
from pyspark.errors import AnalysisException, ArithmeticException, PySparkException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkfleet.testing.process import run_in_thread, wait_until, wait_until_running_on_cluster

SLEEP_SQL = "select reflect('java.lang.Thread', 'sleep', bigint({ms})) as slept"


def _query_records(fleet, session_id):
    return fleet.api(f"/api/queries?session_id={session_id}&limit=1000")


def test_dataframe_sql_pandas_and_arrow(spark):
    df = spark.range(0, 1000).withColumn("sq", F.col("id") * F.col("id"))
    assert df.count() == 1000
    assert df.agg(F.sum("sq")).collect()[0][0] == sum(i * i for i in range(1000))
    pdf = spark.sql("select 1 as a, 'x' as b union all select 2, 'y'").toPandas()
    assert isinstance(pdf, pd.DataFrame)
    assert pdf.sort_values("a").to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}
    table = spark.range(10).selectExpr("id", "cast(id as string) as s").toArrow()
    assert isinstance(table, pa.Table)
    assert table.column("id").to_pylist() == list(range(10))
    assert spark.version.startswith("4.3")


def test_large_result_is_streamed_not_buffered(fleet, spark):
    rows = 12_500_000  # two bigint columns: 200 MB of Arrow
    gateway_pid = fleet.proc.pid

    def peak_rss_mb() -> float:
        with open(f"/proc/{gateway_pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    before = peak_rss_mb()
    table = spark.range(0, rows).selectExpr("id", "id * 2 as b").toArrow()
    assert table.num_rows == rows
    assert table.nbytes >= 190 * 1024 * 1024
    assert pa.compute.sum(table.column("b")).as_py() == rows * (rows - 1)
    grown = peak_rss_mb() - before
    # The gateway forwards message by message: its peak memory grows far less than the result.
    assert grown < table.nbytes / (1024 * 1024) / 2, f"gateway peak RSS grew by {grown:.0f} MB"


def test_conf_get_set_unset(spark):
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    assert spark.conf.get("spark.sql.shuffle.partitions") == "7"
    spark.conf.unset("spark.sql.shuffle.partitions")
    assert spark.conf.get("spark.sql.shuffle.partitions") == "200"
    assert spark.conf.get("spark.sparkfleet.absent", "fallback") == "fallback"
    assert spark.conf.isModifiable("spark.sql.ansi.enabled")


def test_temp_views_dataframe_and_sql(spark):
    spark.range(5).createOrReplaceTempView("nums")
    spark.sql("create or replace temp view evens as select id from nums where id % 2 = 0")
    assert [r.id for r in spark.sql("select id from evens order by id").collect()] == [0, 2, 4]
    assert {t.name for t in spark.catalog.listTables()} >= {"nums", "evens"}
    spark.sql("drop view evens")
    with pytest.raises(AnalysisException):
        spark.sql("select * from evens").collect()


def test_python_udf_pandas_udf_and_udtf(spark):
    from pyspark.sql.functions import pandas_udf, udf, udtf

    @udf("long")
    def plus_one(x):
        return x + 1

    @pandas_udf("long")
    def times_two(s: pd.Series) -> pd.Series:
        return s * 2

    @udtf(returnType="n: int, square: int")
    class Squares:
        def eval(self, start: int, end: int):
            for n in range(start, end + 1):
                yield n, n * n

    rows = spark.range(3).select(plus_one("id").alias("a"), times_two("id").alias("b")).collect()
    assert [(r.a, r.b) for r in rows] == [(1, 0), (2, 2), (3, 4)]
    assert [tuple(r) for r in Squares(F.lit(1), F.lit(3)).collect()] == [(1, 1), (2, 4), (3, 9)]
    spark.udtf.register("squares", Squares)
    assert spark.sql("select sum(square) as s from squares(1, 4)").collect()[0].s == 30


def test_add_artifacts_pyfile_archive_and_file(spark, tmp_path, tag):
    from pyspark.sql.functions import udf

    module = tmp_path / f"helper_{tag}.py"
    module.write_text("def shout(s):\n    return s.upper() + '!'\n")
    spark.addArtifacts(str(module), pyfile=True)

    data_file = tmp_path / f"data_{tag}.txt"
    data_file.write_text("from-a-file")
    spark.addArtifacts(str(data_file), file=True)

    archive_src = tmp_path / "archive_src"
    archive_src.mkdir()
    (archive_src / "inner.txt").write_text("from-an-archive")
    archive = shutil.make_archive(str(tmp_path / f"bundle_{tag}"), "zip", archive_src)
    assert zipfile.is_zipfile(archive)
    spark.addArtifacts(f"{archive}#bundle_{tag}", archive=True)

    module_name, file_name, alias = module.stem, data_file.name, f"bundle_{tag}"

    @udf("string")
    def use_artifacts(x):
        import importlib

        from pyspark import SparkFiles

        helper = importlib.import_module(module_name)
        root = SparkFiles.getRootDirectory()
        with open(os.path.join(root, file_name)) as f:
            from_file = f.read()
        with open(os.path.join(root, alias, "inner.txt")) as f:
            from_archive = f.read()
        return f"{helper.shout(x)}|{from_file}|{from_archive}"

    out = spark.range(1).select(use_artifacts(F.lit("hi")).alias("o")).collect()[0].o
    assert out == "HI!|from-a-file|from-an-archive"


def test_large_local_data_goes_through_cached_artifacts(fleet, spark):
    before = fleet.text("/metrics")
    n = 200_000
    pdf = pd.DataFrame({"a": range(n), "b": [f"row-{i:08d}" for i in range(n)]})
    assert pdf.memory_usage(deep=True).sum() > 1024 * 1024
    df = spark.createDataFrame(pdf)
    assert df.count() == n
    assert df.agg(F.sum("a")).collect()[0][0] == n * (n - 1) // 2
    after = fleet.text("/metrics")
    assert _counter(after, "AddArtifacts") > _counter(before, "AddArtifacts")


def _counter(metrics_text: str, method: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("sparkfleet_rpc_total{") and f'method="{method}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_interrupt_all_tag_and_operation(fleet, spark, tag):

    # interruptTag (tags are thread-local in the client: tag the query's own thread)
    def tagged_query():
        spark.addTag(tag)
        return spark.sql(SLEEP_SQL.format(ms=60_000)).collect()

    thread, box = run_in_thread(tagged_query)
    wait_until_running_on_cluster(fleet, spark)
    interrupted = spark.interruptTag(tag)
    thread.join(60)
    assert len(interrupted) == 1
    assert "OPERATION_CANCELED" in str(box.get("error")) or "cancel" in str(box.get("error")).lower()

    # interruptOperation, with the operation id taken from the gateway's own records
    thread, box = run_in_thread(lambda: spark.sql(SLEEP_SQL.format(ms=60_000)).collect())
    op_id = wait_until_running_on_cluster(fleet, spark)[0]
    assert spark.interruptOperation(op_id) == [op_id]
    thread.join(60)
    assert "error" in box

    # interruptAll
    thread, box = run_in_thread(lambda: spark.sql(SLEEP_SQL.format(ms=60_000)).collect())
    wait_until_running_on_cluster(fleet, spark)
    assert len(spark.interruptAll()) >= 1
    thread.join(60)
    assert "error" in box
    assert not thread.is_alive()
    # The session is still usable afterwards.
    assert spark.range(3).count() == 3


def test_errors_keep_their_class_and_enriched_details(fleet, spark):
    before = _counter(fleet.text("/metrics"), "FetchErrorDetails")
    with pytest.raises(AnalysisException) as info:
        spark.sql("select no_such_column").collect()
    assert info.value.getCondition() == "UNRESOLVED_COLUMN.WITHOUT_SUGGESTION"
    assert info.value.getSqlState() == "42703"
    assert info.value.getMessageParameters()["objectName"] == "`no_such_column`"

    spark.conf.set("spark.sql.ansi.enabled", "true")
    with pytest.raises(ArithmeticException) as info:
        spark.sql("select 1 / 0 as boom").collect()
    assert info.value.getCondition() == "DIVIDE_BY_ZERO"
    contexts = info.value.getQueryContext()
    assert contexts and contexts[0].fragment() == "1 / 0"
    # Enriched details came from the cluster that raised the error, through FetchErrorDetails.
    assert _counter(fleet.text("/metrics"), "FetchErrorDetails") > before


def test_session_stop_and_new_session(fleet):
    first = SparkSession.builder.remote(fleet.url).create()
    first.range(1).count()
    session_id = first.session_id
    first.stop()
    sessions = {s["session_id"]: s for s in fleet.api("/api/sessions")}
    assert sessions[session_id]["state"] == "closed"
    second = SparkSession.builder.remote(fleet.url).create()
    try:
        assert second.session_id != session_id
        assert second.range(4).count() == 4
    finally:
        second.stop()


def test_clone_session_copies_state_and_is_independent(spark):
    spark.conf.set("spark.sql.shuffle.partitions", "11")
    spark.range(3).createOrReplaceTempView("cloned_view")
    clone = spark.cloneSession()
    try:
        assert clone.session_id != spark.session_id
        assert clone.conf.get("spark.sql.shuffle.partitions") == "11"
        assert clone.sql("select count(*) c from cloned_view").collect()[0].c == 3
        clone.conf.set("spark.sql.shuffle.partitions", "13")
        assert spark.conf.get("spark.sql.shuffle.partitions") == "11"
        assert clone.conf.get("spark.sql.shuffle.partitions") == "13"
    finally:
        clone.stop()


def test_one_stable_server_side_session_id(fleet, spark):
    spark.range(1).count()
    observed = spark._client._server_session_id
    assert observed
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    spark.range(10).toPandas()
    spark.sql("select 1").collect()
    assert spark._client._server_session_id == observed
    record = next(s for s in fleet.api("/api/sessions") if s["session_id"] == spark.session_id)
    assert record["server_side_session_id"] == observed


def test_deep_plan_of_400_with_columns(spark):
    df = spark.range(3)
    for i in range(400):
        df = df.withColumn(f"c{i}", F.col("id") + i)
    rows = df.select("id", "c399").orderBy("id").collect()
    assert [(r.id, r.c399) for r in rows] == [(0, 399), (1, 400), (2, 401)]


def test_zstd_compressed_plan(fleet):
    session = (
        SparkSession.builder.remote(fleet.url)
        .config("spark.connect.session.planCompression.threshold", "1024")
        .create()
    )
    try:
        payload = "sparkfleet" * 2000
        row = session.range(1).select(F.lit(payload).alias("s"), F.length(F.lit(payload)).alias("n")).collect()[0]
        assert row.s == payload and row.n == len(payload)
        kinds = {q["kind"] for q in _query_records(fleet, session.session_id)}
        assert "relation+zstd" in kinds
    finally:
        session.stop()


def test_every_query_is_recorded(fleet, spark):
    spark.range(7).count()
    with pytest.raises(AnalysisException):
        spark.sql("select missing_col").collect()
    records = _query_records(fleet, spark.session_id)
    succeeded = [q for q in records if q["state"] == "succeeded"]
    failed = [q for q in records if q["state"] == "failed"]
    assert succeeded and failed
    cluster_ids = {c["id"] for c in fleet.api("/api/clusters?history=0")}
    for q in succeeded + failed:
        assert q["cluster_id"] in cluster_ids
        assert q["finished_at"] >= q["submitted_at"]
        assert q["duration_ms"] >= 0
        assert q["placement_reason"]
        assert q["attempts"] and q["attempts"][-1]["cluster_id"] == q["cluster_id"]
    assert failed[0]["error_class"] == "UNRESOLVED_COLUMN.WITH_SUGGESTION" or failed[0]["error_class"].startswith(
        "UNRESOLVED_COLUMN"
    )


def test_metrics_expose_rpcs_latency_streams_and_clusters(fleet, spark):
    spark.range(1).count()
    # The client is done at result_complete; the gateway's side of the stream closes just after.
    idle = 'sparkfleet_active_streams{method="ExecutePlan"} 0.0'

    def idle_metrics() -> str | None:
        text = fleet.text("/metrics")
        return text if idle in text else None

    text = wait_until(idle_metrics, 10, what="the gateway to close the stream")
    assert _counter(text, "ExecutePlan") >= 1
    assert 'sparkfleet_rpc_duration_seconds_bucket{le="0.005",method="ExecutePlan"}' in text
    ready = [line for line in text.splitlines() if line.startswith("sparkfleet_clusters{") and 'state="ready"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in ready) == len(fleet.ready_clusters())


def test_health_and_clusters_api(fleet):
    health = fleet.api("/api/health")
    assert health["status"] == "ok" and health["clusters_ready"] >= 1
    # The pool's shared catalog runs beside the clusters.
    assert health["catalog"]["running"] and health["catalog"]["uri"].startswith("thrift://127.0.0.1:")
    for cluster in fleet.api("/api/clusters"):
        assert {"id", "size", "runtime", "state", "address", "pid", "cores", "memory_mb", "running_queries"} <= set(
            cluster
        )
        assert cluster["history"] and cluster["history"][0]["state"] == "starting"


def test_cluster_is_a_private_loopback_server_with_a_token(fleet):
    import grpc

    cluster = fleet.ready_clusters()[0]
    assert cluster["address"].startswith("127.0.0.1:")
    with grpc.insecure_channel(cluster["address"]) as channel:
        config = channel.unary_unary("/spark.connect.SparkConnectService/Config")
        from pyspark.sql.connect.proto import base_pb2

        request = base_pb2.ConfigRequest(session_id="00112233-4455-6677-8899-aabbccddeeff")
        request.operation.get_all.SetInParent()
        with pytest.raises(grpc.RpcError) as info:
            config(request.SerializeToString(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The token is nowhere on the command line.
    with open(f"/proc/{cluster['pid']}/cmdline", "rb") as f:
        cmdline = f.read().decode()
    assert "authenticate.token" not in cmdline
    # Task slots: twice its cores up to the machine's CPUs, to run on CPUs the pool leaves idle.
    cores = cluster["cores"]
    slots = max(cores, min(len(os.sched_getaffinity(0)), 2 * cores))
    assert f"local[{slots}]" in cmdline and f"{cluster['memory_mb']}m" in cmdline
    allowed = os.sched_getaffinity(cluster["pid"])
    assert allowed == {int(c) for c in cluster["cpus"].split(",")}


def _tcp_listeners(pid: int) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, read from /proc (no ``ss`` needed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    listeners = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A" or inode not in inodes:  # 0A: LISTEN
                    continue
                address, port = local.split(":")
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
                listeners.append((ip, int(port, 16)))
    return listeners


def _is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def test_catalog_and_clusters_listen_on_loopback_only(fleet):
    # The shared catalog's metastore: Hive's own entry point would listen on every interface.
    catalog = fleet.api("/api/health")["catalog"]
    assert catalog["loopback_only"] is True
    listeners = _tcp_listeners(catalog["pid"])
    assert int(catalog["uri"].rsplit(":", 1)[1]) in {port for _, port in listeners}
    assert all(_is_loopback(ip) for ip, _ in listeners), f"metastore listens on {listeners}"
    # Each cluster JVM: Spark Connect, and also the Spark UI, block manager and driver RPC ports.
    checked = 0
    for cluster in fleet.ready_clusters():
        try:
            listeners = _tcp_listeners(cluster["pid"])
        except FileNotFoundError:  # stopped since it was listed
            continue
        checked += 1
        assert int(cluster["address"].rsplit(":", 1)[1]) in {port for _, port in listeners}
        assert all(_is_loopback(ip) for ip, _ in listeners), f"cluster {cluster['id']} listens on {listeners}"
    assert checked


def test_runtime_error_passes_through_with_its_class(spark):
    with pytest.raises(PySparkException) as info:
        spark.sql("select raise_error('custom failure')").collect()
    assert info.value.getCondition() == "USER_RAISED_EXCEPTION"
    assert "custom failure" in str(info.value)
    assert spark.range(2).count() == 2
