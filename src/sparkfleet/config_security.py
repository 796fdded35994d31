"""Typed settings for who may connect and how much they may use: ``[auth]``, ``[tls]``, ``[tenants.*]``.

Kept apart from ``config.py`` (the pool and its policies); ``Settings`` includes them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Signature algorithms accepted for JWTs: asymmetric only, so the gateway never holds a key that
# could mint tokens.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaticToken(_Strict):
    """One bearer token, stored only as the SHA-256 of its text (``sparkfleet auth token`` makes one)."""

    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    user: str = Field(min_length=1, max_length=256)
    tenant: str = Field(default="default", min_length=1, max_length=128)
    groups: list[str] = Field(default_factory=list)


class JwtSettings(_Strict):
    """JWTs signed by an identity provider, checked against a local public key or JWKS file."""

    public_key_file: Path | None = None
    jwks_file: Path | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    # Required claims: when set, a token must carry this issuer / this audience.
    issuer: str | None = None
    audience: str | None = None
    # Seconds of clock difference tolerated on exp / nbf / iat.
    leeway_s: float = Field(default=30.0, ge=0, le=600)
    # Where the identity is read from.
    user_claim: str = "sub"
    tenant_claim: str = "tenant"
    groups_claim: str = "groups"
    # The tenant of a token without a tenant claim.
    default_tenant: str = "default"

    @model_validator(mode="after")
    def _one_key_source(self) -> "JwtSettings":
        if (self.public_key_file is None) == (self.jwks_file is None):
            raise ValueError("auth.jwt needs exactly one of public_key_file or jwks_file")
        unknown = [a for a in self.algorithms if a not in JWT_ALGORITHMS]
        if unknown or not self.algorithms:
            raise ValueError(f"auth.jwt.algorithms must be among {list(JWT_ALGORITHMS)}; got {self.algorithms}")
        return self


class AuthSettings(_Strict):
    """Who may connect. ``none``: the client-declared user id is trusted (only on loopback unless
    ``allow_unauthenticated_remote``); ``token``: static bearer tokens; ``jwt``: JWTs, plus the
    static tokens listed (for services), if any."""

    mode: str = Field(default="none", pattern="^(none|token|jwt)$")
    allow_unauthenticated_remote: bool = False
    tokens: list[StaticToken] = Field(default_factory=list)
    jwt: JwtSettings | None = None
    # Members of these groups are admins: they may change things through the admin API and see
    # every tenant's sessions and queries.
    admin_groups: list[str] = Field(default_factory=lambda: ["admin"])

    @model_validator(mode="after")
    def _mode_has_credentials(self) -> "AuthSettings":
        if self.mode == "token" and not self.tokens:
            raise ValueError('auth.mode = "token" needs at least one [[auth.tokens]] entry')
        if self.mode == "jwt" and self.jwt is None:
            raise ValueError('auth.mode = "jwt" needs an [auth.jwt] table')
        hashes = [t.sha256 for t in self.tokens]
        if len(set(hashes)) != len(hashes):
            raise ValueError("auth.tokens lists the same token twice")
        return self


class TlsSettings(_Strict):
    """TLS for the gRPC endpoint and the admin server (``sparkfleet tls self-signed`` makes a pair)."""

    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> "TlsSettings":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls needs both cert_file and key_file, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class TenantQuota(_Strict):
    """What one tenant may use at once (unset: no limit). ``[tenants.default]`` applies to every
    tenant without its own table."""

    # Queries running at once; more wait in the queue (fairly among tenants).
    max_concurrent_queries: int | None = Field(default=None, ge=1)
    # Queries waiting at once; beyond that, RESOURCE_EXHAUSTED.
    max_queued: int | None = Field(default=None, ge=0)
    # The largest size class the tenant's queries run on (an out-of-memory retry stops there).
    max_size_class: str | None = None
    # Cores of the clusters running the tenant's queries, together.
    max_cores: int | None = Field(default=None, ge=1)
    # Requests per second (a token bucket holding ``burst`` requests); beyond: RESOURCE_EXHAUSTED
    # with a retry delay, which the stock client honours.
    requests_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
