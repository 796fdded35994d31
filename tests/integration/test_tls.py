"""TLS on the gateway and the admin server, with the stock client as users run it.

One sparkfleet (one small cluster) with a self-signed pair and token auth serves every case. Each
client runs in its own process: gRPC reads GRPC_DEFAULT_SSL_ROOTS_FILE_PATH once, when it first
loads its default roots, so trusting the certificate or not is decided per process.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from sparkfleet.gateway.auth import hash_token
from sparkfleet.testing.process import FIXED_FLEET, SparkfleetProcess
from sparkfleet.tls import make_self_signed

TOKEN = "sft_tls_test_alice"
ADMIN_TOKEN = "sft_tls_test_ops"

# Runs in a fresh interpreter: connects, counts spark.range(10), prints {"count": n} or {"error": "..."}.
# A client expected to fail gets no retries: the stock client retries UNAVAILABLE for ~10 minutes.
_CLIENT = """
import json, sys
from pyspark.sql import SparkSession
from pyspark.sql.connect.client.retries import DefaultPolicy

url, retry = sys.argv[1], sys.argv[2] == "retry"
spark = SparkSession.builder.remote(url).create()
if not retry:
    spark._client.set_retry_policies([DefaultPolicy(max_retries=0)])
try:
    print(json.dumps({"count": spark.range(10).count()}))
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
"""


@pytest.fixture(scope="module")
def tls_fleet(tmp_path_factory):
    pair = make_self_signed(tmp_path_factory.mktemp("tls"))
    config = f"""
[pool]
clusters = ["S"]
catalog = "per-cluster"
warm_up = false

[tls]
cert_file = {json.dumps(str(pair.cert_file))}
key_file = {json.dumps(str(pair.key_file))}

[auth]
mode = "token"

[[auth.tokens]]
sha256 = "{hash_token(TOKEN)}"
user = "alice"
tenant = "t1"

[[auth.tokens]]
sha256 = "{hash_token(ADMIN_TOKEN)}"
user = "ops"
groups = ["admin"]
""" + FIXED_FLEET
    with SparkfleetProcess(config, name="sparkfleet-tls", ca_file=pair.cert_file, admin_token=ADMIN_TOKEN) as proc:
        yield proc, pair.cert_file


def _run_client(url: str, trusted_cert=None, expect_success: bool = True) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"}
    if trusted_cert is not None:
        env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(trusted_cert)
    done = subprocess.run([sys.executable, "-c", _CLIENT, url, "retry" if expect_success else "fail-fast"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_client_trusting_the_certificate_runs_queries_over_tls(tls_fleet):
    proc, cert = tls_fleet
    assert _run_client(f"sc://localhost:{proc.port}/;use_ssl=true;token={TOKEN}", cert) == {"count": 10}
    # The gateway saw the authenticated user, so the request really came through TLS to it.
    assert any(s["user_id"] == "alice" for s in proc.api("/api/sessions"))


def test_a_token_to_a_host_other_than_localhost_implies_tls(tls_fleet):
    proc, cert = tls_fleet
    # No use_ssl: the stock client picks TLS itself (host is not exactly "localhost"); the
    # certificate names 127.0.0.1.
    assert _run_client(f"sc://127.0.0.1:{proc.port}/;token={TOKEN}", cert) == {"count": 10}


@pytest.mark.parametrize("params", ["", f"/;token={TOKEN}"], ids=["plaintext", "localhost-token-without-use_ssl"])
def test_a_client_without_tls_is_refused(tls_fleet, params):
    proc, cert = tls_fleet
    # With "localhost" and a token but no use_ssl, the stock client uses gRPC local credentials:
    # plain TCP, which a TLS port closes like any plaintext client.
    answer = _run_client(f"sc://localhost:{proc.port}{params}", cert, expect_success=False)
    assert "UNAVAILABLE" in answer["error"] and "Socket closed" in answer["error"], answer


def test_a_client_not_trusting_the_certificate_fails(tls_fleet):
    proc, _cert = tls_fleet
    answer = _run_client(f"sc://localhost:{proc.port}/;use_ssl=true;token={TOKEN}", None, expect_success=False)
    assert "CERTIFICATE_VERIFY_FAILED" in answer["error"], answer


def test_the_admin_server_speaks_only_https(tls_fleet):
    proc, cert = tls_fleet
    assert proc.admin.startswith("https://localhost:")
    assert proc.api("/api/health")["status"] == "ok"
    assert proc.ready_clusters()  # an authenticated admin call, over TLS
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://localhost:{proc.admin_port}/api/health", timeout=10)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{proc.admin}/api/health", timeout=10, context=ssl.create_default_context())

