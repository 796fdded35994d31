"""Who may see and change what through the admin API.

With ``[auth]`` on, every endpoint but ``/api/health`` needs a bearer token (the same tokens and
JWTs as the gateway). Admins (a group in ``auth.admin_groups``) see everything and may change
things; anyone else sees only their own tenant's sessions, queries and queue, and no metrics.
Without auth (loopback only) everyone is an admin.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from sparkfleet.errors import PermissionDenied
from sparkfleet.gateway.auth import Authenticator, Identity
from sparkfleet.store import Database
from sparkfleet.store.queries import tenant_of_query


def caller_of(auth: Authenticator, request: Request) -> Identity:
    """The verified caller of an admin request (raises Unauthenticated)."""
    return auth.authenticate(list(request.headers.items()), endpoint="admin")


def require_admin(identity: Identity, what: str) -> None:
    if not identity.admin:
        raise PermissionDenied(
            f"{what} is for admins; {identity.user!r} (tenant {identity.tenant!r}) is not in an admin group"
        )


def tenant_filter(identity: Identity) -> str | None:
    """The tenant whose rows the caller may see (None: all of them)."""
    return None if identity.admin else identity.tenant


def visible_regressions(db: Database, identity: Identity, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regression groups cut down to the workloads the caller's tenant ran (error messages may
    quote another tenant's data)."""
    if identity.admin:
        return groups
    visible = []
    for group in groups:
        own = [w for w in group["workloads"]
               if tenant_of_query(db, str(w["failed_run"].get("query_id", ""))) == identity.tenant]
        if own:
            visible.append({**group, "workloads": own, "affected_workloads": len(own)})
    return visible
