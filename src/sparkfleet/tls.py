"""TLS certificate files: a self-signed pair for trying TLS out, and the configured pair checked and loaded."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sparkfleet.config_security import TlsSettings
from sparkfleet.errors import ConfigError

log = logging.getLogger(__name__)

CERT_FILE_NAME = "cert.pem"
KEY_FILE_NAME = "key.pem"
# Names every self-signed certificate is valid for, so local clients verify it whatever they type.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsPair:
    """A certificate chain and its private key, PEM, as the servers take them."""

    cert_file: Path
    key_file: Path
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class SelfSignedPair:
    cert_file: Path
    key_file: Path
    names: tuple[str, ...]  # the subject alternative names, DNS names and IPs as given
    not_after: datetime.datetime


def self_signed_names(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Loopback names, this machine's host name(s), then ``extra``; each once, in that order."""
    names: list[str] = []
    for name in (*LOOPBACK_NAMES, socket.gethostname(), socket.getfqdn(), *extra):
        name = name.strip()
        if name and name not in names:
            names.append(name)
    return tuple(names)


def make_self_signed(out_dir: Path, extra_names: Iterable[str] = (), days: int = 365,
                     force: bool = False, now: datetime.datetime | None = None) -> SelfSignedPair:
    """Write ``cert.pem`` and ``key.pem`` (mode 0600) into ``out_dir``: an EC P-256 key and a
    certificate signed by itself, valid ``days`` days for :func:`self_signed_names`.

    Existing files are kept (ConfigError) unless ``force``.
    """
    if days < 1:
        raise ConfigError(f"a certificate must be valid for at least 1 day, not {days}")
    cert_file, key_file = out_dir / CERT_FILE_NAME, out_dir / KEY_FILE_NAME
    existing = [str(p) for p in (cert_file, key_file) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{' and '.join(existing)} {'exists' if len(existing) == 1 else 'exist'} already; "
                          "choose another --out directory or pass --force to replace")
    names = self_signed_names(extra_names)
    key = ec.generate_private_key(ec.SECP256R1())
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - datetime.timedelta(minutes=5)
    not_after = start + datetime.timedelta(days=days)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sparkfleet self-signed")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        # Its own issuer, so a CA: clients that trust the file build a chain to it (gRPC's default
        # roots refuse a self-signed certificate that may not sign certificates).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_private(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConfigError(f"cannot write the certificate pair into {out_dir}: {exc}") from exc
    return SelfSignedPair(cert_file, key_file, names, not_after)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read, never readable by others even briefly."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_tls_pair(settings: TlsSettings) -> TlsPair:
    """The configured certificate and key, checked: both readable PEM, the key unencrypted and
    the one the certificate is for. Anything else is a ConfigError saying which file and why."""
    assert settings.cert_file is not None and settings.key_file is not None, "TLS is not configured"
    cert_file, key_file = Path(settings.cert_file), Path(settings.key_file)
    cert_pem, key_pem = _read("tls.cert_file", cert_file), _read("tls.key_file", key_file)
    if b"PRIVATE KEY-----" in cert_pem:
        raise ConfigError(f"tls.cert_file {cert_file} holds a private key, not a certificate; are "
                          "cert_file and key_file swapped?")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"tls.cert_file {cert_file} is not a PEM certificate (expected a "
                          "'-----BEGIN CERTIFICATE-----' block)") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # cryptography's way of saying "encrypted, and no password given"
        raise ConfigError(f"tls.key_file {key_file} is encrypted with a passphrase; sparkfleet needs an "
                          "unencrypted key (keep it safe with file permissions, e.g. chmod 600)") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"tls.key_file {key_file} is not a PEM private key (expected a "
                          "'-----BEGIN ... PRIVATE KEY-----' block)") from exc
    if _public_der(chain[0].public_key()) != _public_der(key.public_key()):
        raise ConfigError(f"tls.key_file {key_file} is not the key of the certificate in tls.cert_file "
                          f"{cert_file}; configure the pair that belongs together")
    _warn_about(chain[0], cert_file, key_file)
    return TlsPair(cert_file, key_file, cert_pem, key_pem)


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{setting} {path} does not exist; `sparkfleet tls self-signed --out DIR` "
                          "makes a pair for trying TLS out") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{setting} {path} is a directory, not a PEM file") from exc
    except OSError as exc:
        raise ConfigError(f"{setting} {path} cannot be read: {exc.strerror or exc}") from exc


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _warn_about(cert: x509.Certificate, cert_file: Path, key_file: Path) -> None:
    """Problems that do not stop the servers but will bite: an expired certificate, an exposed key."""
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc):
        log.warning("the certificate in %s expired on %s; clients will refuse it", cert_file,
                    cert.not_valid_after_utc.isoformat())
    if key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the private key %s can be read by other users; chmod 600 it", key_file)
