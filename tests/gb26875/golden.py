"""Golden cases: tests/data/gb26875/<case>/input.hex (one frame per line, '#' comments) with
the expected decoder output in expected.json. Regenerate after a deliberate change with
``FIREGATE_REGEN_GOLDEN=1 pytest tests/gb26875/test_golden.py`` and review the diff."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "gb26875"


@dataclass(frozen=True)
class Case:
    name: str
    frames: tuple[bytes, ...]
    comments: tuple[str, ...]  # the comment line before each frame ("" if none)

    @property
    def stream(self) -> bytes:
        return b"".join(self.frames)


def load(name: str) -> Case:
    frames: list[bytes] = []
    comments: list[str] = []
    pending = ""
    for raw_line in (DATA / name / "input.hex").read_text().splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            pending = line.lstrip("# ")
            continue
        frames.append(bytes.fromhex(line))
        comments.append(pending)
        pending = ""
    return Case(name, tuple(frames), tuple(comments))


CASES = sorted(p.name for p in DATA.iterdir() if (p / "input.hex").exists())


def all_frames() -> list[tuple[str, bytes]]:
    """(id, frame bytes) for every golden frame, for parametrised stream tests."""
    out = []
    for name in CASES:
        for n, frame in enumerate(load(name).frames):
            out.append((f"{name}#{n}", frame))
    return out
