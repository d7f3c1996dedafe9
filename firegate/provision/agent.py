"""A Raspberry Pi's agent config (``gateway.toml``), as data and as TOML text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firegate.toml_text import dumps_toml

from .credentials import Credentials
from .site import SiteConfig

__all__ = ["agent_config", "agent_config_toml"]

# Sections handed unchanged to the agent's config (the agent validates them again at start).
_AGENT_PASSTHROUGH = ("outbox", "state", "panel", "modbus", "modbus_profiles", "ble", "rule")


def agent_config(site: SiteConfig, creds: Credentials, config_dir: Path, *,
                 client_cert: bool = False) -> dict[str, Any]:
    """The agent's TOML config as data: ``[gateway]`` (id, site, data_dir), ``[uplink]`` (the
    site's keys plus ``username``, ``password_file``, ``ca_file``, ``cert_file``,
    ``key_file`` in ``config_dir``) and the site's driver and rule sections unchanged."""
    uplink = dict(site.uplink_raw)
    uplink["username"] = creds.username
    uplink["password_file"] = str(config_dir / "mqtt-password")
    if site.ca_pem is not None:
        uplink["ca_file"] = str(config_dir / "ca.crt")
    if client_cert:
        uplink["cert_file"] = str(config_dir / "client.crt")
        uplink["key_file"] = str(config_dir / "client.key")
    out: dict[str, Any] = {
        "gateway": {"id": creds.gateway_id, "site": site.site, "data_dir": site.agent_data_dir},
        "uplink": uplink}
    for key in _AGENT_PASSTHROUGH:
        if key in site.raw:
            out[key] = site.raw[key]
    return out


def agent_config_toml(site: SiteConfig, creds: Credentials, config_dir: Path, *,
                      client_cert: bool = False) -> str:
    """:func:`agent_config` as the text of ``gateway.toml``, headed by a comment saying which
    gateway it is for and what wrote it."""
    data = agent_config(site, creds, config_dir, client_cert=client_cert)
    header = (f"firegate agent config for gateway {creds.gateway_id} (site {site.site}),\n"
              f"written by `firegate provision --kind agent`. Reference: "
              f"edge/gateway.example.toml")
    return dumps_toml(data, header)
