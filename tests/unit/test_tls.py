"""TLS files: the self-signed pair `sparkfleet tls self-signed` makes, and the checks before the servers use a pair."""

from __future__ import annotations

import ipaddress
import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509

from sparkfleet.cli import main
from sparkfleet.config import load_settings
from sparkfleet.config_security import TlsSettings
from sparkfleet.errors import ConfigError
from sparkfleet.tls import load_tls_pair, make_self_signed


def _sans(cert_file: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names.get_values_for_type(x509.DNSName)), {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


def test_self_signed_pair_names_loopback_this_host_and_extra_names(tmp_path):
    pair = make_self_signed(tmp_path, ["spark.example.test", "10.1.2.3"], days=7)
    dns, ips = _sans(pair.cert_file)
    assert {"localhost", socket.gethostname(), "spark.example.test"} <= dns
    assert {"127.0.0.1", "::1", "10.1.2.3"} <= ips
    assert all(ipaddress.ip_address(ip) for ip in ips)
    cert = x509.load_pem_x509_certificate(pair.cert_file.read_bytes())
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 7
    # Only its owner may read the key; the certificate is public.
    assert stat.S_IMODE(pair.key_file.stat().st_mode) == 0o600
    loaded = load_tls_pair(TlsSettings(cert_file=pair.cert_file, key_file=pair.key_file))
    assert loaded.cert_pem == pair.cert_file.read_bytes()


def test_existing_files_are_kept_unless_forced(tmp_path):
    first = make_self_signed(tmp_path)
    key_before = first.key_file.read_bytes()
    with pytest.raises(ConfigError, match="exist already.*--force"):
        make_self_signed(tmp_path)
    assert first.key_file.read_bytes() == key_before
    second = make_self_signed(tmp_path, force=True)
    assert second.key_file.read_bytes() != key_before
    assert stat.S_IMODE(second.key_file.stat().st_mode) == 0o600


def test_a_key_of_another_certificate_is_refused(tmp_path):
    one, other = make_self_signed(tmp_path / "one"), make_self_signed(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"is not the key of the certificate in tls.cert_file"):
        load_tls_pair(TlsSettings(cert_file=one.cert_file, key_file=other.key_file))


@pytest.mark.parametrize("broken, content, message", [
    ("cert", b"not a certificate\n", r"tls.cert_file .* is not a PEM certificate"),
    ("key", b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
     r"tls.key_file .* is not a PEM private key"),
    ("cert", None, r"tls.cert_file .* holds a private key, not a certificate; are cert_file and key_file swapped"),
])
def test_garbage_files_are_refused_naming_the_file(tmp_path, broken, content, message):
    pair = make_self_signed(tmp_path)
    target = pair.cert_file if broken == "cert" else pair.key_file
    target.write_bytes(content if content is not None else pair.key_file.read_bytes())
    with pytest.raises(ConfigError, match=message):
        load_tls_pair(TlsSettings(cert_file=pair.cert_file, key_file=pair.key_file))


def test_missing_and_unreadable_files_are_refused(tmp_path):
    pair = make_self_signed(tmp_path)
    with pytest.raises(ConfigError, match=r"tls.key_file .*nope.pem does not exist; `sparkfleet tls self-signed"):
        load_tls_pair(TlsSettings(cert_file=pair.cert_file, key_file=tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match=r"tls.cert_file .* is a directory"):
        load_tls_pair(TlsSettings(cert_file=tmp_path, key_file=pair.key_file))
    # (Tests may run as root, whom file modes do not stop; a path through a file cannot be read by anyone.)
    with pytest.raises(ConfigError, match=r"tls.key_file .*key.pem/x cannot be read: Not a directory"):
        load_tls_pair(TlsSettings(cert_file=pair.cert_file, key_file=pair.key_file / "x"))


def test_config_needs_both_files(tmp_path):
    config = tmp_path / "sparkfleet.toml"
    config.write_text('[tls]\ncert_file = "cert.pem"\n')
    with pytest.raises(ConfigError, match="tls needs both cert_file and key_file"):
        load_settings(config)
    config.write_text('[tls]\ncert_file = "cert.pem"\nkey_file = "key.pem"\n')
    assert load_settings(config).tls.enabled
    assert not load_settings().tls.enabled


def test_cli_prints_the_config_snippet_and_how_to_connect(tmp_path, capsys):
    assert main(["tls", "self-signed", "--out", str(tmp_path / "pair"), "--host", "spark.example.test"]) == 0
    out = capsys.readouterr().out
    cert = (tmp_path / "pair" / "cert.pem").resolve()
    assert f'[tls]\ncert_file = "{cert}"\nkey_file = "{cert.parent / "key.pem"}"' in out
    assert f"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={cert}" in out and ";use_ssl=true" in out
    # The snippet is valid TOML that the config accepts.
    snippet = out[out.index("[tls]"):].split("\n\n")[0]
    (tmp_path / "sparkfleet.toml").write_text(snippet)
    assert load_settings(tmp_path / "sparkfleet.toml").tls.cert_file == cert
