"""A gateway's identity and the broker's side of it: id, password, client certificate, and the
Mosquitto password and ACL lines that let the gateway publish only as itself."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field

from common.config import ConfigError
from edge.config.gateway import ID_HINT, ID_PATTERN
from protocols.wire import CHANNELS, Direction, topic

from .site import SiteConfig

__all__ = ["COLLECTOR_USER_PREFIX", "PBKDF2_ITERATIONS", "Credentials", "acl_lines",
           "issue_client_certificate", "mosquitto_password_line", "new_credentials"]

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes; the broker reads the count per line
COLLECTOR_USER_PREFIX = "firegate-collector-"
"""Collectors' MQTT users are ``firegate-collector-<[collector] id>`` (the collector's default
client id): a gateway id may not start with it, so no gateway can be given a collector's user
name, and so (with ``use_username_as_clientid``) its client id."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A gateway's id and MQTT login (the user name is the gateway id)."""

    gateway_id: str
    username: str
    password: str = field(repr=False)


def new_credentials(site: SiteConfig, gateway_id: str | None = None) -> Credentials:
    """A gateway id (``gateway_id``, the site file's, or ``<prefix>-<6 hex>``) and a random
    password (32 URL-safe characters, 192 bits)."""
    gid = gateway_id or site.gateway_id or f"{site.prefix}-{secrets.token_hex(3)}"
    if re.fullmatch(ID_PATTERN, gid) is None:
        raise ConfigError("gateway.id", f"must be {ID_HINT}, got {gid!r}")
    if gid.startswith(COLLECTOR_USER_PREFIX):
        raise ConfigError("gateway.id", f"must not start with {COLLECTOR_USER_PREFIX!r} "
                                        f"(reserved for collectors' MQTT users), got {gid!r}")
    return Credentials(gid, gid, secrets.token_urlsafe(24))


def mosquitto_password_line(username: str, password: str, *, salt: bytes | None = None,
                            iterations: int = PBKDF2_ITERATIONS) -> str:
    """A ``password_file`` line as ``mosquitto_passwd`` 2.0 writes it:
    ``user:$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512 (64 bytes)>``."""
    if ":" in username or "\n" in username:
        raise ValueError("a Mosquitto user name cannot contain ':' or a newline")
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"{username}:$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def acl_lines(username: str, gateway_id: str) -> list[str]:
    """ACL entries binding a gateway's credentials to its own topic subtree (docs/wire-protocol.md
    "Topics"), from the contract's channel table: it writes every upward channel (records,
    status and its will, health, cmd/ack) and reads every downward one (cmd, stored), each
    under ``firegate/v1/<id>/`` only."""
    lines = [f"user {username}"]
    lines += [f"topic write {topic(gateway_id, c)}" for c, spec in CHANNELS.items()
              if spec.direction is Direction.UP]
    lines += [f"topic read {topic(gateway_id, c)}" for c, spec in CHANNELS.items()
              if spec.direction is Direction.DOWN]
    return lines


def issue_client_certificate(ca_cert_pem: bytes, ca_key_pem: bytes, gateway_id: str,
                             days: int = 3650) -> tuple[bytes, bytes]:
    """A client certificate (CN = gateway id, clientAuth) and its new EC P-256 key, signed by
    the site CA; PEM. Mosquitto with ``use_identity_as_username`` maps the CN to the user."""
    import datetime as dt

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - the sim extra carries it
        raise RuntimeError("client certificates need the cryptography package: "
                           "pip install 'firegate[sim]'") from exc
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the site CA key must be an EC or RSA private key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
