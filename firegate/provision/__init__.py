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
  2.0) and ACL lines that let the gateway publish only its own channels under
  ``firegate/v1/<id>/`` and read only its ``cmd`` and ``stored`` topics, so a provisioned
  gateway can publish only as itself; and the broker's configuration fragment
  (``mosquitto-firegate.conf``: ``use_username_as_clientid`` on the listener, so no client can
  take another's client id, persistence, the collector's queue; :mod:`.broker`).

:func:`provision_collector` gives a collector its own MQTT user (``firegate-collector-<id>``),
its ACL (reads ``firegate/v1/#``, writes ``cmd`` and ``stored``) and password file.

One module per concern: :mod:`.site` (the site file), :mod:`.credentials` (id, password,
certificate, the broker's lines), :mod:`.broker` (the broker's configuration, the collector's
user), :mod:`.firmware` (``config.json``), :mod:`.agent` (``gateway.toml``), :mod:`.gateway`
(one run). Pure: nothing here writes a file;
:mod:`firegate.cli.provision` does, and installs the systemd unit.
"""

from .agent import agent_config, agent_config_toml
from .broker import (
    AUTOSAVE_INTERVAL_S,
    BROKER_CONFIG_NAME,
    DEFAULT_COLLECTOR_ID,
    MAX_QUEUED_BYTES,
    BrokerPaths,
    broker_config,
    collector_acl_lines,
    collector_credentials,
)
from .credentials import (
    COLLECTOR_USER_PREFIX,
    PBKDF2_ITERATIONS,
    Credentials,
    acl_lines,
    issue_client_certificate,
    mosquitto_password_line,
    new_credentials,
)
from .firmware import (
    FIRMWARE_CONFIG_FORMAT,
    FIRMWARE_CONTACT_FIELDS,
    FIRMWARE_EVENT_TYPES,
    FIRMWARE_POINT_FIELDS,
    FIRMWARE_QUANTITIES,
    firmware_config,
    firmware_device,
)
from .gateway import SERVICE_READABLE, Kind, Provisioned, provision, provision_collector
from .site import FirmwareSettings, SiteConfig, load_site, parse_site

__all__ = [
    "AUTOSAVE_INTERVAL_S",
    "BROKER_CONFIG_NAME",
    "COLLECTOR_USER_PREFIX",
    "DEFAULT_COLLECTOR_ID",
    "FIRMWARE_CONFIG_FORMAT",
    "FIRMWARE_CONTACT_FIELDS",
    "FIRMWARE_EVENT_TYPES",
    "FIRMWARE_POINT_FIELDS",
    "FIRMWARE_QUANTITIES",
    "MAX_QUEUED_BYTES",
    "PBKDF2_ITERATIONS",
    "SERVICE_READABLE",
    "BrokerPaths",
    "Credentials",
    "FirmwareSettings",
    "Kind",
    "Provisioned",
    "SiteConfig",
    "acl_lines",
    "agent_config",
    "agent_config_toml",
    "broker_config",
    "collector_acl_lines",
    "collector_credentials",
    "firmware_config",
    "firmware_device",
    "issue_client_certificate",
    "load_site",
    "mosquitto_password_line",
    "new_credentials",
    "parse_site",
    "provision",
    "provision_collector",
]
