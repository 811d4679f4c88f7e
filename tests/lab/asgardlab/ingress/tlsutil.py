"""TLS key pairs from Secrets, checked before nginx sees them (a bad pair must not break the whole config),
written 0600 under ``<state>/ingress/certs/``; and the controller's default ("fake") certificate."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"


@dataclass
class KeyPair:
    cert_pem: bytes
    key_pem: bytes
    cert: x509.Certificate

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.cert_pem + self.key_pem).hexdigest()[:16]

    def dns_names(self) -> list[str]:
        try:
            san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            return [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            return [a.value.lower() for a in self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                    if isinstance(a.value, str)]

    def covers(self, host: str) -> bool:
        """Go's x509.Certificate.VerifyHostname for DNS names (a wildcard matches exactly one label)."""
        host = host.lower().rstrip(".")
        for name in self.dns_names():
            if name == host:
                return True
            if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:] and host.split(".", 1)[0]:
                return True
        return False


def keypair_from_secret(secret: dict | None, require_tls_type: bool = False) -> tuple[KeyPair | None, str]:
    """(pair, "") or (None, why the Secret cannot serve TLS)."""
    if secret is None:
        return None, "not found"
    if require_tls_type and secret.get("type") != "kubernetes.io/tls":
        return None, f'is of type {secret.get("type", "Opaque")!r}, not "kubernetes.io/tls"'
    data = secret.get("data") or {}
    missing = [k for k in ("tls.crt", "tls.key") if not data.get(k)]
    if missing:
        return None, "has no " + " and no ".join(missing)
    try:
        crt = base64.b64decode(data["tls.crt"], validate=True)
        key = base64.b64decode(data["tls.key"], validate=True)
    except (binascii.Error, ValueError):
        return None, "has tls.crt/tls.key that are not base64"
    try:
        cert = x509.load_pem_x509_certificate(crt)
    except ValueError as exc:
        return None, f"has a tls.crt that is not a PEM certificate ({exc})"
    try:
        pkey = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        return None, f"has a tls.key that is not an unencrypted PEM private key ({exc})"
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if pkey.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
        return None, "has a tls.key that does not match its tls.crt"
    return KeyPair(crt if crt.endswith(b"\n") else crt + b"\n", key, cert), ""


def write_pair(directory: Path, name: str, pair: KeyPair) -> tuple[Path, Path]:
    """Write (cert, key) files named after their content, mode 0600; existing files are reused."""
    base = directory / f"{name}-{pair.digest}"
    crt, key = base.with_suffix(".crt"), base.with_suffix(".key")
    for path, data in ((crt, pair.cert_pem), (key, pair.key_pem)):
        if not path.exists():
            tmp = path.with_suffix(path.suffix + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            tmp.replace(path)
    return crt, key


def fake_certificate(directory: Path) -> tuple[Path, Path]:
    """ingress-nginx's default certificate for hosts without one: self-signed, CN "Kubernetes Ingress Controller
    Fake Certificate" (ingress-nginx ``internal/net/ssl/ssl.go`` GetFakeSSLCert)."""
    crt, key = directory / "default-fake.crt", directory / "default-fake.key"
    if crt.exists() and key.exists():
        return crt, key
    now = _dt.datetime.now(_dt.UTC)
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CN)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pkey.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(pkey, hashes.SHA256()))
    pair = KeyPair(cert.public_bytes(serialization.Encoding.PEM),
                   pkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()), cert)
    for path, data in ((crt, pair.cert_pem), (key, pair.key_pem)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return crt, key
