"""The demo's live view (rich): the site's colour, the gateway, the collector, alarms, values.

On a terminal it redraws in place (``rich.live.Live``) about twice a second; anywhere else
(a pipe, CI, ``--json``) it prints one plain line per event as it arrives and a short status
line now and then, so a log of the run still tells the story.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from firegate.demo.watch import FeedItem, View
from firegate.textsafe import safe_text, visible

__all__ = ["Display", "Header", "event_style", "format_value"]

FEED_ROWS = 14
STATUS_EVERY_S = 10.0
COLOUR_STYLE = {"red": "bold white on red", "yellow": "bold black on yellow",
                "green": "bold white on green"}
_THRESHOLDS = {"threshold_low": "<", "threshold_high": ">"}
_CLEARED = {"threshold_low": "≥", "threshold_high": "≤"}
_DIGITS = {"MPa": 3, "kPa": 1, "m": 3, "°C": 1, "%": 0, "mA": 0, "dBm": 0, "V": 2}


@dataclass(frozen=True, slots=True)
class Header:
    """What does not change during the run."""

    site: str
    gateway: str
    broker: str
    store: str
    parts: str
    """The pipeline in one line: which simulators feed the agent (BLE on or off, and why)."""
    period: float
    warning: str | None = None
    """Shown in yellow under the pipeline line, e.g. why BLE is left out."""
    console: str | None = None
    """The web console's address and how to sign in (the collector's [http])."""


def event_style(item: FeedItem) -> tuple[str, str]:
    """(style, label) of an event row: fire alarms red, faults and threshold alarms yellow
    and orange, restores green, the rest plain."""
    if not item.active:
        return "green", f"{item.type} cleared"
    if item.type == "fire_alarm":
        return "bold white on red", "FIRE ALARM"
    if item.type in _THRESHOLDS:
        return "bold dark_orange", item.type
    if item.priority <= 1:
        return "bold yellow", item.type
    return "cyan", item.type


def format_value(value: float, unit: str) -> str:
    """``0.352 MPa``, ``3.87 m``, ``98 %``."""
    digits = _DIGITS.get(unit, 2)
    return f"{value:.{digits}f} {unit}".rstrip()


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


def _detail(item: FeedItem, view: View) -> str:
    if item.type in _THRESHOLDS and item.value is not None and item.limit is not None:
        unit = next((r.unit for (source, _q), r in view.readings.items()
                     if source == item.source_id), "")
        sign = (_THRESHOLDS if item.active else _CLEARED)[item.type]
        return f"{format_value(item.value, unit)} {sign} {format_value(item.limit, unit)}"
    if item.operations:
        return ", ".join(item.operations)
    return item.detail or ""


class Display:
    """Live on a terminal, plain lines elsewhere. Use as a context manager."""

    def __init__(self, console: Console, header: Header) -> None:
        self.console, self.header = console, header
        self.live = console.is_terminal
        self._live: Live | None = None
        self._last_status = 0.0
        self._started = time.monotonic()

    def __enter__(self) -> Display:
        if self.live:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        else:
            h = self.header
            self.console.print(f"firegate demo: {h.parts}; broker {h.broker}; store {h.store}",
                               highlight=False, soft_wrap=True)
            if h.warning:
                self.console.print(f"[yellow]{h.warning}[/]", highlight=False, soft_wrap=True)
            if h.console:
                self.console.print(h.console, markup=False, highlight=False, soft_wrap=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, view: View, new: list[FeedItem], scenario_s: float, note: str = "") -> None:
        """Redraw (terminal) or print what is new (elsewhere)."""
        if self._live is not None:
            self._live.update(self.render(view, scenario_s, note))
            return
        for ack in view.new_acknowledged:
            self.console.print(Text.assemble(
                f"{_clock(ack.at_ms)} ", ("ACKNOWLEDGED", "bold green"),
                visible(f"  by {ack.by}: {ack.type} {ack.description}"
                        + (f" ({ack.note})" if ack.note else ""))),
                highlight=False, soft_wrap=True)
        for item in new:
            style, label = event_style(item)
            where = f"{item.description} ({item.source_id})" if item.description \
                else item.source_id
            self.console.print(Text.assemble(f"{_clock(item.receive_ms)} ", (label, style),
                                             visible(f"  {where}  {_detail(item, view)}")),
                               highlight=False, soft_wrap=True)
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY_S or note:
            self._last_status = now
            c = view.collector
            self.console.print(
                f"t={scenario_s:.0f}s site {view.colour or '-'}; gateway "
                f"{view.gateway_state or '-'}; stored {c.get('records_stored', 0)}, duplicates "
                f"{c.get('duplicates', 0)}, dead letters {_dead(view) or 'none'}"
                + (f"; {note}" if note else ""), highlight=False, soft_wrap=True)

    # -- the terminal view ---------------------------------------------------------------------

    def render(self, view: View, scenario_s: float, note: str = "") -> RenderableType:
        h = self.header
        cycle, at = divmod(max(0.0, scenario_s), h.period)
        top = Text.assemble(
            (h.parts, "bold"), *((("\n" + h.warning, "bold yellow"),) if h.warning else ()),
            *((("\n" + h.console, "bold green"),) if h.console else ()),
            "\n", "broker ", (h.broker, "cyan"), "  ·  store ",
            (h.store, "cyan"), "\n",
            f"story cycle {int(cycle) + 1}, t = {at:.0f} s of {h.period:.0f}  ·  running "
            f"{time.monotonic() - self._started:.0f} s  ·  Ctrl-C to stop",
            *((("\n" + note, "bold yellow"),) if note else ()))
        row = Table.grid(expand=True, padding=(0, 1))
        for _ in range(3):
            row.add_column(ratio=1)
        row.add_row(self._site(view), self._gateway(view), self._collector(view))
        bottom = Table.grid(expand=True, padding=(0, 1))
        bottom.add_column(ratio=3)
        bottom.add_column(ratio=2)
        bottom.add_row(self._feed(view), self._sensors(view))
        return Group(Panel(top, title="firegate demo: the whole pipeline on simulators",
                           border_style="blue"), row, bottom)

    def _site(self, view: View) -> Panel:
        colour = view.colour or "unknown"
        body = Text(f" {colour.upper()} ", style=COLOUR_STYLE.get(colour, "bold"))
        for reason in view.reasons[:5] or (["no active condition"] if view.colour else []):
            body.append("\n" + visible(reason), style="")  # descriptions from the field
        return Panel(body, title=f"site {self.header.site}", border_style=colour
                     if colour in COLOUR_STYLE else "white")

    def _gateway(self, view: View) -> Panel:
        state = view.gateway_state or "not seen yet"
        style = {"online": "bold green", "offline": "bold red"}.get(state, "dim")
        body = Text(state, style=style)
        if view.gateway_reason and state != "online":
            body.append(f" ({visible(view.gateway_reason)})")
        links = view.links
        for name, link in sorted(links.items()):
            if any(name.startswith(other + "/") for other in links):
                continue  # a device under a bus: counted on the bus's line
            body.append(f"\n{visible(name)} ")
            body.append(link, style="green" if link == "up" else "red")
            devices = [s for other, s in links.items() if other.startswith(name + "/")]
            if devices:
                body.append(f" ({devices.count('up')}/{len(devices)} devices up)")
        if view.outbox_depth is not None:
            body.append(f"\noutbox: {view.outbox_depth} waiting")
        return Panel(body, title=f"gateway {self.header.gateway}", border_style="white")

    def _collector(self, view: View) -> Panel:
        c = view.collector
        body = Text()
        body.append(f"records stored {c.get('records_stored', 0)}\n", style="bold")
        body.append(f"duplicates {c.get('duplicates', 0)}\n")
        dead = _dead(view)
        body.append(f"dead letters {dead or 'none'}\n", style="red" if dead else "")
        body.append(f"{c.get('records_per_s', 0)} records/s; broker "
                    f"{'connected' if c.get('connected') else 'not connected'}")
        if c.get("sink_error"):
            body.append(f"\nstore error: {visible(c['sink_error'])}", style="red")
        if view.store_points is not None:
            body.append(f"\nin store: {sum(view.store_points.values())} points")
        if view.open_alarms is not None:
            body.append(f"\nopen alarms {view.open_alarms}, "
                        f"{view.unacknowledged} not acknowledged",
                        style="bold red" if view.unacknowledged else "")
        for ack in view.acknowledged[:3]:
            body.append(f"\n{_clock(ack.at_ms)} ", style="dim")
            body.append(visible(ack.by), style="bold green")
            body.append(visible(f" acknowledged {ack.type} {ack.description}"
                                + (f": {ack.note}" if ack.note else "")))
        return Panel(body, title="collector", border_style="white")

    def _feed(self, view: View) -> Table:
        t = Table(title="alarms and events (newest first)", title_justify="left", expand=True)
        for col in ("time", "event", "where", "detail"):
            t.add_column(col, overflow="fold")
        for item in list(view.feed)[::-1][:FEED_ROWS]:
            style, label = event_style(item)
            where = safe_text(item.description or item.source_id)
            if item.description:
                where.append(f" {visible(item.source_id)}", style="dim")
            t.add_row(_clock(item.receive_ms), Text(label, style=style), where,
                      safe_text(_detail(item, view)))
        return t

    def _sensors(self, view: View) -> Table:
        t = Table(title="latest values", title_justify="left", expand=True)
        for col in ("sensor", "value", "age"):
            t.add_column(col, overflow="fold")
        now = time.time() * 1000
        for _key, r in sorted(view.readings.items()):
            if r.quantity == "rssi":
                continue
            name = safe_text(r.description or r.source_id)
            name.append(f" {r.quantity}", style="dim")
            t.add_row(name, safe_text(format_value(r.value, r.unit)),
                      f"{max(0.0, (now - r.receive_ms) / 1000):.0f} s")
        return t


def _dead(view: View) -> str:
    dead = view.collector.get("dead_letters") or {}
    return ", ".join(f"{k} {v}" for k, v in dead.items())
