"""``firegate decode``: decode GB/T 26875.3 frames for a technician (or ``--json`` for scripts)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from protocols.gb26875 import (
    DecodeError,
    Frame,
    Profile,
    StreamDecoder,
    decode_adu,
    get_profile,
)
from protocols.gb26875.render import adu_to_data, frame_to_data

_SEPARATORS = re.compile(r"0[xX](?=[0-9a-fA-F])|[\s,:;\-]+")


class HexError(ValueError):
    """Input that is not hex."""


def parse_hex(text: str) -> bytes:
    """Hex digits with optional spaces, commas, colons, dashes and ``0x`` prefixes."""
    digits = _SEPARATORS.sub("", text)
    bad = re.search(r"[^0-9a-fA-F]", digits)
    if bad:
        raise HexError(f"not a hex digit: {bad.group()!r} (hex digit {bad.start()})")
    if len(digits) % 2:
        raise HexError(f"odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


def decode_stream(data: bytes, profile: Profile) -> list[dict[str, Any]]:
    """Every frame and error in ``data`` as plain data, each with its byte offset."""
    decoder = StreamDecoder(profile)
    items: list[dict[str, Any]] = []
    cursor = 0
    for event in [*decoder.feed(data), *decoder.close()]:
        if isinstance(event, DecodeError):
            items.append({"offset": event.offset, "error": _error(event)})
            cursor = event.offset + len(event.data)
            continue
        items.append(_frame_item(event, cursor, profile))
        cursor += 30 + len(event.adu)
    return items


def _error(err: DecodeError, base: int = 0) -> dict[str, Any]:
    return {"kind": err.kind.value, "offset": base + err.offset, "detail": err.detail,
            "data": err.data.hex()}


def _frame_item(frame: Frame, offset: int, profile: Profile) -> dict[str, Any]:
    item: dict[str, Any] = {"offset": offset, "frame": frame_to_data(frame, profile)}
    try:
        item["adu"] = adu_to_data(decode_adu(frame.adu, profile), profile)
    except DecodeError as exc:
        # Offsets inside the ADU are made absolute: the ADU starts 27 bytes into the frame.
        item["adu_error"] = _error(exc, offset + 27)
        item["adu_raw"] = frame.adu.hex()
    return item


def decode(
    hex_input: Annotated[list[str] | None, typer.Argument(
        metavar="HEX...", help="Frame bytes as hex (spaces allowed); '-' reads hex from stdin.",
        show_default=False)] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Read raw bytes from a file (a serial capture).", exists=True,
        dir_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    profile_name: Annotated[str, typer.Option(
        "--profile", "-p", help="Dialect profile: standard, hikvision, dahua, handshake, "
        "extra-time-labels, no-time-labels.")] = "standard",
) -> None:
    """Decode GB/T 26875.3 frames: header, command, type, every object with named fields.

    The input may hold several frames, garbage and damaged frames: each error names its byte
    offset and reason, and decoding resynchronises on the next '@@'. Exit code 1 if any error.
    """
    try:
        profile = get_profile(profile_name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from None
    if file is not None:
        if hex_input:
            raise typer.BadParameter("give HEX or --file, not both")
        data = file.read_bytes()
    else:
        text = " ".join(hex_input or [])
        if text.strip() == "-":
            text = sys.stdin.read()
        if not text.strip():
            raise typer.BadParameter("no input: give HEX, '-' for stdin, or --file")
        try:
            data = parse_hex(text)
        except HexError as exc:
            raise typer.BadParameter(str(exc), param_hint="HEX") from None
    items = decode_stream(data, profile)
    failed = any("error" in i or "adu_error" in i for i in items)
    if as_json:
        summary = {"profile": profile.name, "bytes": len(data),
                   "frames": sum("frame" in i for i in items),
                   "errors": sum("error" in i or "adu_error" in i for i in items),
                   "items": items}
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        from firegate.cli.render_frames import print_items

        print_items(items, len(data), profile.name)
    if failed:
        raise typer.Exit(1)
