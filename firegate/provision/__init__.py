"""Gateway provisioning: from a site file to a gateway's config, credentials and broker entries.

An installer describes a gateway once in a **site file** (TOML, commented sample
``firmware/site.example.toml``): the site, the broker (the agent's own ``[uplink]`` keys), Wi-Fi
for an ESP32, and the sensors with the agent's own ``[[modbus]]``, ``[modbus_profiles.*]`` and
``[[rule]]`` tables, validated by the agent's validators (every error names its key).
:func:`provision` turns it into one gateway:

* a gateway id (given, or ``<prefix>-<6 hex digits>``) and per-gateway MQTT credentials (user
  name = gateway id, a random password), optionally a client certificate from a site CA;
* for an ESP32 (``kind="firmware"``) the device's ``config.json``: register maps resolved from
  :mod:`protocols.registers` into the table the firmware reads (so the two cannot drift), rules
  resolved per point with the agent's first match (``edge.config.rules.first_match``), the
  broker CA inline;
* for a Raspberry Pi (``kind="agent"``) the agent's TOML config;
* the broker side: a ``mosquitto_passwd`` line (PBKDF2-SHA512, the ``$7$`` format of Mosquitto
  2.0) and ACL lines that let the gateway publish only under ``firegate/v1/<id>/`` and read only
  its ``cmd`` topic, so a provisioned gateway can publish only as itself.

One module per concern: :mod:`.site` (the site file), :mod:`.credentials` (id, password,
certificate, the broker's lines), :mod:`.firmware` (``config.json``), :mod:`.agent`
(``gateway.toml``), :mod:`.gateway` (one run). Pure: nothing here writes a file;
:mod:`firegate.cli.provision` does, and installs the systemd unit.
"""

from .agent import agent_config, agent_config_toml
from .credentials import (
    PBKDF2_ITERATIONS,
    Credentials,
    acl_lines,
    issue_client_certificate,
    mosquitto_password_line,
    new_credentials,
)
from .firmware import (
    FIRMWARE_CONFIG_FORMAT,
    FIRMWARE_POINT_FIELDS,
    FIRMWARE_QUANTITIES,
    firmware_config,
    firmware_device,
)
from .gateway import Kind, Provisioned, provision
from .site import FirmwareSettings, SiteConfig, load_site, parse_site

__all__ = [
    "FIRMWARE_CONFIG_FORMAT",
    "FIRMWARE_POINT_FIELDS",
    "FIRMWARE_QUANTITIES",
    "PBKDF2_ITERATIONS",
    "Credentials",
    "FirmwareSettings",
    "Kind",
    "Provisioned",
    "SiteConfig",
    "acl_lines",
    "agent_config",
    "agent_config_toml",
    "firmware_config",
    "firmware_device",
    "issue_client_certificate",
    "load_site",
    "mosquitto_password_line",
    "new_credentials",
    "parse_site",
    "provision",
]
