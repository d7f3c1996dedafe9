"""GB/T 26875.3 decode throughput on a realistic mix of frames (one core).

The mix follows what a busy panel link carries: mostly component state changes (with Chinese
descriptions) and analog values, some system state, UITD state and operation records, confirms
and clock syncs. The stream is fed in 4 KiB chunks, as a socket or a fast serial read delivers.

    python bench/bench_codec.py            # prints a Markdown row for docs/benchmarks.md
"""

from __future__ import annotations

import platform
import random
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols.gb26875 import (
    AnalogValue,
    ApplicationData,
    Command,
    ComponentAddress,
    ComponentState,
    ComponentStatus,
    DecodeError,
    FacilityOperation,
    FacilityOperationRecord,
    Frame,
    StreamDecoder,
    SystemState,
    SystemStatus,
    TimeLabel,
    UitdState,
    UitdStatus,
    address_from_int,
    decode_adu,
    encode_adu,
    encode_frame,
)

N_FRAMES = 200_000
CHUNK = 4096


def make_stream(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    t = TimeLabel(30, 15, 9, 21, 11, 26)
    uitd, centre = address_from_int(0x3079), bytes(6)
    places = ["3F 东侧走廊", "B1 消防泵房", "12F 电梯前室", "1F 大堂", "5F 配电间 东"]
    frames = []
    for serial in range(n):
        r = rng.random()
        addr = ComponentAddress.from_int(rng.randrange(1, 5000))
        if r < 0.45:
            adu = ApplicationData(2, (ComponentStatus(
                1, 1, rng.choice([42, 31, 23, 84]), addr,
                ComponentState(rng.choice([1, 3, 5, 33])), rng.choice(places), t),))
        elif r < 0.70:
            adu = ApplicationData(3, tuple(AnalogValue(11, 1, 99, addr, rng.choice([2, 3, 5]),
                                                       rng.randrange(-500, 30000), t)
                                           for _ in range(3)))
        elif r < 0.80:
            adu = ApplicationData(1, (SystemStatus(1, 1, SystemState(rng.choice([1, 3, 5])), t),))
        elif r < 0.85:
            adu = ApplicationData(21, (UitdStatus(UitdState.NORMAL, t),))
        elif r < 0.90:
            adu = ApplicationData(4, (FacilityOperationRecord(1, 1, FacilityOperation.SILENCE, 2,
                                                              t),))
        else:
            frames.append(encode_frame(Frame(serial & 0xFFFF, Command.CONFIRM, b"", centre, uitd,
                                             t)))
            continue
        frames.append(encode_frame(Frame(serial & 0xFFFF, Command.SEND_DATA, encode_adu(adu),
                                         uitd, centre, t)))
    return b"".join(frames)


def run(stream: bytes, with_adu: bool) -> tuple[int, float]:
    decoder = StreamDecoder()
    frames = 0
    start = time.perf_counter()
    for i in range(0, len(stream), CHUNK):
        for item in decoder.feed(stream[i:i + CHUNK]):
            if isinstance(item, DecodeError):
                raise AssertionError(item)
            frames += 1
            if with_adu:
                decode_adu(item.adu)
    return frames, time.perf_counter() - start


def main() -> None:
    stream = make_stream(N_FRAMES)
    results = {}
    for label, with_adu in (("frames only", False), ("frames + application data", True)):
        best = min((run(stream, with_adu) for _ in range(3)), key=lambda r: r[1])
        results[label] = best[0] / best[1]
        print(f"{label}: {best[0]} frames in {best[1]:.3f} s = {results[label]:,.0f} frames/s "
              f"({len(stream) / best[1] / 1e6:.1f} MB/s)")
    print(f"\n| {date.today()} | {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()} | {results['frames only']:,.0f} | "
          f"{results['frames + application data']:,.0f} | {len(stream) / N_FRAMES:.0f} B avg |")


if __name__ == "__main__":
    main()
