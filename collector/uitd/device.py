"""One UITD as the centre knows it, across its connections: mapping, numbering, storing.

Everything that must outlive a TCP connection lives here: the panel mapper (last state words,
so a resent word is not a new alarm), the memory of packets taken (a resend after a reconnect
is a duplicate, §6.5.5), and the next seq. Uploads are handled strictly one at a time per UITD
(a UITD waits for each confirm anyway, §6.5): mapped, numbered, handed to the writer, and only
when the writer says they are stored is the mapper committed, the seq advanced and the confirm
written (图3). So a mapping always diffs against committed state, and an upload that is not
stored leaves no trace: its resend is mapped and numbered the same way again.

Jobs also carry records the centre makes itself (the link fault of a silent UITD, the answer
to a read), so that every record of a UITD is numbered in one place, in order.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from collector.uitd.config import UitdEntry
from protocols.gb26875 import (
    Adu,
    DecodeError,
    DeliveryMemory,
    Frame,
    Incoming,
    TimeLabel,
    decode_adu,
)
from protocols.panel_records import Mapped, PanelMapper
from protocols.wire import Event, EventType, Record, WireError

if TYPE_CHECKING:
    from collector.uitd.link import UitdLink

__all__ = ["Answer", "Device", "Emit", "Job", "Upload"]

log = logging.getLogger("firegate.collector.uitd")
SOURCE_PREFIX = "gb26875"
"""Source ids of a UITD's records: ``gb26875/<sys>-<addr>/...`` (protocols/panel_records.py),
the UITD itself ``gb26875/uitd`` and the centre's link to it ``gb26875/uitd/centre_link``."""
MEMORY_SIZE = 64
"""Packets remembered per UITD for duplicate detection: a UITD resends at most a few packets
(3 retries each, §6.5.5), and a small memory keeps 10,000 UITDs cheap."""


@dataclass(slots=True)
class Upload:
    """A command-2 frame to map, store and then confirm."""

    link: UitdLink
    frame: Frame
    receive_ms: int
    mapped: Mapped | None = None


@dataclass(slots=True)
class Emit:
    """Records the centre makes for the UITD (seqs unassigned); ``done`` once stored."""

    records: Sequence[Record]
    done: Callable[[], None] | None = None
    mapped: Mapped | None = None


@dataclass(slots=True)
class Answer:
    """A response (command 5) to one of our reads: mapped as what holds now, stored, then
    ``done`` gets the decoded ADU (None: unreadable) and the number of records."""

    frame: Frame
    receive_ms: int
    done: Callable[[Adu | None, int], None]
    mapped: Mapped | None = None
    adu: Adu | None = None


Job = Upload | Emit | Answer


@dataclass(slots=True, eq=False)
class Device:
    """One UITD: its config entry, its current link and the state kept across links."""

    entry: UitdEntry
    next_seq: int
    mapper: PanelMapper
    tz: tzinfo | None
    memory: DeliveryMemory = field(default_factory=lambda: DeliveryMemory(MEMORY_SIZE))
    link: UitdLink | None = None
    jobs: deque[Job] = field(default_factory=deque)
    busy: Job | None = None
    last_valid: float = 0.0
    """Monotonic time of its last valid frame (0: none yet)."""
    online: bool = False
    """Announced online to the registry (a valid frame since the last offline)."""
    fault_raised: bool = False
    """A link fault of the centre's link to it is raised and not restored."""
    last_heartbeat: float = 0.0
    counters: Counter[str] = field(default_factory=Counter)
    commands: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=16))
    """The last downstream commands and their outcome (``uitd list``, the API)."""
    peer: str = ""
    replaced_at: deque[float] | None = None
    """Monotonic times of the last replacements of its link (at most ``max_replacements``):
    a peer claiming its address again and again (GB/T 26875.3 has no authentication). Made
    at the first replacement: an empty deque costs 760 bytes, most UITDs never need one."""
    conflict_raised: bool = False
    """An ``address_conflict`` link fault is raised and not restored."""
    conflict_at: float = 0.0
    """Monotonic time of the last claim refused as a replacement storm."""

    @classmethod
    def create(cls, entry: UitdEntry, next_seq: int,
               previous: dict[str, frozenset[str]] | None = None) -> Device:
        tz = ZoneInfo(entry.timezone) if entry.timezone else None
        mapper = PanelMapper(SOURCE_PREFIX, f"{SOURCE_PREFIX}/uitd", tz=tz,
                             previous=previous or {})
        return cls(entry, next_seq, mapper, tz)

    @property
    def gateway(self) -> str:
        return self.entry.gateway

    def label(self) -> TimeLabel:
        """Now, as a time label in the UITD's zone (clock sync, our frames' headers)."""
        return TimeLabel.from_datetime(datetime.now(self.tz))

    # -- jobs ----------------------------------------------------------------------------------

    def numbered(self, records: Sequence[Record]) -> list[Record]:
        return [r.with_seq(self.next_seq + i) for i, r in enumerate(records)]

    def map_upload(self, job: Upload, now: float) -> tuple[str, bytes | None]:
        """Take an upload off the wire: ``("store", None)`` when it has records to store
        (``job.mapped``), else what to do now and the bytes to answer with."""
        link, frame = job.link, job.frame
        session = link.session
        assert session is not None
        (incoming,) = session.receive(frame, now)
        assert isinstance(incoming, Incoming)
        if incoming.duplicate:  # taken before (and stored, jobs run one at a time): confirm
            self.counters["duplicates"] += 1
            return "duplicate", session.acknowledge(frame)
        try:
            adu = decode_adu(frame.adu, self.entry.profile)
        except DecodeError as exc:  # intact frame, unreadable data: refused (图3)
            session.release(frame)
            self.counters[exc.kind.value] += 1
            return "undecodable", session.deny(frame)
        try:
            mapped = self.mapper.map(adu, job.receive_ms, frame.time)
            records = self.numbered(mapped.records)
        except WireError:  # a value no record can carry: refused and counted
            session.release(frame)
            self.counters["unmappable"] += 1
            return "unmappable", session.deny(frame)
        if not records:  # a version, a clock, a handshake: nothing to store
            self.mapper.commit(mapped)
            return "empty", session.acknowledge(frame)
        job.mapped = Mapped(tuple(records), mapped.states, mapped.marks, mapped.descriptions,
                            mapped.systems, mapped.components, mapped.summary)
        return "store", None

    def map_answer(self, job: Answer) -> bool:
        """Map a read's answer (§8.3.2: it says what holds, nothing is raised again); True
        when it has records to store (``job.mapped``)."""
        try:
            job.adu = decode_adu(job.frame.adu, self.entry.profile)
            mapped = self.mapper.map(job.adu, job.receive_ms, job.frame.time, answer=True)
        except (DecodeError, WireError):
            self.counters["answer_unreadable"] += 1
            return False
        if not mapped.records:
            self.mapper.commit(mapped)
            return False
        job.mapped = Mapped(tuple(self.numbered(mapped.records)), mapped.states, mapped.marks,
                            mapped.descriptions, mapped.systems, mapped.components,
                            mapped.summary)
        return True

    def stored(self, job: Job) -> None:
        """The writer stored ``job``'s records: commit the mapping, advance the seq."""
        if job.mapped is not None:
            self.mapper.commit(job.mapped)
            self.next_seq += len(job.mapped.records)

    def link_fault(self, active: bool, receive_ms: int, detail: str) -> Event:
        """The centre's own view of its link to the UITD (图13 bit 5 names the same link)."""
        return Event(source=self.mapper.uitd_source("/centre_link"), type=EventType.LINK_FAULT,
                     active=active, receive_ms=receive_ms, detail=detail[:256])

    def address_conflict(self, active: bool, receive_ms: int, detail: str) -> Event:
        """Several peers claim this UITD's address (a spoofer, or two UITDs configured with
        one address): a link fault of its own source, so that it opens an alarm."""
        return Event(source=self.mapper.uitd_source("/address_conflict"),
                     type=EventType.LINK_FAULT, active=active, receive_ms=receive_ms,
                     detail=detail[:256])

    def status(self, now: float) -> dict[str, object]:
        """A plain view for ``uitd list`` and the API."""
        e = self.entry
        return {
            "address": f"0x{e.address:012x}", "gateway": e.gateway, "site": e.site,
            "profile": e.profile.name, "connected": self.link is not None,
            "online": self.online, "link_fault": self.fault_raised, "peer": self.peer,
            "silent_s": None if not self.last_valid else round(now - self.last_valid, 1),
            "next_seq": self.next_seq, "queued": len(self.jobs) + (self.busy is not None),
            "counters": dict(self.counters), "commands": list(self.commands),
            "address_conflict": self.conflict_raised,
        }
