"""Who is calling: bearer tokens (static, stored hashed) and JWTs turned into an :class:`Identity`.

The stock client sends ``sc://host:port/;token=T`` as ``authorization: Bearer T`` on every call.
Every failure is :class:`Unauthenticated` with a message that says what is wrong and never echoes
the credential; its ``reason`` labels the failure in ``/metrics``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jwt

from sparkfleet.clock import Clock
from sparkfleet.config_security import AuthSettings, JwtSettings
from sparkfleet.errors import ConfigError, Unauthenticated

DEFAULT_TENANT = "default"
# Verified JWTs kept so that a session's every call does not verify a signature again.
_JWT_CACHE_MAX = 10_000
# Longest credential read at all (a JWT with many claims stays far below this).
_MAX_CREDENTIAL_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified caller. ``user`` replaces the client-declared user id everywhere."""

    user: str
    tenant: str = DEFAULT_TENANT
    groups: frozenset[str] = frozenset()
    admin: bool = False
    method: str = "none"  # none | token | jwt


def hash_token(token: str) -> str:
    """What the config stores for a static token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token (256 random bits, URL-safe)."""
    return "sft_" + secrets.token_urlsafe(32)


def refuse_open_remote_access(settings: AuthSettings, listening: dict[str, list[str]]) -> None:
    """Without auth, listening anywhere but loopback is refused unless explicitly forced.

    ``listening``: per endpoint name, the addresses it binds.
    """
    if settings.mode != "none" or settings.allow_unauthenticated_remote:
        return
    for endpoint, addresses in listening.items():
        exposed = [a for a in addresses if not _is_loopback(a)]
        if exposed:
            raise ConfigError(
                f"the {endpoint} would listen on {', '.join(exposed)} with no authentication ([auth] mode = "
                '"none"), so anyone who can reach it could run queries as anyone. Configure [auth] mode = '
                '"token" or "jwt", bind to localhost, or set [auth] allow_unauthenticated_remote = true '
                "to accept the risk."
            )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def bearer_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The bearer credential in gRPC or HTTP headers, None if there is none."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        scheme, _, credential = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthenticated(
                "the authorization header is not 'Bearer <token>'; connect with sc://HOST:PORT/;token=<token>",
                "malformed",
            )
        return credential.strip()
    return None


class Authenticator:
    """Checks the credential of each call against the ``[auth]`` settings."""

    def __init__(
        self, settings: AuthSettings, clock: Clock, on_failure: Callable[[str, str], None] | None = None
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._on_failure = on_failure
        self._admin_groups = frozenset(settings.admin_groups)
        self._tokens = {
            t.sha256: Identity(t.user, t.tenant, frozenset(t.groups), bool(self._admin_groups & set(t.groups)), "token")
            for t in settings.tokens
        }
        self._jwt = _JwtVerifier(settings.jwt, self._admin_groups, clock) if settings.mode == "jwt" else None

    @property
    def enabled(self) -> bool:
        return self.settings.mode != "none"

    def authenticate(
        self, metadata: Sequence[tuple[str, str | bytes]] | None, declared_user: str = "", endpoint: str = "grpc"
    ) -> Identity:
        """The caller's identity; with ``mode = "none"``, whoever the client says it is.

        ``endpoint`` (grpc, admin) labels failures for the ``on_failure`` callback.
        """
        try:
            return self._authenticate(metadata, declared_user)
        except Unauthenticated as failure:
            if self._on_failure is not None:
                self._on_failure(failure.reason, endpoint)
            raise

    def _authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None, declared_user: str) -> Identity:
        if not self.enabled:
            # Loopback only (or explicitly forced): everyone is trusted, and may administer.
            return Identity(declared_user, DEFAULT_TENANT, frozenset(), True, "none")
        credential = bearer_of(metadata)
        if credential is None:
            raise Unauthenticated(
                "this gateway requires a bearer token and the call carried none; "
                "connect with sc://HOST:PORT/;token=<token>",
                "missing",
            )
        if len(credential) > _MAX_CREDENTIAL_CHARS:
            raise Unauthenticated(f"the bearer token is longer than {_MAX_CREDENTIAL_CHARS} characters", "malformed")
        found = self._tokens.get(hash_token(credential))
        if found is not None:
            return found
        if self._jwt is not None and credential.count(".") == 2:
            return self._jwt.verify(credential)
        raise Unauthenticated("the bearer token is not one this gateway accepts", "unknown")


class _JwtVerifier:
    def __init__(self, settings: JwtSettings | None, admin_groups: frozenset[str], clock: Clock) -> None:
        assert settings is not None  # AuthSettings guarantees it in jwt mode
        self._s = settings
        self._admin_groups = admin_groups
        self._clock = clock
        self._keys = _load_keys(settings)
        self._cache: dict[str, tuple[Identity, float]] = {}

    def verify(self, token: str) -> Identity:
        cached = self._cache.get(token)
        now = self._clock.now()
        if cached is not None:
            identity, expires_at = cached
            if now <= expires_at + self._s.leeway_s:
                return identity
            self._cache.pop(token, None)
        claims = self._decode(token, now)
        user = claims.get(self._s.user_claim)
        if not isinstance(user, str) or not user:
            raise Unauthenticated(f"the token has no {self._s.user_claim!r} claim naming the user", "claims")
        tenant = claims.get(self._s.tenant_claim, self._s.default_tenant)
        if not isinstance(tenant, str) or not tenant:
            raise Unauthenticated(f"the token's {self._s.tenant_claim!r} claim is not a name", "claims")
        raw_groups = claims.get(self._s.groups_claim, [])
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        if not isinstance(raw_groups, list) or not all(isinstance(g, str) for g in raw_groups):
            raise Unauthenticated(f"the token's {self._s.groups_claim!r} claim is not a list of names", "claims")
        groups = frozenset(raw_groups)
        identity = Identity(user, tenant, groups, bool(self._admin_groups & groups), "jwt")
        if len(self._cache) >= _JWT_CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (identity, float(claims["exp"]))
        return identity

    def _decode(self, token: str, now: float) -> dict[str, Any]:
        s = self._s
        try:
            key = self._key_for(jwt.get_unverified_header(token))
            return _decode_at(token, key, s, now)
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired; get a new one", "expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (nbf/iat in the future)", "not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"the token is not meant for this gateway (audience is not {s.audience!r})",
                                  "audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"the token was not issued by {s.issuer!r}", "issuer") from None
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"the token lacks the required {error.claim!r} claim", "claims") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated(f"the token is not signed with an accepted algorithm ({', '.join(s.algorithms)})",
                                  "algorithm") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify", "signature") from None
        except (jwt.DecodeError, jwt.InvalidKeyError, jwt.PyJWKError):
            raise Unauthenticated("the bearer token is not a well-formed JWT", "malformed") from None
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"the token is not valid: {type(error).__name__}", "invalid") from None
        except (TypeError, ValueError):
            # PyJWT's way of saying the header's algorithm does not fit the key (e.g. ES256 on an RSA key).
            raise Unauthenticated("the token's algorithm does not match the key it names", "algorithm") from None

    def _key_for(self, header: dict[str, Any]) -> Any:
        kid = header.get("kid")
        if kid is not None and kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise Unauthenticated("the token is signed by a key this gateway does not know (kid)", "signature")


def _decode_at(token: str, key: Any, s: JwtSettings, now: float) -> dict[str, Any]:
    """Decode with time checks against ``now`` (an injected clock), not the machine's."""
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=s.algorithms, audience=s.audience, issuer=s.issuer,
        options={"require": ["exp"], "verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        raise jwt.DecodeError("exp is not a number")
    if now > exp + s.leeway_s:
        raise jwt.ExpiredSignatureError("expired")
    for claim in ("nbf", "iat"):
        value = claims.get(claim)
        if isinstance(value, (int, float)) and value > now + s.leeway_s:
            raise jwt.ImmatureSignatureError(claim)
    return claims


def _load_keys(s: JwtSettings) -> dict[str | None, Any]:
    """The verification keys by key id (None: a single PEM key, used for any token without kid)."""
    try:
        if s.public_key_file is not None:
            pem = s.public_key_file.read_bytes()
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            return {None: load_pem_public_key(pem)}
        assert s.jwks_file is not None
        keys: dict[str | None, Any] = {}
        for jwk in jwt.PyJWKSet.from_json(s.jwks_file.read_text()).keys:
            keys[jwk.key_id] = jwk.key
        if not keys:
            raise ConfigError(f"auth.jwt.jwks_file {s.jwks_file} holds no usable key")
        return keys
    except OSError as error:
        raise ConfigError(f"cannot read the JWT verification key: {error}") from error
    except (ValueError, json.JSONDecodeError, jwt.PyJWKError, jwt.PyJWKSetError) as error:
        raise ConfigError(f"the JWT verification key file is not a valid public key / JWKS: {error}") from error
