"""A client keeps its session across a restart of `sparkfleet up`: state comes back from the store."""

from __future__ import annotations

import signal

from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, spark_session


def test_a_session_continues_after_the_gateway_restarts(tmp_path):
    module = tmp_path / "restart_helpers.py"
    module.write_text("def shout(s):\n    return s.upper() + '!'\n")
    with SparkfleetProcess('[pool]\nclusters = ["S"]\n' + FIXED_FLEET, data_dir=tmp_path / "fleet", name="sparkfleet-restart") as proc:
        with spark_session(proc.url) as spark:
            spark.conf.set("spark.sql.shuffle.partitions", "3")
            spark.range(5).createOrReplaceTempView("kept")
            spark.udf.register("squared", lambda x: x * x, "long")
            spark.sql("DECLARE VARIABLE base INT DEFAULT 7")
            spark.addArtifacts(str(module), pyfile=True)

            def shout(s):
                import restart_helpers

                return restart_helpers.shout(s)

            spark.udf.register("shout", shout, "string")

            assert spark.sql("select sum(squared(id)) + base s from kept").collect()[0].s == 37
            server_side_id = spark._client._server_session_id
            old_clusters = {c["id"] for c in proc.ready_clusters()}

            proc.restart(signal.SIGTERM)

            # The client's next query retries until the gateway answers, then runs with its state.
            assert spark.sql("select sum(squared(id)) + base s from kept").collect()[0].s == 37
            assert spark.sql("select shout('hi') s").collect()[0].s == "HI!"
            assert spark.conf.get("spark.sql.shuffle.partitions") == "3"
            assert spark._client._server_session_id == server_side_id
            # ...on a cluster of the new run.
            latest = proc.api(f"/api/queries?session_id={spark.session_id}")[0]
            assert latest["state"] == "succeeded" and latest["cluster_id"] not in old_clusters
