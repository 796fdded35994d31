"""Tenant quotas with the stock client and real clusters, callers told apart by their tokens:
max_concurrent_queries makes a query wait (visibly, naming the quota) and max_queued refuses one
with RESOURCE_EXHAUSTED; a request rate over the tenant's bucket is refused with a retry delay the
stock client honours; a tenant capped at S never runs on M; and a flooding tenant's queue does
not hold back a quiet tenant's queries."""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest
from pyspark.errors import PySparkException
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.gateway.auth import hash_token
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, run_in_thread, spark_session, wait_until

pytestmark = pytest.mark.integration

TOKENS = {tenant: f"sft_test_{tenant}_{uuid.uuid4().hex}" for tenant in
          ("limited", "small", "chatty", "flood", "quiet", "ops")}


def _token_entry(tenant: str) -> str:
    groups = '["admin"]' if tenant == "ops" else "[]"
    return (f'[[auth.tokens]]\nsha256 = "{hash_token(TOKENS[tenant])}"\nuser = "{tenant}-user"\n'
            f'tenant = "{tenant}"\ngroups = {groups}\n')


# S and M, one core each (the machine has two). One interactive query per core, so that two
# queries fill the fleet and the queue's order decides who goes next.
CONFIG = """
[sizes.S]
cores = 1
memory_mb = 1024

[sizes.M]
cores = 1
memory_mb = 1536

[pool]
clusters = ["S", "M"]

[placement]
interactive_per_core = 1

[auth]
mode = "token"
""" + "\n".join(_token_entry(t) for t in TOKENS) + """
[tenants.limited]
max_concurrent_queries = 1
max_queued = 1

[tenants.small]
max_size_class = "S"

[tenants.chatty]
requests_per_s = 2
burst = 2
""" + FIXED_FLEET


@pytest.fixture(scope="module")
def fleet():
    with SparkfleetProcess(CONFIG, name="sparkfleet-tenants", admin_token=TOKENS["ops"]) as proc:
        yield proc


def _url(fleet: SparkfleetProcess, tenant: str) -> str:
    return f"{fleet.url}/;token={TOKENS[tenant]}"


def _refusals(fleet: SparkfleetProcess, tenant: str, quota: str) -> float:
    return fleet.metric("sparkfleet_quota_refusals_total", tenant=tenant, quota=quota)


def _sleeping(spark, ms: int):  # type: ignore[no-untyped-def]
    """A query that sleeps ``ms`` in the JVM: it holds its slot however fast the machine is."""
    return spark.range(1).selectExpr(f"reflect('java.lang.Thread', 'sleep', cast({ms} as bigint)) as slept", "id")


def _records(fleet: SparkfleetProcess, spark) -> list[dict]:  # type: ignore[no-untyped-def]
    return [q for q in fleet.api(f"/api/queries?session_id={spark.session_id}&limit=200") if q["kind"] == "relation"]


def _queued(fleet: SparkfleetProcess, tenant: str) -> list[dict]:
    return [q for q in fleet.api("/api/queue") if q["tenant"] == tenant]


def _cluster_ids(fleet: SparkfleetProcess) -> dict[str, str]:
    return {c["size"]: c["id"] for c in fleet.api("/api/clusters?history=0") if c["state"] == "ready"}


def test_max_concurrent_queries_queues_and_max_queued_refuses_naming_the_quota(fleet):
    with spark_session(_url(fleet, "limited")) as first, spark_session(_url(fleet, "limited")) as second, \
            spark_session(_url(fleet, "limited")) as third:
        running, running_box = run_in_thread(lambda: _sleeping(first, 4000).collect())
        wait_until(lambda: any(q["state"] == "running" for q in _records(fleet, first)), 60,
                   what="the tenant's first query to run")
        waiting, waiting_box = run_in_thread(lambda: _sleeping(second, 500).collect())
        [entry] = wait_until(lambda: _queued(fleet, "limited"), 60, what="the second query to wait in the queue")
        assert ("tenant limited is at its max_concurrent_queries (1, tenants.limited.max_concurrent_queries)"
                in entry["reason"])
        # A free cluster does not help it: the autoscaler-free fleet has one, and it still waits.
        assert any(not c["work"] for c in fleet.api("/api/clusters?history=0") if c["state"] == "ready")

        # One query waiting is the tenant's max_queued: a third is refused at once, saying why.
        before = _refusals(fleet, "limited", "max_queued")
        with pytest.raises(PySparkException) as raised:
            third.range(3).selectExpr("sum(id)").collect()
        error = raised.value
        assert error.getCondition() == "SPARKFLEET.QUOTA_EXCEEDED"
        assert "tenants.limited.max_queued" in str(error) and "was not queued" in str(error)
        assert _refusals(fleet, "limited", "max_queued") == before + 1

        running.join(120)
        waiting.join(120)
        assert running_box.get("result") and waiting_box.get("result"), (running_box, waiting_box)
        [record] = _records(fleet, second)
        assert record["state"] == "succeeded"


def test_a_tenant_capped_at_s_never_runs_on_m(fleet):
    ids = _cluster_ids(fleet)
    with spark_session(_url(fleet, "small")) as one, spark_session(_url(fleet, "small")) as two:
        long_one, long_box = run_in_thread(lambda: _sleeping(one, 3000).collect())
        wait_until(lambda: any(q["state"] == "running" for q in _records(fleet, one)), 60,
                   what="the first query to run")
        # The M cluster is free, but the tenant may not use it: the second query waits for S.
        other, other_box = run_in_thread(lambda: _sleeping(two, 200).collect())
        [entry] = wait_until(lambda: _queued(fleet, "small"), 60, what="the second query to wait")
        assert f"{ids['M']} is larger (M) than tenant small may use (S, tenants.small.max_size_class)" in entry["reason"]
        long_one.join(120)
        other.join(120)
        assert long_box.get("result") and other_box.get("result"), (long_box, other_box)
        records = _records(fleet, one) + _records(fleet, two)
        assert len(records) == 2 and {r["cluster_id"] for r in records} == {ids["S"]}
        assert all(a["cluster_id"] == ids["S"] for r in records for a in r["attempts"])


def test_a_request_rate_over_the_bucket_is_refused_with_a_retry_delay_the_client_honours(fleet):
    # Raw calls at once show what the client is told. At 2/s with bursts of 2, two go at once, the
    # next two wait for their tokens (0.5 s, 1 s: up to 1 s is waited for) and the rest are refused:
    # RESOURCE_EXHAUSTED naming the quota, with RetryInfo.
    session_id = str(uuid.uuid4())
    metadata = (("authorization", f"Bearer {TOKENS['chatty']}"),)
    before = _refusals(fleet, "chatty", "requests_per_s")
    with grpc.insecure_channel(f"localhost:{fleet.port}") as channel:
        config = channel.unary_unary("/spark.connect.SparkConnectService/Config")
        request = base_pb2.ConfigRequest(session_id=session_id)
        request.operation.get_all.SetInParent()
        calls = [config.future(request.SerializeToString(), metadata=metadata, timeout=30) for _ in range(8)]
        errors = [call.exception() for call in calls if call.exception() is not None]
    assert 2 <= len(errors) <= 6, "of eight calls at once, the burst and the waits let two to four through"
    error = errors[0]
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tenant chatty is over its request rate (2/s with bursts of 2, tenants.chatty.requests_per_s)" in error.details()
    trailer = dict(error.trailing_metadata())["grpc-status-details-bin"]
    assert b"google.rpc.RetryInfo" in trailer
    assert _refusals(fleet, "chatty", "requests_per_s") >= before + len(errors)

    # The stock client is slowed to the rate, and retries after any refusal on its own: every query succeeds.
    with spark_session(_url(fleet, "chatty")) as spark:
        sums = [spark.range(n).selectExpr("sum(id)").collect()[0][0] for n in range(2, 6)]
    assert sums == [n * (n - 1) // 2 for n in range(2, 6)]


def test_a_quiet_tenants_queries_go_ahead_of_a_flooding_tenants_queue(fleet):
    stop = threading.Event()
    flood_errors: list[BaseException] = []

    def flood_client(spark) -> None:  # type: ignore[no-untyped-def]
        while not stop.is_set():
            try:
                _sleeping(spark, 5000).collect()
            except BaseException as exc:  # noqa: BLE001 - reported below
                flood_errors.append(exc)
                return

    with spark_session(_url(fleet, "flood")) as f1, spark_session(_url(fleet, "flood")) as f2, \
            spark_session(_url(fleet, "flood")) as f3, spark_session(_url(fleet, "flood")) as f4, \
            spark_session(_url(fleet, "quiet")) as quiet:
        floods = [threading.Thread(target=flood_client, args=(s,), daemon=True) for s in (f1, f2, f3, f4)]
        for thread in floods:
            thread.start()
        try:
            # Both slots busy with the flood, and its queue at least two deep.
            wait_until(lambda: len(_queued(fleet, "flood")) >= 2, 120, what="the flooding tenant's queue")
            for _ in range(2):
                # Every snapshot of the queue while the quiet tenant's query waits in it.
                seen: list[list[dict]] = []
                query, box = run_in_thread(lambda: _sleeping(quiet, 300).collect())

                def quiet_done() -> bool:
                    queue = fleet.api("/api/queue")
                    if any(q["tenant"] == "quiet" for q in queue):
                        seen.append(queue)
                    return not query.is_alive()

                wait_until(quiet_done, 120, interval_s=0.05, what="the quiet tenant's query to finish")
                assert box.get("result"), box
                # The flood held both slots, so it waited; the flood's queue is still there after it.
                assert seen, "the quiet query should have waited for a slot the flood held"
                assert _queued(fleet, "flood"), "the flood's queue should outlast the quiet query"
                submitted = {r["id"]: r["submitted_at"] for s in (f1, f2, f3, f4, quiet) for r in _records(fleet, s)}
                for queue in seen:
                    # First in line, ahead of flood queries that were queued before it came.
                    first, *rest = queue
                    assert first["tenant"] == "quiet", queue
                    older = [q for q in rest if q["tenant"] == "flood"
                             and submitted[q["query_id"]] < submitted[first["query_id"]]]
                    assert older, queue
        finally:
            stop.set()
            for thread in floods:
                thread.join(120)
    assert not flood_errors, flood_errors
