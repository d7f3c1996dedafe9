"""One provisioning run: one gateway's files and the broker's entries for it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.config import ConfigError

from .agent import agent_config_toml
from .credentials import (
    Credentials,
    acl_lines,
    issue_client_certificate,
    mosquitto_password_line,
    new_credentials,
)
from .firmware import firmware_config
from .site import SiteConfig

__all__ = ["Kind", "Provisioned", "provision"]

Kind = Literal["agent", "firmware"]


@dataclass(frozen=True, slots=True)
class Provisioned:
    """Everything one provisioning run produced. ``files`` maps a file name to its content and
    mode (secrets are 0600); ``passwd_line`` and ``acl`` go to the broker."""

    kind: Kind
    credentials: Credentials
    files: dict[str, tuple[bytes, int]]
    passwd_line: str = field(repr=False)
    acl: list[str] = field(default_factory=list)


def provision(site: SiteConfig, kind: Kind, *, gateway_id: str | None = None,
              credentials: Credentials | None = None, client_cert: bool = False,
              config_dir: Path | None = None, firmware_data_dir: str | None = None
              ) -> Provisioned:
    """Provision one gateway of ``site`` (with ``credentials``, or new ones for ``gateway_id``).
    ``config_dir``: where the agent's files will live on the gateway (its config refers to them
    there; default ``/etc/firegate``)."""
    creds = credentials or new_credentials(site, gateway_id)
    cert = key = None
    if client_cert:
        if site.client_ca is None:
            raise ConfigError("site.client_ca_cert", "is required to issue client certificates")
        if not site.uplink.tls:
            raise ConfigError("uplink.url", "client certificates need an mqtts:// url")
        cert, key = issue_client_certificate(site.client_ca[0].read_bytes(),
                                             site.client_ca[1].read_bytes(), creds.gateway_id)
    passwd = mosquitto_password_line(creds.username, creds.password)
    acl = acl_lines(creds.username, creds.gateway_id)
    files: dict[str, tuple[bytes, int]] = {
        "mosquitto.passwd": ((passwd + "\n").encode(), 0o600),
        "mosquitto.acl": (("\n".join(acl) + "\n").encode(), 0o644)}
    if kind == "firmware":
        cfg = firmware_config(site, creds, client_cert=cert, client_key=key,
                              data_dir=firmware_data_dir)
        text = json.dumps(cfg, ensure_ascii=False, separators=(",", ":"))
        files["config.json"] = (text.encode(), 0o600)
    else:
        where = config_dir or Path("/etc/firegate")
        toml = agent_config_toml(site, creds, where, client_cert=cert is not None)
        files["gateway.toml"] = (toml.encode(), 0o644)
        files["mqtt-password"] = ((creds.password + "\n").encode(), 0o600)
        if site.ca_pem is not None:
            files["ca.crt"] = (site.ca_pem.encode(), 0o644)
    if cert is not None and key is not None:
        files["client.crt"] = (cert, 0o644)
        files["client.key"] = (key, 0o600)
    return Provisioned(kind, creds, files, passwd, acl)
