"""One provisioning run: one gateway's (or one collector's) files and the broker's entries.

File modes: a secret only the installer handles (``config.json`` for flashing, the broker's
password line, the collector's password) is 0600; a secret the agent's service user reads
(``gateway.toml`` - it may hold BLE bind keys inline -, ``mqtt-password``, ``client.key``) is
0640, for ``root:<service group>`` (``firegate provision --group``, default ``firegate``, the
``Group=`` of edge/firegate-agent.service); the rest is 0644.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.config import ConfigError

from .agent import agent_config_toml
from .broker import (
    BROKER_CONFIG_NAME,
    BrokerPaths,
    broker_config,
    collector_acl_lines,
    collector_credentials,
)
from .credentials import (
    Credentials,
    acl_lines,
    issue_client_certificate,
    mosquitto_password_line,
    new_credentials,
)
from .firmware import firmware_config
from .site import SiteConfig

__all__ = ["SERVICE_READABLE", "Kind", "Provisioned", "provision", "provision_collector"]

Kind = Literal["agent", "firmware", "collector"]
SERVICE_READABLE = 0o640
"""The mode of a secret the agent's service user reads: owner root, group the service's."""


@dataclass(frozen=True, slots=True)
class Provisioned:
    """Everything one provisioning run produced. ``files`` maps a file name to its content and
    mode (:data:`SERVICE_READABLE` for the service group, module docstring);
    ``passwd_line`` and ``acl`` go to the broker, with ``mosquitto-firegate.conf`` once per
    broker. For a collector, ``credentials.gateway_id`` is its MQTT user name."""

    kind: Kind
    credentials: Credentials
    files: dict[str, tuple[bytes, int]]
    passwd_line: str = field(repr=False)
    acl: list[str] = field(default_factory=list)


def provision(site: SiteConfig, kind: Kind, *, gateway_id: str | None = None,
              credentials: Credentials | None = None, client_cert: bool = False,
              config_dir: Path | None = None, firmware_data_dir: str | None = None,
              broker_paths: BrokerPaths | None = None) -> Provisioned:
    """Provision one gateway of ``site`` (with ``credentials``, or new ones for ``gateway_id``).
    ``config_dir``: where the agent's files will live on the gateway (its config refers to them
    there; default ``/etc/firegate``)."""
    if kind == "collector":
        raise ValueError("a collector is provisioned by provision_collector()")
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
    files = _broker_files(site, passwd, acl, broker_paths)
    if kind == "firmware":
        cfg = firmware_config(site, creds, client_cert=cert, client_key=key,
                              data_dir=firmware_data_dir)
        text = json.dumps(cfg, ensure_ascii=False, separators=(",", ":"))
        files["config.json"] = (text.encode(), 0o600)
    else:
        where = config_dir or Path("/etc/firegate")
        toml = agent_config_toml(site, creds, where, client_cert=cert is not None)
        # inline BLE bind keys may be in it; the agent (User=firegate) reads both
        files["gateway.toml"] = (toml.encode(), SERVICE_READABLE)
        files["mqtt-password"] = ((creds.password + "\n").encode(), SERVICE_READABLE)
        if site.ca_pem is not None:
            files["ca.crt"] = (site.ca_pem.encode(), 0o644)
    if cert is not None and key is not None:
        files["client.crt"] = (cert, 0o644)
        # the agent reads it; the ESP32's copy goes to flash with config.json
        files["client.key"] = (key, SERVICE_READABLE if kind == "agent" else 0o600)
    return Provisioned(kind, creds, files, passwd, acl)


def provision_collector(site: SiteConfig, collector_id: str | None = None, *,
                        broker_paths: BrokerPaths | None = None) -> Provisioned:
    """A collector's own MQTT user (:func:`~.broker.collector_credentials`), its ACL (reads
    ``firegate/v1/#``, writes ``cmd`` and ``stored``), its password file (``mqtt-password``,
    for ``[mqtt] password_file``) and the broker's configuration fragment."""
    creds = collector_credentials(collector_id) if collector_id else collector_credentials()
    passwd = mosquitto_password_line(creds.username, creds.password)
    acl = collector_acl_lines(creds.username)
    files = _broker_files(site, passwd, acl, broker_paths)
    files["mqtt-password"] = ((creds.password + "\n").encode(), 0o600)
    return Provisioned("collector", creds, files, passwd, acl)


def _broker_files(site: SiteConfig, passwd: str, acl: list[str],
                  paths: BrokerPaths | None) -> dict[str, tuple[bytes, int]]:
    return {"mosquitto.passwd": ((passwd + "\n").encode(), 0o600),
            "mosquitto.acl": (("\n".join(acl) + "\n").encode(), 0o644),
            BROKER_CONFIG_NAME: (broker_config(site, paths).encode(), 0o644)}
