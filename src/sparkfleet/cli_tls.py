"""``sparkfleet tls self-signed``: a certificate and key for trying TLS out, and how to use them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparkfleet.config import DEFAULT_GATEWAY_PORT
from sparkfleet.tls import LOOPBACK_NAMES, make_self_signed


def add_tls_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tls = sub.add_parser("tls", help="certificates for TLS on the gateway and the admin server")
    commands = tls.add_subparsers(dest="tls_command", required=True)
    self_signed = commands.add_parser(
        "self-signed", help="make a self-signed certificate and key (for trying TLS out; use a real CA's in production)")
    self_signed.add_argument("--out", type=Path, required=True, help="directory for cert.pem and key.pem")
    self_signed.add_argument("--host", action="append", default=[], metavar="NAME",
                             help="another DNS name or IP clients use to reach sparkfleet (repeatable); localhost, "
                                  "127.0.0.1, ::1 and this machine's host name are always included")
    self_signed.add_argument("--days", type=int, default=365, help="days the certificate is valid (default 365)")
    self_signed.add_argument("--force", action="store_true", help="replace cert.pem and key.pem if they exist")
    self_signed.set_defaults(func=_cmd_self_signed)


def _cmd_self_signed(args: argparse.Namespace) -> int:
    pair = make_self_signed(args.out, args.host, args.days, args.force)
    cert, key = pair.cert_file.resolve(), pair.key_file.resolve()
    host = next((n for n in pair.names[len(LOOPBACK_NAMES):] if ":" not in n), "localhost")
    # Plain print: a pasteable snippet must not be wrapped to the terminal's width. json.dumps
    # quotes a path the way TOML's basic strings need it.
    print(f"""certificate {cert}
private key {key} (mode 0600)
valid until {pair.not_after:%Y-%m-%d} for {', '.join(pair.names)}

Add to the config file (sparkfleet up --config FILE):

[tls]
cert_file = {json.dumps(str(cert))}
key_file = {json.dumps(str(key))}

Clients then connect with TLS, trusting this certificate (set before the client's Python starts):

  export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={cert}
  SparkSession.builder.remote("sc://{host}:{DEFAULT_GATEWAY_PORT}/;use_ssl=true").getOrCreate()

With [auth], add ;token=... (a token sent to any host but exactly "localhost" implies TLS).
The admin server is https too:  sparkfleet status --config FILE""")
    return 0
