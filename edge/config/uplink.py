"""``[uplink]``: the MQTT connection from the gateway to the broker (the cloud's front door).

One broker URL, the MQTT version, credentials, TLS files, timers and the send window. QoS is
not a setting: the contract sends everything at QoS 1 (at-least-once; the collector drops
duplicates by ``(gateway, seq)``), and QoS 0 would lose records silently. A password goes only
over TLS or to loopback unless ``allow_plaintext = true`` says the risk is accepted, and never
inside the URL (which is logged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

from common.config import Table
from protocols.wire import MAX_RECORDS_PER_BATCH

__all__ = ["DeleteOn", "MqttProtocol", "UplinkConfig", "parse_uplink"]

_DEFAULT_PORT = {"mqtt": 1883, "mqtts": 8883}
_URL_HINT = "mqtt://host[:port] or mqtts://host[:port]"


class MqttProtocol(Enum):
    """MQTT version. 5 sees a refused publish (PUBACK reason >= 0x80); 3.1.1 cannot."""

    V5 = "5"
    V311 = "3.1.1"


class DeleteOn(Enum):
    """When a record leaves the outbox (docs/uplink.md, "Delivered means stored")."""

    STORED = "stored"
    """When a firegate collector confirms it stored it (channel ``stored``)."""
    PUBACK = "puback"
    """At the broker's PUBACK: for a broker without a firegate collector; what the broker
    acknowledged and loses (a crash before its next save) is lost."""


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    """How the gateway reaches its broker. Build it with :func:`parse_uplink`."""

    host: str
    """Broker host name or address (from ``url``)."""
    port: int = 1883
    """Broker port (from ``url``; 1883 for ``mqtt://``, 8883 for ``mqtts://``)."""
    tls: bool = False
    """``mqtts://``: TLS with certificate and host-name checks."""
    protocol: MqttProtocol = MqttProtocol.V5
    client_id: str | None = None
    """MQTT client id; None means the gateway id (one session per gateway, so a stale
    connection of the same gateway is taken over, not duplicated)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    """CA bundle to verify the broker with; None uses the system's trust store."""
    cert_file: Path | None = None
    """Client certificate (PEM) for brokers that authenticate gateways by certificate."""
    key_file: Path | None = None
    tls_insecure: bool = False
    """Skip the host-name check (the chain is still verified). For lab brokers only."""
    keepalive_s: int = 30
    """MQTT keepalive; a silent link is noticed after about two of these."""
    connect_timeout_s: float = 10.0
    """Longest wait for TCP, TLS and the CONNACK of one attempt."""
    reconnect_min_s: float = 1.0
    """First back-off delay after a failed or lost connection (jittered, doubling)."""
    reconnect_max_s: float = 60.0
    """Longest back-off delay."""
    batch_max_records: int = 1000
    """Records per MQTT message at most (the 128 KiB payload limit also applies)."""
    max_inflight: int = 16
    """Record messages sent and not yet acknowledged; one more is kept for fire alarms."""
    health_interval_s: float = 60.0
    """How often the health report is published (and on every connect)."""
    linger_s: float = 1.0
    """When only a few readings are pending, how long the uplink may wait for more to fill
    a message (0: never). Events and fire alarms end the wait at once."""
    delete_on: DeleteOn = DeleteOn.STORED
    """When records leave the outbox: the collector's confirmation, or the PUBACK."""
    confirm_timeout_s: float = 60.0
    """A record the broker acknowledged and no collector confirmed within this long is sent
    again (``delete_on = "stored"``)."""

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def effective_client_id(self, gateway_id: str) -> str:
        return self.client_id if self.client_id is not None else gateway_id


def parse_uplink(t: Table) -> UplinkConfig:
    """Read ``[uplink]``; every error names its key (``uplink.url: ...``)."""
    url = t.text("url", max_len=512)
    host, port, tls = _parse_url(t, url)
    protocol = t.choice("protocol", MqttProtocol, MqttProtocol.V5)
    client_id = t.opt_text("client_id", pattern=r"[!-~]{1,128}",
                           hint="1-128 printable ASCII characters without spaces")
    username = t.opt_text("username", max_len=256)
    password = t.secret("password")
    if password is not None and username is None:
        t.fail("password", "needs username (MQTT 3.1.1 sends no password without a user name)")
    # A user name alone is no secret; a client certificate needs mqtts:// anyway.
    t.refuse_plaintext("url", url, "password", password)
    ca_file = t.path_value("ca_file", None, must_exist=True)
    cert_file = t.path_value("cert_file", None, must_exist=True)
    key_file = t.path_value("key_file", None, must_exist=True)
    tls_insecure = t.flag("tls_insecure", False)
    if not tls:
        for key, value in (("ca_file", ca_file), ("cert_file", cert_file),
                           ("key_file", key_file), ("tls_insecure", tls_insecure or None)):
            if value is not None:
                t.fail(key, "applies only to an mqtts:// url")
    if (cert_file is None) != (key_file is None):
        t.fail("key_file" if key_file is None else "cert_file",
               "cert_file and key_file go together")
    keepalive_s = t.integer("keepalive_s", 30, min=5, max=65_535)
    connect_timeout_s = t.number("connect_timeout_s", 10.0, min=1.0, max=300.0)
    reconnect_min_s = t.number("reconnect_min_s", 1.0, min=0.1, max=3600.0)
    reconnect_max_s = t.number("reconnect_max_s", 60.0, min=0.1, max=3600.0)
    if reconnect_max_s < reconnect_min_s:
        t.fail("reconnect_max_s",
               f"must be at least reconnect_min_s ({reconnect_min_s:g}), got {reconnect_max_s:g}")
    batch_max_records = t.integer("batch_max_records", 1000, min=1, max=MAX_RECORDS_PER_BATCH)
    max_inflight = t.integer("max_inflight", 16, min=1, max=256)
    health_interval_s = t.number("health_interval_s", 60.0, min=1.0, max=86_400.0)
    linger_ms = t.integer("linger_ms", 1000, min=0, max=60_000)
    delete_on = t.choice("delete_on", DeleteOn, DeleteOn.STORED)
    confirm_timeout_s = t.number("confirm_timeout_s", 60.0, min=5.0, max=3600.0)
    if delete_on is DeleteOn.PUBACK and t.has("confirm_timeout_s"):
        t.fail("confirm_timeout_s", 'applies only to delete_on = "stored"')
    if t.has("qos"):
        t.fail("qos", "is not configurable: the contract sends everything at QoS 1 "
                      "(QoS 0 would lose records)")
    t.finish()
    return UplinkConfig(
        host, port, tls, protocol, client_id, username, password, ca_file, cert_file, key_file,
        tls_insecure, keepalive_s, connect_timeout_s, reconnect_min_s, reconnect_max_s,
        batch_max_records, max_inflight, health_interval_s, linger_ms / 1000,
        delete_on=delete_on, confirm_timeout_s=confirm_timeout_s,
    )


def _parse_url(t: Table, url: str) -> tuple[str, int, bool]:
    t.refuse_url_credentials("url", url, "username and password")  # before url is quoted
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        t.fail("url", f"must be {_URL_HINT}, got {url!r} ({e})")
    if parts.scheme not in _DEFAULT_PORT or not parts.hostname:
        t.fail("url", f"must be {_URL_HINT}, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        t.fail("url", f"must be {_URL_HINT} without a path or query, got {url!r}")
    if port == 0:
        t.fail("url", f"port must be 1-65535, got {url!r}")
    return parts.hostname, port or _DEFAULT_PORT[parts.scheme], parts.scheme == "mqtts"
