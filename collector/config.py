"""The collector's configuration: one TOML file, validated here and nowhere else.

``load_config(path)`` reads the file and checks every key with :class:`common.config.
Table`, so an error names the key (``webhook[1].url: must be an http:// or https:// URL``) and
a typo is refused rather than silently defaulted. Secrets are never empty (a webhook's HMAC key
at least 32 bytes), never inside a URL, and never sent in clear text beyond loopback without
``allow_plaintext = true``. Nothing here opens a socket or a database
(Telegraf's ``Init()`` rule): ``firegate collector run`` fails on a bad file before it connects.
The commented sample with every key and its default is ``collector/collector.example.toml``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from collector.alarms.config import AlarmsConfig, EscalationPolicy, parse_alarms, parse_escalation
from collector.api.config import HttpConfig, parse_http
from collector.points import DEFAULT_MAX_HEALTH_COUNTERS, DEFAULT_MAX_HEALTH_LINKS
from collector.sinks.config import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_SQLITE_NAME,
    MAX_POINTS_PER_WRITE,
    SinkConfig,
)
from collector.uitd.config import CentreConfig, parse_gb26875
from common.config import ConfigError, Table, read_toml
from protocols.wire import EventType

__all__ = [
    "DEFAULT_WEBHOOK_EVENTS",
    "MIN_HMAC_SECRET_BYTES",
    "NOTIFY_KINDS",
    "RECORDS_MISSING",
    "CollectorConfig",
    "ConfigError",
    "MqttConfig",
    "PipelineConfig",
    "RiskRules",
    "WebhookConfig",
    "load_config",
    "parse_config",
]

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
ID_HINT = "1-64 chars of A-Z a-z 0-9 _ . -, starting with a letter or digit"
DEFAULT_MAX_SOURCES_PER_GATEWAY = 10_000
"""Two orders of magnitude above a large building's sensors and panel components (~10**2,
docs/collector-storage.md): a gateway past it is broken or hostile, not big."""
GATEWAY_OFFLINE = "gateway_offline"
GATEWAY_ONLINE = "gateway_online"
RECORDS_MISSING = "records_missing"
"""A gateway's gap not closed within ``gap_grace_s``: records may be lost (docs/collector.md)."""
NOTIFY_KINDS: tuple[str, ...] = (*(t.value for t in EventType), GATEWAY_OFFLINE, GATEWAY_ONLINE,
                                 RECORDS_MISSING)
"""What a webhook can subscribe to: every event type of the contract, the two gateway
transitions and ``records_missing``."""
DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = (
    "fire_alarm", "fault", "supervisory", "power_fault", "mains_power_fault",
    "backup_power_fault", "bus_fault", "link_fault", "threshold_low", "threshold_high",
    "sensor_offline", "valve_off_normal", GATEWAY_OFFLINE, RECORDS_MISSING,
)
MIN_HMAC_SECRET_BYTES = 32
"""A webhook secret keys HMAC-SHA256: shorter than the hash's 32-byte output weakens it (RFC
2104 §3: "less than L bytes is strongly discouraged")."""
HMAC_SECRET_HINT = "a random 32-byte secret: `openssl rand -hex 32`"
DEFAULT_RED: frozenset[str] = frozenset({"fire_alarm"})
DEFAULT_RESET_CLEARS: frozenset[str] = frozenset({"fire_alarm", "supervisory"})
DEFAULT_YELLOW: frozenset[str] = frozenset((
    "fault", "supervisory", "power_fault", "mains_power_fault", "backup_power_fault",
    "bus_fault", "link_fault", "threshold_low", "threshold_high", "sensor_offline",
    "out_of_range", "device_error", "door_open", "disabled",
    "valve_off_normal",  # a closed supply valve (docs/modbus-contacts.md)
))


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """``[mqtt]``: the broker and the persistent session."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    client_id: str = "firegate-collector-1"
    """Fixed: the broker keeps the session (subscriptions, unacknowledged messages) under it.
    Every collector process needs its own."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    share_group: str | None = "firegate"
    session_expiry_s: int = 86_400
    receive_maximum: int = 64
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """``[collector]`` keys that shape the pipeline (see docs/collector.md)."""

    queue_size: int = 256
    group_max_messages: int = 64
    group_max_points: int = 20_000
    group_wait_ms: float = 2.0
    retry_min_s: float = 0.2
    retry_max_s: float = 30.0
    health_interval_s: float = 60.0
    offline_factor: float = 3.0
    snapshot_interval_s: float = 5.0
    gap_grace_s: float = 60.0
    report_gaps: bool = True
    """Off when several collectors split one gateway's records round-robin: each ledger then
    holds only a share (``collector status`` merges them; docs/collector.md). Also turns off
    the resend requests and the ``records_missing`` alarm, which would be wrong then."""
    resend_after_s: float = 10.0
    """A gap this old is asked for (command ``resend``): by then the fire-first reordering
    of a healthy outbox has caught up."""
    resend_every_s: float = 60.0
    """A gap still open is asked for again after this long."""
    gap_max_age_s: float = 7 * 86_400.0
    """A gap open this long is settled as lost (checked hourly): nobody can fill it any more,
    and the ledger stays small (scattered missing seqs become one interval again)."""
    max_health_counters: int = DEFAULT_MAX_HEALTH_COUNTERS
    """``fg_counter`` series (driver x reason) stored per health message; the rest is cut,
    counted, and noted on the ``fg_health`` point (``counters_cut``)."""
    max_health_links: int = DEFAULT_MAX_HEALTH_LINKS
    """``fg_link`` series stored per health message (``links_cut``)."""
    max_sources_per_gateway: int = DEFAULT_MAX_SOURCES_PER_GATEWAY
    """Distinct source ids taken from one gateway since the collector started; a record from
    a further source is cut (counted, its seq committed) unless it is fire-class."""


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One ``[[webhook]]``."""

    name: str
    url: str
    secret: str = field(repr=False)
    """HMAC-SHA256 key of ``X-Firegate-Signature``; at least :data:`MIN_HMAC_SECRET_BYTES`."""
    events: frozenset[str] = frozenset(DEFAULT_WEBHOOK_EVENTS)
    """What it is sent of its own accord; empty (``events = []``): only the escalation steps
    that name it (docs/alarms.md)."""
    restores: bool = True
    timeout_s: float = 5.0
    retry_min_s: float = 1.0
    retry_max_s: float = 300.0
    give_up_after_s: float = 86_400.0
    """A notification older than this is failed without another POST (``gave_up``)."""
    max_attempts: int = 100
    """A notification not delivered after this many POSTs is failed (``exhausted``)."""


@dataclass(frozen=True, slots=True)
class RiskRules:
    """``[risk]``: which conditions colour a site (docs/collector.md, "Risk")."""

    red_events: frozenset[str] = DEFAULT_RED
    yellow_events: frozenset[str] = DEFAULT_YELLOW
    critical_low_sources: tuple[str, ...] = ("*pressure*", "*level*")
    """``threshold_low`` from a source matching one of these (fnmatch) is water supply
    critically low: red."""
    pressure_critical_mpa: float | None = None
    """A pressure reading below this (converted to MPa) is red; None: off."""
    level_critical_m: float | None = None
    gateway_offline: str | None = "yellow"
    records_missing: str | None = "yellow"
    """The colour of a site whose gateway has a gap older than ``gap_grace_s``; None: none."""
    reset_clears: frozenset[str] = DEFAULT_RESET_CLEARS
    """A panel ``reset`` clears these conditions of the same panel (latched fire alarms)."""


UNKNOWN_GATEWAY_POLICIES = ("bind_first", "refuse", "open")


@dataclass(frozen=True, slots=True)
class GatewaySites:
    """``[gateways]``: which gateway may speak for which site (docs/collector.md, "Sites")."""

    sites: Mapping[str, str] = field(default_factory=dict)
    """Gateway id -> its site, from provisioning (inline ``sites`` and ``sites_file``)."""
    unknown: str = "bind_first"
    """A gateway not in ``sites``: ``bind_first`` takes it and binds it to the first site it
    names; ``refuse`` dead-letters everything it sends (``unknown_gateway``); ``open`` takes
    any site from anyone (a lab, never a city platform)."""

    def bound(self, gateway_id: str) -> str | None:
        return self.sites.get(gateway_id)


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """The whole file."""

    collector_id: str
    state_dir: Path
    mqtt: MqttConfig
    sink: SinkConfig
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    risk: RiskRules = field(default_factory=RiskRules)
    metrics_listen: tuple[str, int] | None = ("127.0.0.1", 9108)
    source: Path | None = None
    gateways: GatewaySites = field(default_factory=GatewaySites)
    escalation: tuple[EscalationPolicy, ...] = ()
    """``[[escalation]]`` policies (collector/alarms/config.py)."""
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    """``[alarms]``: retention of closed alarms (collector/alarms/config.py)."""
    http: HttpConfig | None = None
    """``[http]`` and ``[[user]]`` (collector/api/config.py); None: no API, no console."""
    gb26875: CentreConfig | None = None
    """``[gb26875]``: UITDs dial in, upstreams (collector/uitd/config.py); None: off."""

    @property
    def registry_path(self) -> Path:
        return self.state_dir / "registry.sqlite"

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "ledger.sqlite"

    @property
    def deadletter_path(self) -> Path:
        return self.state_dir / "deadletters.sqlite"

    @property
    def notify_path(self) -> Path:
        return self.state_dir / "notify.sqlite"

    @property
    def alarms_path(self) -> Path:
        return self.state_dir / "alarms.sqlite"


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> CollectorConfig:
    """Read and validate ``path``; ConfigError (naming the key) for anything wrong."""
    data = read_toml(path)
    config = parse_config(data, base_dir=path.resolve().parent, env=env)
    return dataclasses.replace(config, source=path)


def parse_config(data: Mapping[str, object], *, base_dir: Path | None = None,
                 env: Mapping[str, str] | None = None) -> CollectorConfig:
    """Validate an already parsed TOML document; relative paths are relative to ``base_dir``."""
    top = Table(data, base_dir=base_dir, env=env)
    section = top.table("collector") or Table({}, "collector", base_dir=top.base_dir)
    collector_id = section.text("id", "collector-1", pattern=ID_PATTERN, hint=ID_HINT)
    state_dir = section.path_value("state_dir", "firegate-collector")
    assert state_dir is not None
    pipeline = _pipeline(section)
    section.finish()
    mqtt = _mqtt(top.table("mqtt") or Table({}, "mqtt"), collector_id)
    if pipeline.queue_size < 2 * mqtt.receive_maximum:
        # The paho thread must never block on a full queue while the broker still has
        # unacknowledged messages it is allowed to send (its receive maximum).
        raise ConfigError("collector.queue_size",
                          f"must be at least 2 x mqtt.receive_maximum ({2 * mqtt.receive_maximum}),"
                          f" got {pipeline.queue_size}")
    sink = _sink(top.table("influx"), top.table("store"), state_dir, top.base_dir)
    webhooks = tuple(_webhook(t, i) for i, t in enumerate(top.tables("webhook")))
    names = [w.name for w in webhooks]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"webhook[{i}].name", f"{name!r} is used twice")
    risk = _risk(top.table("risk"))
    metrics = _metrics(top.table("metrics"))
    gateways = _gateways(top.table("gateways"))
    escalation = parse_escalation(top.tables("escalation"), webhook_names=names)
    alarms = parse_alarms(top.table("alarms"))
    http = parse_http(top.table("http"), top.tables("user"))
    gb26875 = parse_gb26875(top.table("gb26875"))
    top.finish()
    return CollectorConfig(collector_id, state_dir, mqtt, sink, pipeline, webhooks, risk,
                           metrics, gateways=gateways, escalation=escalation, alarms=alarms,
                           http=http,
                           gb26875=gb26875)


def _gateways(t: Table | None) -> GatewaySites:
    if t is None:
        return GatewaySites()
    unknown = t.one_of("unknown", UNKNOWN_GATEWAY_POLICIES, "bind_first")
    sites: dict[str, str] = {}
    path = t.path_value("sites_file", None, must_exist=True)
    if path is not None:
        try:
            doc = read_toml(path)
        except ConfigError as e:
            t.fail("sites_file", e.message)
        listed = Table(doc, f"{path.name}")
        inner = listed.table("sites")
        if inner is not None:
            sites.update(_site_map(inner))
        listed.finish()
    inline = t.table("sites")
    if inline is not None:
        sites.update(_site_map(inline))
    t.finish()
    return GatewaySites(sites, unknown)


def _site_map(t: Table) -> dict[str, str]:
    out = {}
    for gateway in list(t.data):
        if re.fullmatch(ID_PATTERN, gateway) is None:
            t.fail(gateway, f"a gateway id must be {ID_HINT}")
        out[gateway] = t.text(gateway, pattern=ID_PATTERN, hint=ID_HINT)
    t.finish()
    return out


def _pipeline(t: Table) -> PipelineConfig:
    return PipelineConfig(
        queue_size=t.integer("queue_size", 256, min=8, max=100_000),
        group_max_messages=t.integer("group_max_messages", 64, min=1, max=10_000),
        group_max_points=t.integer("group_max_points", 20_000, min=1, max=1_000_000),
        group_wait_ms=t.number("group_wait_ms", 2.0, min=0.0, max=1000.0),
        retry_min_s=t.number("retry_min_s", 0.2, above=0.0, max=60.0),
        retry_max_s=t.number("retry_max_s", 30.0, above=0.0, max=3600.0),
        health_interval_s=t.number("health_interval_s", 60.0, above=0.0),
        offline_factor=t.number("offline_factor", 3.0, min=1.0, max=100.0),
        snapshot_interval_s=t.number("snapshot_interval_s", 5.0, min=0.1, max=3600.0),
        gap_grace_s=t.number("gap_grace_s", 60.0, min=0.0),
        report_gaps=t.flag("report_gaps", True),
        resend_after_s=t.number("resend_after_s", 10.0, min=0.0, max=86_400.0),
        resend_every_s=t.number("resend_every_s", 60.0, min=1.0, max=86_400.0),
        gap_max_age_s=t.number("gap_max_age_s", 7 * 86_400.0, min=60.0),
        max_health_counters=t.integer("max_health_counters", DEFAULT_MAX_HEALTH_COUNTERS,
                                      min=0, max=100_000),
        max_health_links=t.integer("max_health_links", DEFAULT_MAX_HEALTH_LINKS, min=0,
                                   max=100_000),
        max_sources_per_gateway=t.integer("max_sources_per_gateway",
                                          DEFAULT_MAX_SOURCES_PER_GATEWAY, min=1,
                                          max=10_000_000),
    )


def _mqtt(t: Table, collector_id: str) -> MqttConfig:
    url = t.text("url", "mqtt://127.0.0.1:1883")
    t.refuse_url_credentials("url", url, "username and password")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
        t.fail("url", f"must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
    try:
        port = parts.port
    except ValueError:
        t.fail("url", f"bad port in {url!r}")
    tls = parts.scheme == "mqtts"
    share = t.text("share_group", "firegate", min_len=0)
    if share and re.fullmatch(ID_PATTERN, share) is None:
        t.fail("share_group", f"must be {ID_HINT} (or \"\" for no shared subscription)")
    cert_file = t.path_value("cert_file", None, must_exist=True)
    key_file = t.path_value("key_file", None, must_exist=True)
    if (cert_file is None) != (key_file is None):
        t.fail("cert_file", "cert_file and key_file go together")
    ca_file = t.path_value("ca_file", None, must_exist=True)
    if not tls and (ca_file or cert_file):
        t.fail("ca_file" if ca_file else "cert_file", f"needs an mqtts:// url, got {url!r}")
    mqtt = MqttConfig(
        host=parts.hostname or "", port=port or (8883 if tls else 1883), tls=tls,
        client_id=t.text("client_id", f"firegate-collector-{collector_id}", max_len=128),
        username=t.opt_text("username", max_len=256),
        password=t.secret("password"),
        ca_file=ca_file, cert_file=cert_file, key_file=key_file,
        share_group=share or None,
        session_expiry_s=t.integer("session_expiry_s", 86_400, min=60, max=0xFFFF_FFFE),
        receive_maximum=t.integer("receive_maximum", 64, min=1, max=65_535),
        keepalive_s=t.integer("keepalive_s", 30, min=5, max=65_535),
        reconnect_min_s=t.integer("reconnect_min_s", 1, min=1, max=60),
        reconnect_max_s=t.integer("reconnect_max_s", 30, min=1, max=3600),
    )
    if mqtt.password is not None and mqtt.username is None:
        t.fail("password", "a password needs a username")
    t.refuse_plaintext("url", url, "password", mqtt.password)
    t.finish()
    return mqtt


def _sink(influx: Table | None, store: Table | None, state_dir: Path,
          base_dir: Path) -> SinkConfig:
    store = store or Table({}, "store", base_dir=base_dir)
    sqlite_path = store.path_value("sqlite", str(state_dir / DEFAULT_SQLITE_NAME))
    assert sqlite_path is not None
    max_points = store.integer("max_points_per_write", MAX_POINTS_PER_WRITE, min=1,
                               max=MAX_POINTS_PER_WRITE)
    # The embedded store's own; an InfluxDB bucket's retention is set on the bucket.
    retention = store.integer("retention_days", DEFAULT_RETENTION_DAYS, min=0, max=36_500)
    store.finish()
    if influx is None:
        return SinkConfig(influx_url=None, sqlite_path=sqlite_path,
                          max_points_per_write=max_points, retention_days=retention)
    url = influx.opt_text("url")
    if url is not None:
        influx.refuse_url_credentials("url", url, 'token (InfluxDB 1.8: token = "user:password")')
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            influx.fail("url", f"must be an http:// or https:// URL, got {url!r}")
    token = influx.secret("token")
    influx.refuse_plaintext("url", url or "", "token", token)
    config = SinkConfig(
        influx_url=url, token=token,
        org=influx.text("org", "firegate", min_len=0), bucket=influx.text("bucket", "firegate"),
        timeout_s=influx.number("timeout_s", 10.0, above=0.0, max=600.0),
        sqlite_path=sqlite_path, max_points_per_write=max_points, retention_days=retention,
        ca_file=influx.path_value("ca_file", None, must_exist=True),
        verify_ssl=influx.flag("verify_ssl", True))
    influx.finish()
    return config


def _webhook(t: Table, index: int) -> WebhookConfig:
    url = t.text("url")
    t.refuse_url_credentials("url", url, "secret (the receiver checks the X-Firegate-Signature "
                                         "HMAC)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        t.fail("url", f"must be an http:// or https:// URL, got {url!r}")
    try:
        _ = parts.port  # raises ValueError for a bad one
    except ValueError:
        t.fail("url", f"bad port in {url!r}")
    secret = t.secret("secret", min_bytes=MIN_HMAC_SECRET_BYTES, hint=HMAC_SECRET_HINT)
    if secret is None:
        t.fail("secret", "is required (secret, secret_file or secret_env): receivers check "
                         "the X-Firegate-Signature HMAC with it")
    events = t.texts("events", list(DEFAULT_WEBHOOK_EVENTS))
    if events == ["*"]:
        events = list(NOTIFY_KINDS)
    for e in events:
        if e not in NOTIFY_KINDS:
            t.fail("events", f"{e!r} is not one of {', '.join(NOTIFY_KINDS)} (or [\"*\"])")
    hook = WebhookConfig(
        name=t.text("name", f"webhook-{index + 1}", pattern=ID_PATTERN, hint=ID_HINT),
        url=url, secret=secret, events=frozenset(events),
        restores=t.flag("restores", True),
        timeout_s=t.number("timeout_s", 5.0, above=0.0, max=120.0),
        retry_min_s=t.number("retry_min_s", 1.0, above=0.0, max=3600.0),
        retry_max_s=t.number("retry_max_s", 300.0, above=0.0, max=86_400.0),
        give_up_after_s=t.number("give_up_after_s", 86_400.0, above=0.0),
        max_attempts=t.integer("max_attempts", 100, min=1, max=1_000_000),
    )
    t.finish()
    return hook


def _risk(t: Table | None) -> RiskRules:
    if t is None:
        return RiskRules()
    kinds = [k.value for k in EventType]

    def events(key: str, default: frozenset[str]) -> frozenset[str]:
        values = t.texts(key, sorted(default))
        for v in values:
            if v not in kinds:
                t.fail(key, f"{v!r} is not an event type ({', '.join(kinds)})")
        return frozenset(values)

    offline = t.one_of("gateway_offline", ("yellow", "red", "none"), "yellow")
    missing = t.one_of("records_missing", ("yellow", "red", "none"), "yellow")
    rules = RiskRules(
        red_events=events("red_events", DEFAULT_RED),
        yellow_events=events("yellow_events", DEFAULT_YELLOW),
        critical_low_sources=tuple(t.texts("critical_low_sources", ["*pressure*", "*level*"])),
        pressure_critical_mpa=t.opt_number("pressure_critical_mpa", min=0.0),
        level_critical_m=t.opt_number("level_critical_m", min=0.0),
        gateway_offline=None if offline == "none" else offline,
        records_missing=None if missing == "none" else missing,
        reset_clears=events("reset_clears", DEFAULT_RESET_CLEARS),
    )
    t.finish()
    return rules


def _metrics(t: Table | None) -> tuple[str, int] | None:
    if t is None:
        return ("127.0.0.1", 9108)
    listen = t.text("listen", "127.0.0.1:9108", min_len=0)
    t.finish()
    if not listen:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
        raise ConfigError("metrics.listen", f"must be HOST:PORT (or \"\" for off), got {listen!r}")
    return host.strip("[]"), int(port)
