"""Human rendering of decoded frames with rich (tables and trees a technician reads)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from firegate.textsafe import safe_text, visible


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        if "flags" in value:
            names = ", ".join(f"{en} {zh}" for en, zh in zip(value["flags"], value["zh"],
                                                                strict=True))
            return f"0x{value['raw']:04x} [{names or 'none'}]"
        if "zh" in value and "value" in value:
            return f"{value['value']} {value['zh']} ({value['en']})"
        if "uint32" in value:
            extra = f" loop {value['loop']} point {value['point']}" if "loop" in value else ""
            return f"0x{value['uint32']:08x} (raw {value['raw']}){extra}"
    return str(value)


def _object_line(obj: dict[str, Any]) -> Text:
    text = Text()
    for key, value in obj.items():
        if key in ("raw_value", "unit"):
            continue
        if key == "value" and "unit" in obj:
            text.append("value=", style="dim")
            text.append(f"{value} {obj['unit']}", style="bold")
            text.append(f" (raw {obj['raw_value']})  ", style="dim")
            continue
        text.append(f"{key}=", style="dim")
        style = "bold red" if key == "state" and "fire_alarm" in value.get("flags", ()) else ""
        text.append(visible(_fmt(value)) + "  ", style=style)  # a description is field text
    return text


def print_items(items: list[dict[str, Any]], total: int, profile: str,
                console: Console | None = None) -> None:
    """Print every frame and error."""
    con = console or Console(highlight=False)
    frames = errors = 0
    for item in items:
        if "error" in item:
            errors += 1
            e = item["error"]
            con.print(safe_text(f"error at byte {e['offset']}: {e['kind']}: {e['detail']}",
                                style="bold red"))
            con.print(Text(f"  bytes: {e['data'][:96]}{'...' if len(e['data']) > 96 else ''}",
                           style="dim"))
            continue
        frames += 1
        f = item["frame"]
        cmd = f["command"]
        tree = Tree(Text(
            f"frame at byte {item['offset']}: serial {f['serial']}, command {cmd['value']} "
            f"{cmd['name']} ({cmd['zh']}), version {f['version']}, time {f['time']}",
            style="bold"))
        tree.add(f"source {f['source']} -> destination {f['destination']}, ADU "
                 f"{f['adu_length']} bytes, checksum {f['checksum']}")
        adu = item.get("adu")
        if "adu_error" in item:
            errors += 1
            e = item["adu_error"]
            tree.add(safe_text(f"ADU error at byte {e['offset']}: {e['kind']}: {e['detail']}",
                               style="bold red"))
        elif adu is None:
            tree.add("no application data")
        elif "objects" not in adu:
            tree.add(f"type {adu['type_mark']} {adu['type']}: count {adu['count']}, "
                     f"raw {adu['raw'] or '(none)'}")
        else:
            branch = tree.add(f"type {adu['type_mark']} {adu['type']} ({adu['zh']}), "
                              f"{adu['count']} object(s)")
            for n, obj in enumerate(adu["objects"], 1):
                branch.add(Text(f"[{n}] ").append(_object_line(obj)))
        con.print(tree)
    con.print(Text(f"{total} bytes, {frames} frame(s), {errors} error(s), profile {profile}",
                   style="dim"))
