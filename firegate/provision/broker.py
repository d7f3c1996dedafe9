"""The broker's side of a site: the Mosquitto 2.0 configuration fragment and the collector's user.

:func:`broker_config` is the text of ``mosquitto-firegate.conf`` (for ``/etc/mosquitto/conf.d/``),
every setting commented with why. Three of them carry the issue 14 part 4 findings, measured
with Mosquitto 2.0.11 (docs/collector.md, "The broker"):

* ``use_username_as_clientid true`` **after** the ``listener`` line. It is a listener option
  whatever ``per_listener_settings`` says: written before the first ``listener`` it silently
  binds nothing (the client id stays the one the client chose). Without it, a gateway's
  credentials can connect with the collector's client id and a clean start, and the
  collector's persistent session - and every fire alarm queued in it - is gone.
* the collector's queue: a per-client limit (``max_queued_messages``, 1000 by default, or
  ``max_queued_bytes``) drops what exceeds it *silently*: the gateway still gets PUBACK 0x00
  and deletes its records. So no count limit, a byte limit sized for the longest collector
  outage, and ``$SYS/broker/publish/messages/dropped`` watched.
* ``autosave_interval``: a broker crash loses what it acknowledged since its last save. Each
  save writes the whole store and blocks the broker meanwhile (~0.25 s per 64 MB here), so
  the interval and the queue bound are chosen together.

:func:`collector_credentials` and :func:`collector_acl_lines` give a collector its own user
(``firegate-collector-<id>``, which is also its client id): it reads ``firegate/v1/#`` and
writes only the downward channels (``cmd``, ``stored``) of every gateway.

Pure: nothing here writes a file.
"""

from __future__ import annotations

import ipaddress
import re
import secrets

from common.config import ConfigError
from protocols.wire import CHANNELS, MAX_PAYLOAD_BYTES, Direction
from protocols.wire.topics import PREFIX

from .credentials import COLLECTOR_USER_PREFIX, Credentials
from .site import SiteConfig

__all__ = ["AUTOSAVE_INTERVAL_S", "BROKER_CONFIG_NAME", "DEFAULT_COLLECTOR_ID",
           "MAX_QUEUED_BYTES", "BrokerPaths", "broker_config", "collector_acl_lines",
           "collector_credentials"]

BROKER_CONFIG_NAME = "mosquitto-firegate.conf"
DEFAULT_COLLECTOR_ID = "collector-1"  # collector/config.py: [collector] id
MAX_QUEUED_BYTES = 256 * 1024 * 1024
"""Per client (so per collector session). Measured: saving a 256 MB store takes ~0.7 s."""
AUTOSAVE_INTERVAL_S = 1
_COLLECTOR_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # collector/config.py ID_PATTERN


def collector_credentials(collector_id: str = DEFAULT_COLLECTOR_ID) -> Credentials:
    """A collector's MQTT user ``firegate-collector-<collector_id>`` (the collector's default
    ``[mqtt] client_id`` for ``[collector] id = collector_id``) and a random password. Its
    ``gateway_id`` field holds the user name too (a collector has no gateway id)."""
    if re.fullmatch(_COLLECTOR_ID, collector_id) is None:
        raise ConfigError("collector.id", "must be 1-64 chars of A-Z a-z 0-9 _ . -, starting "
                                          f"with a letter or digit, got {collector_id!r}")
    user = COLLECTOR_USER_PREFIX + collector_id
    return Credentials(user, user, secrets.token_urlsafe(24))


def collector_acl_lines(username: str) -> list[str]:
    """ACL entries for a collector: it reads every gateway's topics (records, status, health,
    cmd/ack; a shared subscription ``$share/<group>/firegate/v1/...`` is allowed by the same
    read line) and writes only the downward channels (``cmd``, ``stored``) - never a
    gateway's records, so a collector's credentials cannot forge one."""
    lines = [f"user {username}", f"topic read {PREFIX}/#"]
    lines += [f"topic write {PREFIX}/+/{c.value}" for c, spec in CHANNELS.items()
              if spec.direction is Direction.DOWN]
    return lines


class BrokerPaths:
    """Where the broker's files live on the broker host (Debian's layout by default)."""

    def __init__(self, *, password_file: str = "/etc/mosquitto/firegate.passwd",
                 acl_file: str = "/etc/mosquitto/firegate.acl",
                 certfile: str = "/etc/mosquitto/certs/firegate-broker.crt",
                 keyfile: str = "/etc/mosquitto/certs/firegate-broker.key",
                 bind: str | None = None) -> None:
        for name, value in (("password_file", password_file), ("acl_file", acl_file),
                            ("certfile", certfile), ("keyfile", keyfile), ("bind", bind or "")):
            if any(ch in value for ch in "\n\r\0"):
                raise ValueError(f"{name}: a Mosquitto config value cannot hold a line break")
        self.password_file = password_file
        self.acl_file = acl_file
        self.certfile = certfile
        self.keyfile = keyfile
        self.bind = bind


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def broker_config(site: SiteConfig, paths: BrokerPaths | None = None, *,
                  max_queued_bytes: int = MAX_QUEUED_BYTES,
                  autosave_interval_s: int = AUTOSAVE_INTERVAL_S) -> str:
    """The Mosquitto 2.0 configuration fragment for ``site``: authentication, the ACL,
    persistence and the collector's queue, and one listener on the site's broker port
    (``[uplink] url``; TLS for ``mqtts://``) binding each client id to its user."""
    p = paths or BrokerPaths()
    if max_queued_bytes < 0 or autosave_interval_s < 1:
        raise ValueError("max_queued_bytes >= 0 and autosave_interval_s >= 1")
    u = site.uplink
    listener = f"listener {u.port}" + (f" {p.bind}" if p.bind else "")
    lines = [
        f"# firegate: Mosquitto 2.0 settings for site {site.site}, by `firegate provision`.",
        "# Install as /etc/mosquitto/conf.d/firegate.conf (Debian's mosquitto.conf includes",
        "# conf.d and sets persistence_location), then RESTART mosquitto: the setting",
        "# use_username_as_clientid is not re-read on reload. Why each setting:",
        "# docs/collector.md, \"The broker\".",
        "",
        "# The password and ACL files below apply to every listener.",
        "per_listener_settings false",
        "# Every gateway and every collector logs in with its own user.",
        "allow_anonymous false",
        "# One line per gateway and per collector: the mosquitto.passwd lines `firegate provision`",
        "# writes. Mosquitto reads it after dropping to its user: root:mosquitto 0640.",
        f"password_file {p.password_file}",
        "# One block per gateway and per collector (the mosquitto.acl lines): a gateway writes",
        "# only its own records, status, health and cmd/ack and reads only its own cmd and",
        "# stored; a collector reads firegate/v1/# and writes only cmd and stored.",
        f"acl_file {p.acl_file}",
        "",
        "# The collector's persistent session (its subscriptions and the messages queued for it)",
        "# and the gateways' retained status survive a broker restart, in mosquitto.db.",
        "persistence true",
        "# A crash (kill -9, power cut) loses what the broker acknowledged since its last save:",
        "# the gateways have deleted those records. Each save writes the whole store and blocks",
        "# the broker meanwhile (measured, 2.0.11: ~0.25 s for 64 MB queued, ~0.7 s for 256 MB),",
        "# so raise it together with max_queued_bytes (x the number of collectors).",
        f"autosave_interval {autosave_interval_s}",
        "autosave_on_changes false",
        "",
        "# The queue per client, i.e. what waits for a collector that is away or slow. Messages",
        "# beyond a limit are dropped SILENTLY: the gateway still gets PUBACK 0x00 (Success) and",
        "# deletes its records (measured, 2.0.11); only the broker log (\"Outgoing messages are",
        "# being dropped for client ...\"), $SYS/broker/publish/messages/dropped and the",
        "# collector's gap ledger show it. So no count limit (the default is 1000 messages,",
        "# of 100 bytes or of 128 KiB alike) and a byte limit sized as: the fleet's bytes/s x",
        "# the longest collector outage you accept, within the broker's RAM (every queued",
        "# message is held in memory). Do not use memory_limit as the bound: at the limit it",
        "# also disconnects the returning collector before its backlog drains (measured).",
        "max_queued_messages 0",
        f"max_queued_bytes {max_queued_bytes}",
        "# The contract's largest payload (protocols.wire MAX_PAYLOAD_BYTES): a larger publish",
        "# is refused to its gateway (PUBACK 0x95) instead of vanishing at the collector.",
        f"message_size_limit {MAX_PAYLOAD_BYTES}",
        "",
        f"# Gateways and collectors connect here ({u.url}).",
        listener,
    ]
    if u.tls:
        lines += [
            "# The broker's certificate (a chain the gateways' ca.crt verifies) and its key",
            "# (root:mosquitto 0640).",
            f"certfile {p.certfile}",
            f"keyfile {p.keyfile}",
            "# Client certificates from the site CA are optional here (gateways log in with",
            "# their password). For certificate-only logins set cafile to the site CA,",
            "# require_certificate true and use_identity_as_username true (the CN is the user).",
            "require_certificate false",
        ]
    elif not _loopback(u.host):
        lines += [
            "# WARNING: plaintext MQTT: passwords cross the network readable. Use mqtts:// in",
            "# the site file unless this network is private (a VPN).",
        ]
    lines += [
        "# The client id is the user name, whatever the client sends: no gateway can take",
        "# another's id or a collector's (a clean start with a collector's id would delete its",
        "# session and the fire alarms queued in it). It is a LISTENER option: it must come",
        "# after the listener line (written before the first listener it binds nothing), and",
        "# every other listener that gateways can reach needs it too.",
        "use_username_as_clientid true",
    ]
    return "\n".join(lines) + "\n"
