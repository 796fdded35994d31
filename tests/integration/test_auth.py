"""Authentication and identity with the stock client: static tokens, JWTs, hijacks, the admin API.

One sparkfleet for the module, in JWT mode with static tokens for alice (tenant t1), bob (t2) and
an admin (ops), and JWTs from a test identity provider whose public key the gateway reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession
from pyspark.sql.connect.proto import base_pb2

from sparkfleet.gateway.auth import hash_token, new_token
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess, spark_session

ALICE, BOB, OPS = new_token(), new_token(), new_token()
ISSUER, AUDIENCE = "https://idp.test", "sparkfleet"
SERVICE = "/spark.connect.SparkConnectService/"


@pytest.fixture(scope="module")
def idp_key():  # type: ignore[no-untyped-def]
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, idp_key):  # type: ignore[no-untyped-def]
    keys = tmp_path_factory.mktemp("idp")
    public = keys / "idp.pub.pem"
    public.write_bytes(idp_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    tokens = "".join(
        f'[[auth.tokens]]\nsha256 = "{hash_token(t)}"\nuser = "{u}"\ntenant = "{tenant}"\ngroups = {json.dumps(g)}\n'
        for t, u, tenant, g in ((ALICE, "alice", "t1", []), (BOB, "bob", "t2", []), (OPS, "ops", "platform", ["admin"]))
    )
    config = f"""
[auth]
mode = "jwt"
{tokens}
[auth.jwt]
public_key_file = "{public}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_s = 5

[pool]
clusters = ["S"]
catalog = "per-cluster"
warm_up = false
""" + FIXED_FLEET
    with SparkfleetProcess(config, name="sparkfleet-auth", admin_token=OPS) as proc:
        yield proc


def url(proc: SparkfleetProcess, token: str | None, **params: str) -> str:
    extra = "".join(f";{k}={v}" for k, v in params.items())
    return f"sc://localhost:{proc.port}/" + (f";token={token}" if token else "") + extra


def idp_token(key, lifetime_s: float = 300, **claims) -> str:  # type: ignore[no-untyped-def]
    now = int(time.time())
    body = {"sub": "carol", "tenant": "t3", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + lifetime_s,
            **claims}
    return jwt.encode(body, key, algorithm="RS256")


def refusal(address: str) -> PySparkException:
    """The error the stock client raises for a first query on ``address`` (no retries)."""
    with pytest.raises(PySparkException) as raised:
        with spark_session(address) as session:
            session.range(3).count()
    return raised.value


def code_of(error: PySparkException) -> str:
    return error.getGrpcStatusCode().name  # type: ignore[attr-defined]


def admin_call(proc: SparkfleetProcess, path: str, token: str | None, body: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(f"{proc.admin}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


# ---- authentication ----------------------------------------------------------------------------


def test_static_tokens_and_jwts_let_the_stock_client_in(secured, idp_key) -> None:  # type: ignore[no-untyped-def]
    with spark_session(url(secured, ALICE)) as spark:
        assert spark.range(10).count() == 10
    with spark_session(url(secured, idp_token(idp_key))) as spark:
        assert spark.sql("select 1 + 1 as two").first().two == 2
    sessions = admin_call(secured, "/api/sessions", OPS)[1]
    assert {"alice", "carol"} <= {s["user_id"] for s in sessions}
    assert {s["tenant"] for s in sessions if s["user_id"] == "carol"} == {"t3"}


@pytest.mark.parametrize(
    ("credential", "reason", "says"),
    [
        (None, "missing", "requires a bearer token and the call carried none"),
        ("sft_wrong-token-0123456789", "unknown", "not one this gateway accepts"),
        ("expired", "expired", "the token has expired"),
        ("other-issuer", "issuer", "was not issued by"),
        ("forged", "signature", "signature does not verify"),
    ],
)
def test_bad_credentials_are_unauthenticated_and_counted(secured, idp_key, credential, reason, says) -> None:  # type: ignore[no-untyped-def]
    if credential == "expired":
        credential = idp_token(idp_key, lifetime_s=-60)  # expired a minute ago, beyond the 5 s leeway
    elif credential == "other-issuer":
        credential = idp_token(idp_key, iss="https://elsewhere.test")
    elif credential == "forged":
        credential = idp_token(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    before = secured.metric("sparkfleet_auth_failures_total", reason=reason, endpoint="grpc")
    error = refusal(url(secured, credential))
    assert code_of(error) == "UNAUTHENTICATED"
    assert says in str(error)
    if credential:
        assert credential not in str(error)  # never echoed
    assert secured.metric("sparkfleet_auth_failures_total", reason=reason, endpoint="grpc") > before


# ---- identity binding ----------------------------------------------------------------------------


def cluster_token(proc: SparkfleetProcess, cluster_id: str) -> str:
    return (proc.data_dir / "clusters" / cluster_id / "token").read_text().strip()


def test_the_declared_user_id_is_replaced_by_the_identity(secured, tag) -> None:  # type: ignore[no-untyped-def]
    """The client claims to be mallory; its session belongs to alice, on the gateway and on the cluster."""
    with spark_session(url(secured, ALICE, user_id="mallory")) as spark:
        spark.range(3).createOrReplaceTempView(f"v_{tag}")
        assert spark.table(f"v_{tag}").count() == 3
        session_id = spark.session_id
        rows = [s for s in admin_call(secured, "/api/sessions", OPS)[1] if s["session_id"] == session_id]
        assert [(r["user_id"], r["tenant"]) for r in rows] == [("alice", "t1")]
        # The cluster holds the session under alice: a direct look as alice finds the view, as mallory not.
        cluster = secured.ready_clusters()[0]
        direct = f"sc://localhost:{cluster['address'].split(':')[1]}/;token={cluster_token(secured, cluster['id'])}"
        as_alice = SparkSession.builder.remote(f"{direct};user_id=alice;session_id={session_id}").create()
        try:
            assert as_alice.table(f"v_{tag}").count() == 3
        finally:
            as_alice.client.close()  # not stop(): that would release alice's session on the cluster
        as_mallory = SparkSession.builder.remote(f"{direct};user_id=mallory;session_id={session_id}").create()
        try:
            with pytest.raises(PySparkException, match="TABLE_OR_VIEW_NOT_FOUND"):
                as_mallory.table(f"v_{tag}").count()
        finally:
            as_mallory.stop()


def test_another_identity_cannot_use_or_see_a_session(secured, tag) -> None:  # type: ignore[no-untyped-def]
    with spark_session(url(secured, ALICE)) as alice:
        alice.range(5).createOrReplaceTempView(f"secret_{tag}")
        with pytest.raises(PySparkException) as failed:
            alice.sql("select raise_error('alice-private-detail')").collect()
        assert "alice-private-detail" in str(failed.value)
        session_id = alice.session_id
        # Bob presents alice's session id: refused, whatever he asks, without learning anything.
        error = refusal(url(secured, BOB, session_id=session_id))
        assert code_of(error) == "PERMISSION_DENIED"
        assert "belongs to another user" in str(error) and f"secret_{tag}" not in str(error)
        with grpc.insecure_channel(f"localhost:{secured.port}") as channel:
            bob = (("authorization", f"Bearer {BOB}"),)
            for method, request in _requests_naming(session_id):
                with pytest.raises(grpc.RpcError) as raw:
                    _call(channel, method, request, bob)
                assert raw.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
        # In his own session bob sees none of alice's state.
        with spark_session(url(secured, BOB)) as own:
            with pytest.raises(PySparkException, match="TABLE_OR_VIEW_NOT_FOUND"):
                own.table(f"secret_{tag}").count()
        # Alice's session is untouched.
        assert alice.table(f"secret_{tag}").count() == 5


def _requests_naming(session_id: str) -> list[tuple[str, bytes]]:
    """One request of each kind that reads or steers a session's state, naming ``session_id``."""
    def fill(message):  # type: ignore[no-untyped-def]
        message.session_id = session_id
        message.user_context.user_id = "alice"  # a claim the gateway ignores
        return message.SerializeToString()

    config = base_pb2.ConfigRequest()
    config.operation.get_all.SetInParent()
    interrupt = base_pb2.InterruptRequest(interrupt_type=base_pb2.InterruptRequest.INTERRUPT_TYPE_ALL)
    return [
        ("Config", fill(config)),
        ("ArtifactStatus", fill(base_pb2.ArtifactStatusesRequest(names=["pyfiles/x.py"]))),
        ("Interrupt", fill(interrupt)),
        ("GetStatus", fill(base_pb2.GetStatusRequest())),
        ("FetchErrorDetails", fill(base_pb2.FetchErrorDetailsRequest(error_id=str(uuid.uuid4())))),
        ("ReleaseSession", fill(base_pb2.ReleaseSessionRequest())),
        ("CloneSession", fill(base_pb2.CloneSessionRequest())),
    ]


def _call(channel: grpc.Channel, method: str, request: bytes, metadata) -> bytes:  # type: ignore[no-untyped-def]
    return channel.unary_unary(SERVICE + method)(request, metadata=metadata, timeout=30)


# ---- trust boundary ----------------------------------------------------------------------------


def test_clusters_refuse_everyone_but_the_gateway(secured) -> None:  # type: ignore[no-untyped-def]
    cluster = secured.ready_clusters()[0]
    host, port = cluster["address"].split(":")
    assert host == "127.0.0.1"  # loopback only
    for token in (ALICE, OPS, None):
        error = refusal(f"sc://localhost:{port}/" + (f";token={token}" if token else ""))
        assert code_of(error) == "UNAUTHENTICATED"


def test_the_admin_api_shows_each_tenant_its_own_and_only_admins_change_things(secured, tag) -> None:  # type: ignore[no-untyped-def]
    with spark_session(url(secured, ALICE)) as alice, spark_session(url(secured, BOB)) as bob:
        alice.range(2).count()
        bob.range(3).count()
        alice_session, bob_session = alice.session_id, bob.session_id
    assert admin_call(secured, "/api/health", None)[0] == 200  # for load balancers
    status, body = admin_call(secured, "/api/sessions", None)
    assert status == 401 and body["error"] == "SPARKFLEET.UNAUTHENTICATED"
    assert admin_call(secured, "/api/sessions", "sft_wrong")[0] == 401
    # bob (tenant t2) sees his sessions and queries, not alice's.
    seen = {s["session_id"]: s for s in admin_call(secured, "/api/sessions", BOB)[1]}
    assert bob_session in seen and alice_session not in seen and {s["tenant"] for s in seen.values()} == {"t2"}
    queries = admin_call(secured, "/api/queries", BOB)[1]
    assert queries and {q["session_id"] for q in queries} <= set(seen)
    everything = {s["session_id"] for s in admin_call(secured, "/api/sessions", OPS)[1]}
    assert {alice_session, bob_session} <= everything
    # Changes and every tenant's counters are for admins.
    status, body = admin_call(secured, "/metrics", BOB)
    assert status == 403 and "for admins" in body["message"]
    runtime = admin_call(secured, "/api/runtimes", OPS)[1][0]["name"]
    status, body = admin_call(secured, f"/api/runtimes/{runtime}/stage", BOB, {"stage": "general"})
    assert status == 403 and body["error"] == "SPARKFLEET.PERMISSION_DENIED"
    status, body = admin_call(secured, f"/api/runtimes/{runtime}/stage", OPS, {"stage": "sideways"})
    assert status == 400 and "stage must be one of" in body["message"]
    status, body = admin_call(secured, f"/api/runtimes/{runtime}/stage", OPS, {"stage": "general", "reason": tag})
    assert status == 200 and body == {"name": runtime, "stage": "general"}
    after = admin_call(secured, "/api/runtimes", OPS)[1][0]
    assert tag in after["stage_reason"] and "ops" in after["stage_reason"]
    assert secured.metric("sparkfleet_auth_failures_total", endpoint="admin") >= 2


def test_no_auth_off_loopback_is_refused_before_anything_starts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sparkfleet", "up", "--host", "0.0.0.0", "--port", "0", "--admin-port", "0",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "with no authentication" in done.stderr and "allow_unauthenticated_remote" in done.stderr
    assert not (tmp_path / "clusters").exists()  # no JVM was started


def test_sparkfleet_status_takes_a_token(secured) -> None:  # type: ignore[no-untyped-def]
    command = [sys.executable, "-m", "sparkfleet", "status", "--admin-port", str(secured.admin_port)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--token" in refused.stderr
    shown = subprocess.run([*command, "--token", OPS], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert secured.ready_clusters()[0]["id"] in shown.stdout
