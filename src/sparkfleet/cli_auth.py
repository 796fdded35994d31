"""``sparkfleet auth token``: make a bearer token and the config entry that accepts it."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from sparkfleet.gateway.auth import hash_token, new_token

err = Console(stderr=True, highlight=False, soft_wrap=True)


def add_auth_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    auth = sub.add_parser("auth", help="make credentials for clients of an authenticated sparkfleet")
    commands = auth.add_subparsers(dest="auth_command", required=True)
    token = commands.add_parser(
        "token", help="make a bearer token; prints it once, and the [[auth.tokens]] entry (only its hash) to add"
    )
    token.add_argument("--user", required=True, help="the identity queries run as")
    token.add_argument("--tenant", default="default", help="the tenant whose quotas apply (default: default)")
    token.add_argument("--group", action="append", default=[], dest="groups",
                       help="a group of the user (repeat; 'admin' may change things through the admin API)")
    token.set_defaults(func=_cmd_token)


def _cmd_token(args: argparse.Namespace) -> int:
    token = new_token()
    entry = [
        "[[auth.tokens]]",
        f"sha256 = {json.dumps(hash_token(token))}",
        f"user = {json.dumps(args.user)}",
        f"tenant = {json.dumps(args.tenant)}",
        f"groups = {json.dumps(args.groups)}",
    ]
    # The token goes to stdout alone, so that `TOKEN=$(sparkfleet auth token ...)` works.
    print(token)
    err.print("Add this to the config file (it holds only the token's hash), with [auth] mode = \"token\":\n", markup=False)
    err.print("\n".join(entry), markup=False)
    err.print(f"\nClients connect with sc://HOST:15002/;token={token}  (TLS is used for any HOST but localhost)",
              markup=False)
    return 0
