"""gateway/auth.py: static tokens stored hashed, JWTs checked with PyJWT, failures that leak nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from sparkfleet.clock import VirtualClock
from sparkfleet.config import load_settings
from sparkfleet.config_security import AuthSettings, JwtSettings, StaticToken
from sparkfleet.errors import ConfigError, Unauthenticated
from sparkfleet.gateway.auth import Authenticator, Identity, hash_token, new_token, refuse_open_remote_access

NOW = 1_900_000_000.0


def bearer(token: str) -> list[tuple[str, str]]:
    return [("user-agent", "test"), ("authorization", f"Bearer {token}")]


def token_auth(*entries: tuple[str, str, str, list[str]], failures: list | None = None) -> Authenticator:  # type: ignore[type-arg]
    settings = AuthSettings(mode="token", tokens=[
        StaticToken(sha256=hash_token(t), user=u, tenant=tenant, groups=g) for t, u, tenant, g in entries
    ])
    return Authenticator(settings, VirtualClock(NOW), on_failure=lambda *a: failures.append(a) if failures is not None else None)


def test_static_tokens_map_to_their_identity() -> None:
    alice, ops = new_token(), new_token()
    auth = token_auth((alice, "alice", "analytics", []), (ops, "ops", "platform", ["admin"]))
    assert auth.authenticate(bearer(alice)) == Identity("alice", "analytics", frozenset(), False, "token")
    assert auth.authenticate(bearer(ops)) == Identity("ops", "platform", frozenset({"admin"}), True, "token")
    # The client's declared user id counts for nothing once auth is on.
    assert auth.authenticate(bearer(alice), declared_user="ops").user == "alice"


@pytest.mark.parametrize(
    ("metadata", "reason", "says"),
    [
        ([], "missing", "carried none"),
        ([("authorization", "Basic YWxpY2U6c2VjcmV0")], "malformed", "not 'Bearer <token>'"),
        ([("authorization", "Bearer")], "malformed", "not 'Bearer <token>'"),
        (bearer("sft_not-a-token-we-issued"), "unknown", "not one this gateway accepts"),
        (bearer("x" * 20_000), "malformed", "longer than"),
    ],
)
def test_failures_say_what_is_wrong_and_are_counted(metadata, reason: str, says: str) -> None:  # type: ignore[no-untyped-def]
    failures: list = []  # type: ignore[type-arg]
    auth = token_auth((new_token(), "alice", "t", []), failures=failures)
    with pytest.raises(Unauthenticated, match=says) as raised:
        auth.authenticate(metadata, endpoint="admin")
    assert raised.value.reason == reason and raised.value.grpc_code.name == "UNAUTHENTICATED"
    assert failures == [(reason, "admin")]
    assert "sft_not-a-token" not in raised.value.message and "YWxpY2U6" not in raised.value.message


@given(st.text(min_size=1, max_size=200))
def test_no_token_text_but_the_right_one_is_accepted(guess: str) -> None:
    real = "sft_the-one-real-token-0123456789"
    auth = token_auth((real, "alice", "t", []))
    if guess.strip() == real:
        assert auth.authenticate(bearer(guess)).user == "alice"
    else:
        with pytest.raises(Unauthenticated) as raised:
            auth.authenticate(bearer(guess))
        assert real not in raised.value.message


def test_without_auth_the_declared_user_is_trusted_and_may_administer() -> None:
    auth = Authenticator(AuthSettings(), VirtualClock(NOW))
    assert not auth.enabled
    assert auth.authenticate([], declared_user="bob") == Identity("bob", "default", frozenset(), True, "none")


# ---- JWT --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key():  # type: ignore[no-untyped-def]
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():  # type: ignore[no-untyped-def]
    return ec.generate_private_key(ec.SECP256R1())


def pem_file(tmp_path: Path, private_key) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "idp.pub.pem"
    path.write_bytes(private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def jwt_auth(tmp_path: Path, private_key, clock: VirtualClock, **overrides) -> Authenticator:  # type: ignore[no-untyped-def]
    settings = {"public_key_file": pem_file(tmp_path, private_key), "issuer": "https://idp.example",
                "audience": "sparkfleet", **overrides}
    return Authenticator(AuthSettings(mode="jwt", jwt=JwtSettings(**settings)), clock)


def claims(**extra):  # type: ignore[no-untyped-def]
    return {"sub": "carol", "tenant": "science", "groups": ["analysts"], "iss": "https://idp.example",
            "aud": "sparkfleet", "iat": int(NOW) - 10, "exp": int(NOW) + 300, **extra}


def test_a_valid_rs256_jwt_gives_its_identity(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    auth = jwt_auth(tmp_path, rsa_key, VirtualClock(NOW))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert auth.authenticate(bearer(token)) == Identity("carol", "science", frozenset({"analysts"}), False, "jwt")
    admin = jwt.encode(claims(sub="dora", groups=["admin"]), rsa_key, algorithm="RS256")
    assert auth.authenticate(bearer(admin)).admin


def test_expiry_is_checked_against_the_injected_clock_with_leeway(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    clock = VirtualClock(NOW)
    auth = jwt_auth(tmp_path, rsa_key, clock, leeway_s=30)
    token = jwt.encode(claims(exp=int(NOW) + 60), rsa_key, algorithm="RS256")
    assert auth.authenticate(bearer(token)).user == "carol"
    clock.advance(85)  # 25 s past exp: within the leeway (and served from the cache)
    assert auth.authenticate(bearer(token)).user == "carol"
    clock.advance(10)
    with pytest.raises(Unauthenticated, match="expired") as raised:
        auth.authenticate(bearer(token))
    assert raised.value.reason == "expired"
    fresh = jwt_auth(tmp_path, rsa_key, clock, leeway_s=30)  # no cache: the same verdict
    with pytest.raises(Unauthenticated, match="expired"):
        fresh.authenticate(bearer(token))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda key, other: jwt.encode(claims(aud="someone-else"), key, algorithm="RS256"), "audience"),
        (lambda key, other: jwt.encode(claims(iss="https://evil.example"), key, algorithm="RS256"), "issuer"),
        (lambda key, other: jwt.encode(claims(), other, algorithm="RS256"), "signature"),
        (lambda key, other: jwt.encode(claims(nbf=int(NOW) + 3600), key, algorithm="RS256"), "not_yet_valid"),
        (lambda key, other: jwt.encode({k: v for k, v in claims().items() if k != "exp"}, key, algorithm="RS256"),
         "claims"),
        (lambda key, other: jwt.encode({k: v for k, v in claims().items() if k != "sub"}, key, algorithm="RS256"),
         "claims"),
        (lambda key, other: jwt.encode(claims(groups=[1, 2]), key, algorithm="RS256"), "claims"),
        # A token signed with the public key as an HMAC secret (the classic algorithm confusion).
        (lambda key, other: _hs256_with_public_key(key), "algorithm"),
        (lambda key, other: jwt.encode(claims(), None, algorithm="none"), "algorithm"),
        (lambda key, other: "not.a.jwt", "malformed"),
    ],
)
def test_bad_jwts_are_refused_with_the_reason(tmp_path: Path, rsa_key, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    auth = jwt_auth(tmp_path, rsa_key, VirtualClock(NOW))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = mutate(rsa_key, other)
    with pytest.raises(Unauthenticated) as raised:
        auth.authenticate(bearer(token))
    assert raised.value.reason == reason, raised.value.message
    assert token not in raised.value.message


def _hs256_with_public_key(private_key) -> str:  # type: ignore[no-untyped-def]
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    secret = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims()).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_es256_keys_from_a_jwks_file_are_chosen_by_kid(tmp_path: Path, ec_key, rsa_key) -> None:  # type: ignore[no-untyped-def]
    jwks = {"keys": [
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1", "use": "sig"},
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "use": "sig"},
    ]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    auth = Authenticator(AuthSettings(mode="jwt", jwt=JwtSettings(jwks_file=path)), VirtualClock(NOW))
    plain = {k: v for k, v in claims().items() if k not in ("iss", "aud")}
    assert auth.authenticate(bearer(jwt.encode(plain, ec_key, algorithm="ES256", headers={"kid": "ec-1"}))).user == "carol"
    assert auth.authenticate(bearer(jwt.encode(plain, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}))).user == "carol"
    with pytest.raises(Unauthenticated, match="does not know"):
        auth.authenticate(bearer(jwt.encode(plain, ec_key, algorithm="ES256", headers={"kid": "ec-9"})))
    # The key of one kid does not verify a token claiming another.
    with pytest.raises(Unauthenticated) as raised:
        auth.authenticate(bearer(jwt.encode(plain, ec_key, algorithm="ES256", headers={"kid": "rsa-1"})))
    assert raised.value.reason in ("signature", "algorithm", "malformed")


def test_static_tokens_also_work_in_jwt_mode(tmp_path: Path, rsa_key) -> None:  # type: ignore[no-untyped-def]
    service = new_token()
    settings = AuthSettings(mode="jwt", tokens=[StaticToken(sha256=hash_token(service), user="etl-bot")],
                            jwt=JwtSettings(public_key_file=pem_file(tmp_path, rsa_key)))
    assert Authenticator(settings, VirtualClock(NOW)).authenticate(bearer(service)).user == "etl-bot"


# ---- configuration and exposure ---------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sparkfleet.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[auth]\nmode = "token"\n', "needs at least one"),
        ('[auth]\nmode = "jwt"\n', "needs an \\[auth.jwt\\] table"),
        ('[auth]\nmode = "jwt"\n[auth.jwt]\n', "exactly one of public_key_file or jwks_file"),
        ('[auth]\nmode = "jwt"\n[auth.jwt]\njwks_file = "k.json"\nalgorithms = ["HS256"]\n', "algorithms"),
        ('[auth]\nmode = "password"\n', "auth.mode"),
        ('[[auth.tokens]]\nsha256 = "abc"\nuser = "a"\n', "sha256"),
        (f'[[auth.tokens]]\nsha256 = "{"a" * 64}"\nuser = "a"\n[[auth.tokens]]\nsha256 = "{"a" * 64}"\nuser = "b"\n',
         "same token twice"),
    ],
)
def test_auth_config_mistakes_are_config_errors(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(write(tmp_path, text))


def test_unreadable_jwt_keys_are_config_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    for settings in (JwtSettings(public_key_file=tmp_path / "missing.pem"), JwtSettings(public_key_file=garbage),
                     JwtSettings(jwks_file=garbage)):
        with pytest.raises(ConfigError, match="JWT verification key"):
            Authenticator(AuthSettings(mode="jwt", jwt=settings), VirtualClock(time.time()))


def test_no_auth_is_refused_off_loopback_unless_forced() -> None:
    none = AuthSettings()
    refuse_open_remote_access(none, {"gateway": ["127.0.0.1", "::1"], "admin server": ["127.0.0.1"]})
    with pytest.raises(ConfigError, match="0.0.0.0 with no authentication"):
        refuse_open_remote_access(none, {"gateway": ["0.0.0.0"], "admin server": ["127.0.0.1"]})
    with pytest.raises(ConfigError, match="admin server would listen on 10.1.2.3"):
        refuse_open_remote_access(none, {"gateway": ["127.0.0.1"], "admin server": ["10.1.2.3"]})
    refuse_open_remote_access(AuthSettings(allow_unauthenticated_remote=True), {"gateway": ["0.0.0.0"]})
    token = AuthSettings(mode="token", tokens=[StaticToken(sha256=hash_token("t"), user="a")])
    refuse_open_remote_access(token, {"gateway": ["0.0.0.0"]})



@pytest.fixture(scope="module")
def hostile_jwt_auth(tmp_path_factory: pytest.TempPathFactory, rsa_key) -> Authenticator:  # type: ignore[no-untyped-def]
    settings = JwtSettings(public_key_file=pem_file(tmp_path_factory.mktemp("idp"), rsa_key))
    return Authenticator(AuthSettings(mode="jwt", jwt=settings), VirtualClock(NOW))


@given(credential=st.one_of(
    st.text(max_size=300),
    st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=80),
             min_size=3, max_size=3).map(".".join),
))
def test_any_credential_text_is_refused_cleanly_in_jwt_mode(hostile_jwt_auth: Authenticator, credential: str) -> None:
    """Whatever a caller sends, the outcome is Unauthenticated, never another exception."""
    with pytest.raises(Unauthenticated):
        hostile_jwt_auth.authenticate([("authorization", f"Bearer {credential}")])
