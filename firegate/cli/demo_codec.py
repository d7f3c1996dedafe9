"""An in-memory GB/T 26875.3 conversation between a simulated UITD and a centre.

The "line" between them adds garbage and corrupts one frame, so the demo shows the codec's
resynchronisation, the deny-and-resend rule (§6.5) and the retransmission dedupe at work.
"""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table

from protocols.gb26875 import (
    AnalogValue,
    ApplicationData,
    Command,
    Completed,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    DecodeError,
    ErrorKind,
    FacilityOperation,
    FacilityOperationRecord,
    Incoming,
    Resend,
    Session,
    StreamDecoder,
    SystemState,
    SystemStatus,
    TimeLabel,
    TypeMark,
    UitdState,
    UitdStatus,
    address_from_int,
    decode_adu,
)
from protocols.gb26875.render import object_to_data

UITD = address_from_int(889)
CENTRE = address_from_int(0)


def _uploads(t: TimeLabel) -> list[ApplicationData]:
    detector = ComponentAddress.from_loop_point(1, 12)
    return [
        ApplicationData(TypeMark.UITD_STATE, (UitdStatus(UitdState.NORMAL, t),)),
        ApplicationData(TypeMark.SYSTEM_STATE, (SystemStatus(1, 1, SystemState.NORMAL, t),)),
        ApplicationData(TypeMark.COMPONENT_STATE, (ComponentStatus(
            1, 1, 42, detector, ComponentState.NORMAL | ComponentState.FIRE_ALARM,
            "3F 东侧走廊 光电感烟", t),)),
        ApplicationData(TypeMark.ANALOG_VALUE, (AnalogValue.from_value(
            11, 1, 99, ComponentAddress.from_int(7), 5, 312.5, t),)),
        ApplicationData(TypeMark.FACILITY_OPERATION, (FacilityOperationRecord(
            1, 1, FacilityOperation.SILENCE, 3, t),)),
        ApplicationData(TypeMark.COMPONENT_STATE, (ComponentStatus(
            1, 1, 42, detector, ComponentState.NORMAL, "3F 东侧走廊 光电感烟", t),)),
    ]


def run() -> int:
    """Play the conversation and print what the centre saw. Returns the exit code."""
    console = Console(highlight=False)
    now = TimeLabel.from_datetime(datetime.now().replace(microsecond=0))
    uitd = Session(UITD, CENTRE, clock=lambda: now)
    centre = Session(CENTRE, UITD, clock=lambda: now)
    decoder = StreamDecoder()
    uitd_rx = StreamDecoder()
    table = Table(title="Monitoring centre: what arrived over GB/T 26875.3")
    for col in ("serial", "what", "detail"):
        table.add_column(col)
    clock = 0.0
    delivered = 0
    for n, data in enumerate(_uploads(now)):
        wire = uitd.send(Command.SEND_DATA, data, clock)
        if n == 2:  # the line flips a bit in the fire alarm: the centre must deny, UITD resends
            wire = wire[:40] + bytes((wire[40] ^ 0x10,)) + wire[41:]
        line = b"\x00\xff noise " + wire if n % 2 else wire
        for _attempt in range(4):
            answers = b""
            for item in decoder.feed(line):
                if isinstance(item, DecodeError):
                    table.add_row("-", f"[red]{item.kind.value}[/red]", item.detail)
                    if item.kind is ErrorKind.BAD_CHECKSUM:
                        # §6.5.3: a check error is dropped and denied.
                        answers += centre.deny_damaged(item) or b""
                    continue
                for ev in centre.receive(item, clock):
                    if isinstance(ev, Incoming):
                        answers += centre.confirm(ev.frame)
                        adu = decode_adu(ev.frame.adu)
                        if isinstance(adu, ApplicationData) and not ev.duplicate:
                            delivered += 1
                            for obj in adu.objects:
                                table.add_row(str(ev.frame.serial), adu.spec.zh,
                                              _summary(object_to_data(obj)))
            resend = None
            for item in uitd_rx.feed(answers):
                if isinstance(item, DecodeError):
                    continue
                for ev in uitd.receive(item, clock):
                    if isinstance(ev, Resend):
                        table.add_row(str(ev.serial), "[yellow]resent after deny[/yellow]",
                                      f"attempt {ev.attempt}")
                        resend = ev.data
                    elif isinstance(ev, Completed):
                        pass
            if resend is None:
                break
            line = resend
        clock += 1.0
    console.print(table)
    errors = ", ".join(f"{k.value}={v}" for k, v in sorted(decoder.errors.items()))
    stats = ", ".join(f"{k}={v}" for k, v in sorted(uitd.stats.items()))
    console.print(f"delivered {delivered} uploads; centre decoder errors: {errors}; "
                  f"UITD session: {stats}")
    return 0 if delivered == 6 and uitd.open_transactions == 0 else 1


def _summary(obj: dict[str, object]) -> str:
    parts = []
    for key in ("component_type", "description", "state", "flags", "value", "unit"):
        if key in obj:
            v = obj[key]
            if isinstance(v, dict):
                v = v.get("zh") if "flags" not in v else ",".join(v["zh"])
            parts.append(str(v))
    return " ".join(parts)
