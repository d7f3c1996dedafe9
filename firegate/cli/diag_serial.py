"""``firegate diag serial PORT``: watch a fire panel's GB/T 26875.3 traffic live.

For a technician at the panel, without the agent running: it opens the serial port (or
``--tcp HOST:PORT`` to a UITD that listens), decodes every frame with the codec as it arrives
(header, command, type, each object with named fields) and shows every error with its byte
offset in the stream. With ``--confirm`` it answers as a monitoring centre would (command 3 for
each upload, command 6 for a frame that fails its check, §6.5.3), so a panel can be tested end to
end; without it the tool only listens. ``--json`` prints one JSON object per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from edge.drivers.panel_link import LinkClosed, SerialLink, TcpClientLink
from firegate.cli.decode import _error, _frame_item
from firegate.textsafe import visible
from protocols.gb26875 import (
    Command,
    DecodeError,
    ErrorKind,
    Frame,
    Profile,
    Session,
    StreamDecoder,
    address_from_int,
    get_profile,
)

__all__ = ["register", "serial"]

_IDLE_FLUSH = 0.5  # s of quiet before skipped bytes are reported


def register(app: typer.Typer) -> None:
    """Add ``serial`` to the ``firegate diag`` group."""
    app.command("serial", no_args_is_help=True)(serial)


def serial(
    port: Annotated[str | None, typer.Argument(
        metavar="PORT", help="Serial device, e.g. /dev/ttyUSB0.", show_default=False)] = None,
    tcp: Annotated[str | None, typer.Option(
        "--tcp", metavar="HOST:PORT", help="Connect to a UITD over TCP instead of a serial "
                                           "port.")] = None,
    profile_name: Annotated[str, typer.Option(
        "--profile", "-p", help="Dialect: standard, hikvision, dahua, handshake, "
                                "extra-time-labels, no-time-labels.")] = "standard",
    baud: Annotated[int, typer.Option("--baud", help="Serial speed (8N1).")] = 9600,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="Stop after this many seconds (default: Ctrl-C).")] = None,
    frames: Annotated[int | None, typer.Option(
        "--frames", min=1, help="Stop after this many frames (default: Ctrl-C).")] = None,
    confirm: Annotated[bool, typer.Option(
        "--confirm", help="Answer as a centre: confirm uploads, deny damaged frames.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Every field of every object (a tree per frame).")] = False,
) -> None:
    """Live-decode GB/T 26875.3 traffic from a panel's UITD (frames, objects, errors)."""
    if (port is None) == (tcp is None):
        raise typer.BadParameter("give a serial PORT or --tcp HOST:PORT (one of them)")
    try:
        profile = get_profile(profile_name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from None
    if duration is not None and duration <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--duration")
    link: SerialLink | TcpClientLink
    if tcp is not None:
        host, sep, number = tcp.rpartition(":")
        if not sep or not host or not number.isdigit() or not 0 < int(number) < 65536:
            raise typer.BadParameter(f"expected HOST:PORT, got {tcp!r}", param_hint="--tcp")
        link = TcpClientLink(host, int(number))
    else:
        assert port is not None
        link = SerialLink(port, baud)
    watch = _Watch(profile, confirm, as_json, verbose, frames)
    try:
        asyncio.run(watch.run(link, duration))
    except OSError as exc:
        print(f"error: cannot open {link.description}: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


class _Watch:
    """Decodes what arrives, answers when asked to, prints it."""

    def __init__(self, profile: Profile, confirm: bool, as_json: bool, verbose: bool,
                 frames: int | None = None) -> None:
        self.profile, self.confirm, self.as_json, self.verbose = profile, confirm, as_json, verbose
        self.frames = frames
        self.decoder = StreamDecoder(profile)
        # The centre's side of the link; the UITD's address is echoed from each frame.
        zero = address_from_int(0)
        self.session = Session(zero, zero, profile)
        self.console = Console(highlight=False)
        self.cursor = 0  # stream offset of the next frame
        self.stats: Counter[str] = Counter()

    async def run(self, link: SerialLink | TcpClientLink, duration: float | None) -> None:
        await link.open()  # OSError: reported by the caller
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        self._header(link.description)
        end = None if duration is None else time.monotonic() + duration
        try:
            while not stop.is_set() and not self._enough():
                left = _IDLE_FLUSH if end is None else min(_IDLE_FLUSH, end - time.monotonic())
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        data = await link.read()
                except TimeoutError:
                    await self._items(self.decoder.flush(), link)  # idle: report garbage now
                    continue
                await self._items(self.decoder.feed(data), link)
        except (LinkClosed, OSError) as exc:  # the device went away: say so, keep the stats
            self._note(f"link closed: {exc}", {"closed": str(exc)})
        finally:
            await self._items(self.decoder.close(), None)
            await link.shutdown()
            self._summary()

    def _enough(self) -> bool:
        return self.frames is not None and self.stats["frames"] >= self.frames

    async def _items(self, items: list[Frame | DecodeError],
                     link: SerialLink | TcpClientLink | None) -> None:
        """Print each item; with ``--confirm`` (and a link to answer on) answer it."""
        answering = link if self.confirm else None
        for item in items:
            if isinstance(item, DecodeError):
                self.stats[f"error_{item.kind.value}"] += 1
                self.cursor = item.offset + len(item.data)
                self._print({"offset": item.offset, "error": _error(item)})
                if answering is not None and item.kind not in (ErrorKind.GARBAGE,
                                                               ErrorKind.TRUNCATED):
                    deny = self.session.deny_damaged(item)  # §6.5.3
                    if deny is not None:
                        await self._send(answering, deny, "deny", item.offset)
                continue
            self.stats["frames"] += 1
            data = _frame_item(item, self.cursor, self.profile)
            self.cursor += 30 + len(item.adu)
            if "adu_error" in data:
                self.stats[f"error_{data['adu_error']['kind']}"] += 1
            self._print(data)
            if answering is not None and item.command not in (
                    Command.CONFIRM, Command.RESPONSE, Command.DENY):
                answer = self.session.acknowledge(item)  # 3 for uploads and keep-alives
                if answer is not None:
                    await self._send(answering, answer, "confirm", item.serial)

    async def _send(self, link: SerialLink | TcpClientLink, data: bytes, what: str,
                    ref: int) -> None:
        try:
            await link.write(data)
        except (LinkClosed, OSError) as exc:  # the device went away while answering
            self._note(f"could not send {what}: {exc}", {"send_failed": what})
            return
        self.stats[f"sent_{what}"] += 1
        if what == "confirm":
            self._note(f"  -> confirm (command 3) serial {ref}", {"sent": what, "serial": ref})
        else:
            self._note(f"  -> deny (command 6) for the frame at byte {ref}",
                       {"sent": what, "offset": ref})

    # -- output ---------------------------------------------------------------------------------

    @staticmethod
    def _now() -> str:
        return datetime.now().isoformat(timespec="milliseconds")

    def _header(self, where: str) -> None:
        mode = "answering as a centre" if self.confirm else "listening only"
        self._note(f"{where}, profile {self.profile.name}, {mode}",
                   {"link": where, "profile": self.profile.name, "confirm": self.confirm})

    def _note(self, text: str, data: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps({"t": self._now(), **data}, ensure_ascii=False), flush=True)
        else:
            self.console.print(Text(text, style="dim"), soft_wrap=True)

    def _print(self, item: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps({"t": self._now(), **item}, ensure_ascii=False), flush=True)
        elif self.verbose and "frame" in item:
            from firegate.cli.render_frames import print_items

            print_items([item], 30 + item["frame"]["adu_length"], self.profile.name,
                        self.console)
        else:
            self.console.print(_line(item, self._now()[11:]), soft_wrap=True)

    def _summary(self) -> None:
        stats = dict(sorted(self.stats.items()))
        if self.as_json:
            print(json.dumps({"t": self._now(), "summary": {"bytes": self.decoder.bytes_in,
                                                            **stats}}), flush=True)
        else:
            parts = ", ".join(f"{k} {v}" for k, v in stats.items()) or "nothing received"
            self.console.print(Text(f"{self.decoder.bytes_in} bytes: {parts}", style="bold"),
                               soft_wrap=True)


def _line(item: dict[str, Any], clock: str) -> Text:
    """One line per frame or error."""
    text = Text(f"{clock} @{item['offset']:<6} ", style="dim")
    if "error" in item:
        e = item["error"]
        return text.append(visible(f"{e['kind']}: {e['detail']}  {e['data'][:48]}"),
                           style="bold red")
    f = item["frame"]
    cmd = f["command"]
    text.append(f"serial {f['serial']:<5} {cmd['name']} ({cmd['zh']})", style="bold")
    if "adu_error" in item:
        e = item["adu_error"]
        return text.append(visible(f"  {e['kind']}: {e['detail']}"), style="bold red")
    adu = item.get("adu")
    if adu is None:
        return text
    text.append(f"  type {adu['type_mark']} {adu['type']}")
    for obj in adu.get("objects", ()):
        text.append("  | ")
        text.append(visible(_brief(obj)), style="red" if _is_fire(obj) else "")  # field text
    if "objects" not in adu and adu.get("raw"):
        text.append(f" raw {adu['raw']}")
    return text


def _brief(obj: dict[str, Any]) -> str:
    """The fields a technician looks for first."""
    parts = []
    if "system_type" in obj:
        parts.append(f"{obj['system_type']['value']}-{obj['system_address']}")
    if "component_type" in obj:
        parts.append(f"{obj['component_type']['zh']} 0x{obj['address']['uint32']:08x}")
    if obj.get("description"):
        parts.append(f"\"{obj['description']}\"")
    for key in ("state", "flags"):
        if key in obj:
            parts.append("+".join(obj[key]["flags"]) or "none")
    if "unit" in obj:
        parts.append(f"{obj['value']} {obj['unit']}".rstrip())
    if "time" in obj:
        parts.append(str(obj["time"]))
    return " ".join(parts)


def _is_fire(obj: dict[str, Any]) -> bool:
    return "fire_alarm" in obj.get("state", {}).get("flags", ())
