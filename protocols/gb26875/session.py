"""Session rules of GB/T 26875.3-2011 §6 as a transition table (sans-I/O).

* Each initiating side numbers its own packets (表1 业务流水号): the sender in send/confirm mode,
  the requester in request/response mode, starting at 0 (or the dialect's start) when the link
  opens, unique while a transaction is open, wrapping after 0xFFFF.
* The answer echoes the serial: confirm (command 3) or deny (command 6) for sent data and control
  commands (图2, 图3), response (command 5) or deny for requests (图4).
* No answer within the timeout (§6.5.4, "不宜大于10 s") or a deny leads to a resend of the *same*
  bytes, up to 3 times (§6.5.5, "宜为3次"); then the transaction has failed.
* A packet received again after it was taken (the peer resent because our answer was lost,
  §6.5.5) is answered again but acted on once: :class:`Incoming` says ``duplicate=True``. The
  rule is a second table (:data:`RX_TRANSITIONS`) over a bounded :class:`DeliveryMemory` that
  outlives the link: a UITD that reconnects resends what it saw no confirm for. A receiver that
  did not act on a packet after all (its records were not stored) calls
  :meth:`Session.release`, so the resend is delivered rather than dismissed.

The :class:`Session` holds no socket and no timer: the caller feeds it frames and the current
monotonic time, writes the bytes it returns, and calls :meth:`Session.poll` at
:meth:`Session.next_deadline`.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from protocols.gb26875.adu import Adu, TypeMark, encode_adu
from protocols.gb26875.constants import MAX_SERIAL, Command
from protocols.gb26875.errors import DecodeError
from protocols.gb26875.frame import Frame, encode_frame, peek_header
from protocols.gb26875.profile import STANDARD, Profile
from protocols.gb26875.timelabel import TimeLabel

MAX_TIMEOUT = 10.0  # §6.5.4: the timeout should not exceed 10 s
DEFAULT_RETRIES = 3  # §6.5.5: resend 3 times
DEDUPE_WINDOW = 512  # keys of packets taken that a DeliveryMemory keeps


class TxState(StrEnum):
    """State of one outgoing transaction."""

    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"


class TxInput(StrEnum):
    """What can happen to a waiting transaction. ``*_FINAL`` when no resend is left."""

    CONFIRM = "confirm"  # command 3
    RESPONSE = "response"  # command 5
    DENY = "deny"  # command 6, resends left
    DENY_FINAL = "deny_final"
    TIMEOUT = "timeout"  # no answer within the timeout, resends left
    TIMEOUT_FINAL = "timeout_final"


class TxAction(StrEnum):
    """What the session does on a transition."""

    COMPLETE = "complete"
    RESEND = "resend"
    FAIL = "fail"


class ProtocolError(Exception):
    """An input that the transition table does not allow in the current state."""


# The whole rule set. Terminal states (DONE, FAILED) accept no input.
TRANSITIONS: Mapping[tuple[TxState, TxInput], tuple[TxState, TxAction]] = {
    (TxState.WAITING, TxInput.CONFIRM): (TxState.DONE, TxAction.COMPLETE),  # 图2, 图3
    (TxState.WAITING, TxInput.RESPONSE): (TxState.DONE, TxAction.COMPLETE),  # 图4
    (TxState.WAITING, TxInput.DENY): (TxState.WAITING, TxAction.RESEND),  # §6.5
    (TxState.WAITING, TxInput.DENY_FINAL): (TxState.FAILED, TxAction.FAIL),
    (TxState.WAITING, TxInput.TIMEOUT): (TxState.WAITING, TxAction.RESEND),  # §6.5.4
    (TxState.WAITING, TxInput.TIMEOUT_FINAL): (TxState.FAILED, TxAction.FAIL),  # §6.5.5
}


def transition(state: TxState, event: TxInput) -> tuple[TxState, TxAction]:
    """Look up a transition; raise :class:`ProtocolError` for one the table does not have."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise ProtocolError(f"{event.value} is not allowed in state {state.value}") from None


# -- the peer's packets: acted on once -----------------------------------------------------------


class RxState(StrEnum):
    """What the session knows of one packet the peer initiated (see :class:`DeliveryMemory`)."""

    NEW = "new"  # never received, released, or pushed out of the bounded memory
    TAKEN = "taken"  # received and not released: another copy is a retransmission


class RxInput(StrEnum):
    """What can happen to a packet the peer initiated."""

    RECEIVE = "receive"  # a copy arrives
    RELEASE = "release"  # the receiver did not act on it after all (not stored, refused)


class RxAction(StrEnum):
    """What the session does about it."""

    DELIVER = "deliver"  # Incoming(duplicate=False): act on it, then answer
    DUPLICATE = "duplicate"  # Incoming(duplicate=True): answer again, act once
    FORGET = "forget"  # the next copy is delivered
    IGNORE = "ignore"  # nothing remembered, nothing to forget


# Every (state, input) pair has a row: no input is an error for a packet of the peer.
RX_TRANSITIONS: Mapping[tuple[RxState, RxInput], tuple[RxState, RxAction]] = {
    (RxState.NEW, RxInput.RECEIVE): (RxState.TAKEN, RxAction.DELIVER),
    # §6.5.5: the peer resends the same bytes when our answer did not reach it.
    (RxState.TAKEN, RxInput.RECEIVE): (RxState.TAKEN, RxAction.DUPLICATE),
    # 图3: no confirm went out, so the peer resends; that copy must be delivered.
    (RxState.TAKEN, RxInput.RELEASE): (RxState.NEW, RxAction.FORGET),
    (RxState.NEW, RxInput.RELEASE): (RxState.NEW, RxAction.IGNORE),  # e.g. already evicted
}

# 表3 types whose objects are happenings, each with its own time label (图8 analog value, 图9
# facility operation, 图14 UITD operation): the same bytes again are the same happening, whatever
# the serial. A UITD that lost our confirm and then the link resends them numbered anew (表1), so
# they are also known by content. State words (1, 2, 21) need no such key (the receiver diffs
# them), and configs, versions and clocks (5-8, 25, 26, 28) may rightly come again unchanged.
BY_CONTENT: frozenset[int] = frozenset({TypeMark.ANALOG_VALUE, TypeMark.FACILITY_OPERATION,
                                        TypeMark.UITD_OPERATION})

# Packets that give the application work (§6.6, 表2: control, send data, request). A keep-alive
# or an unknown command is answered without a decision and is not remembered.
REMEMBERED: frozenset[int] = frozenset({Command.CONTROL, Command.SEND_DATA, Command.REQUEST})

_Key = tuple[int, int, bytes] | tuple[int, bytes]


def rx_transition(state: RxState, event: RxInput) -> tuple[RxState, RxAction]:
    """Look up a row of :data:`RX_TRANSITIONS`; :class:`ProtocolError` if it has none."""
    try:
        return RX_TRANSITIONS[(state, event)]
    except KeyError:
        raise ProtocolError(f"{event.value} is not allowed for a {state.value} packet") from None


def _keys(frame: Frame) -> tuple[_Key, ...]:
    exact: _Key = (frame.serial, frame.command, frame.adu)
    if frame.command == Command.SEND_DATA and frame.adu[:1] and frame.adu[0] in BY_CONTENT:
        return exact, (frame.command, frame.adu)
    return (exact,)


class DeliveryMemory:
    """The peer's packets taken lately, bounded: what makes a retransmission a duplicate.

    A packet is known by its serial, command and bytes (a peer that restarted numbering sends new
    content under an old serial: that is new), and an upload of a :data:`BY_CONTENT` type by its
    command and bytes alone too. Past ``size`` keys the oldest is forgotten. The memory outlives a
    :class:`Session`: give the sessions of one link the same memory (:meth:`Session.reset` keeps
    it too), so that what was taken before a reconnect is still known after it.
    """

    def __init__(self, size: int = DEDUPE_WINDOW) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self._keys: OrderedDict[_Key, None] = OrderedDict()

    def __len__(self) -> int:
        """Keys remembered (one or two per packet)."""
        return len(self._keys)

    def state(self, frame: Frame) -> RxState:
        """Whether a copy of ``frame`` was taken (and is still remembered)."""
        return RxState.TAKEN if any(k in self._keys for k in _keys(frame)) else RxState.NEW

    def apply(self, frame: Frame, event: RxInput) -> RxAction:
        """Step ``frame`` through :data:`RX_TRANSITIONS` and remember the outcome."""
        keys = _keys(frame)
        _, action = rx_transition(self.state(frame), event)
        if action is RxAction.DELIVER:
            for key in keys:
                self._keys[key] = None
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)
        elif action is RxAction.DUPLICATE:  # still being resent: keep it longest, and under
            for key in keys:                  # all of its keys (one may have been released)
                self._keys[key] = None
                self._keys.move_to_end(key)
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)
        elif action is RxAction.FORGET:
            for key in keys:
                self._keys.pop(key, None)
        return action


# -- our packets: transactions -------------------------------------------------------------------


@dataclass(slots=True)
class Transaction:
    """One outgoing packet waiting for its answer."""

    frame: Frame
    data: bytes  # the exact bytes sent, resent unchanged
    deadline: float
    attempts: int = 1
    state: TxState = TxState.WAITING


@dataclass(frozen=True, slots=True)
class Resend:
    """Write ``data`` again (same serial, same bytes)."""

    serial: int
    data: bytes
    attempt: int  # 2 for the first resend


@dataclass(frozen=True, slots=True)
class Completed:
    """The peer confirmed or answered ``request``."""

    serial: int
    request: Frame
    reply: Frame


@dataclass(frozen=True, slots=True)
class Failed:
    """No confirm after every resend, a final deny, or the link was reset."""

    serial: int
    request: Frame
    reason: str


@dataclass(frozen=True, slots=True)
class Incoming:
    """A packet the peer initiated (commands 1, 2, 4 or others); the caller answers it.

    ``duplicate``: a copy was taken before (:data:`RX_TRANSITIONS`); answer it again, act once.
    """

    frame: Frame
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Unmatched:
    """An answer whose serial matches no open transaction (late, duplicate or stray)."""

    frame: Frame


SessionEvent = Resend | Completed | Failed | Incoming | Unmatched

_REPLY_INPUT: Mapping[int, TxInput] = {
    Command.CONFIRM: TxInput.CONFIRM,
    Command.RESPONSE: TxInput.RESPONSE,
    Command.DENY: TxInput.DENY,
}


def _local_now() -> TimeLabel:
    return TimeLabel.from_datetime(datetime.now())


@dataclass
class Session:
    """Both directions of one GB/T 26875.3 link, seen from ``local``."""

    local: bytes
    peer: bytes
    profile: Profile = STANDARD
    timeout: float = MAX_TIMEOUT
    retries: int = DEFAULT_RETRIES
    clock: Callable[[], TimeLabel] = _local_now
    memory: DeliveryMemory = field(default_factory=DeliveryMemory)
    stats: Counter[str] = field(default_factory=Counter)
    _next_serial: int = field(init=False)
    _open: dict[int, Transaction] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT}] s (GB/T 26875.3 §6.5.4)")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        self._next_serial = self.profile.serial_start

    # -- outgoing ----------------------------------------------------------------------------

    @property
    def open_transactions(self) -> int:
        """Packets sent and not yet answered."""
        return len(self._open)

    def send(self, command: int, data: Adu | None, now: float) -> bytes:
        """Start a transaction (send data, control or request); return the bytes to write."""
        serial = self._allocate_serial()
        adu = b"" if data is None else encode_adu(data, self.profile.max_adu)
        frame = Frame(serial, command, adu, self.local, self.peer, self.clock(),
                      self.profile.version)
        raw = encode_frame(frame, self.profile.max_adu)
        self._open[serial] = Transaction(frame, raw, now + self.timeout)
        self.stats["sent"] += 1
        return raw

    def _allocate_serial(self) -> int:
        for _ in range(MAX_SERIAL + 1):
            serial = self._next_serial
            self._next_serial = 0 if serial >= MAX_SERIAL else serial + 1
            if serial not in self._open:
                return serial
        raise ProtocolError("all 65536 serials are in open transactions")

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to do, or None."""
        return min((t.deadline for t in self._open.values()), default=None)

    def poll(self, now: float) -> list[SessionEvent]:
        """Apply timeouts: resend or fail every transaction whose deadline has passed."""
        events: list[SessionEvent] = []
        for serial, tx in list(self._open.items()):
            if tx.deadline <= now:
                final = tx.attempts > self.retries
                self._step(serial, tx, TxInput.TIMEOUT_FINAL if final else TxInput.TIMEOUT,
                           None, now, events)
        return events

    def reset(self) -> list[SessionEvent]:
        """The link dropped: fail what is open and restart serial numbering (表1).

        The :attr:`memory` of packets taken is kept: the peer resends after it reconnects what
        it saw no confirm for."""
        events: list[SessionEvent] = [Failed(s, t.frame, "link reset")
                                      for s, t in self._open.items()]
        self.stats["failed"] += len(events)
        self._open.clear()
        self._next_serial = self.profile.serial_start
        return events

    # -- incoming ----------------------------------------------------------------------------

    def receive(self, frame: Frame, now: float) -> list[SessionEvent]:
        """Account for a frame from the peer."""
        events: list[SessionEvent] = []
        reply = _REPLY_INPUT.get(frame.command)
        if reply is None:
            duplicate = (frame.command in REMEMBERED and self.memory.apply(
                frame, RxInput.RECEIVE) is RxAction.DUPLICATE)
            if duplicate:
                self.stats["duplicates"] += 1
            self.stats["received"] += 1
            events.append(Incoming(frame, duplicate))
            return events
        tx = self._open.get(frame.serial)
        if tx is None:
            self.stats["unmatched"] += 1
            events.append(Unmatched(frame))
            return events
        if reply is TxInput.DENY and tx.attempts > self.retries:
            reply = TxInput.DENY_FINAL
        self._step(frame.serial, tx, reply, frame, now, events)
        return events

    def release(self, frame: Frame) -> None:
        """The caller did not act on ``frame`` after all (its records were not stored, it was
        refused): forget it, so that the peer's resend is delivered and not a duplicate. For a
        packet :meth:`receive` delivered, not for a duplicate."""
        if frame.command in REMEMBERED and self.memory.apply(
                frame, RxInput.RELEASE) is RxAction.FORGET:
            self.stats["released"] += 1

    def _step(self, serial: int, tx: Transaction, inp: TxInput, reply: Frame | None, now: float,
              events: list[SessionEvent]) -> None:
        tx.state, action = transition(tx.state, inp)
        if action is TxAction.COMPLETE:
            del self._open[serial]
            self.stats["confirmed" if inp is TxInput.CONFIRM else "answered"] += 1
            assert reply is not None
            events.append(Completed(serial, tx.frame, reply))
        elif action is TxAction.RESEND:
            tx.attempts += 1
            tx.deadline = now + self.timeout
            self.stats["resent"] += 1
            if inp is TxInput.DENY:
                self.stats["denied"] += 1
            events.append(Resend(serial, tx.data, tx.attempts))
        else:
            del self._open[serial]
            self.stats["failed"] += 1
            why = "denied" if inp is TxInput.DENY_FINAL else "no confirm"
            events.append(Failed(serial, tx.frame,
                                 f"{why} after {tx.attempts} transmissions"))

    # -- answers to the peer's packets -----------------------------------------------------------

    def reply(self, to: Frame, command: int, data: Adu | None = None) -> bytes:
        """Answer a peer's packet: same serial, addresses swapped (§6.6, §5)."""
        adu = b"" if data is None else encode_adu(data, self.profile.max_adu)
        stamp = to.time if self.profile.confirm_time == "echo" else self.clock()
        frame = Frame(to.serial, command, adu, to.destination, to.source, stamp,
                      self.profile.version)
        self.stats[f"replied_{command}"] += 1
        return encode_frame(frame, self.profile.max_adu)

    def confirm(self, to: Frame) -> bytes:
        """Command 3 with an empty ADU."""
        return self.reply(to, Command.CONFIRM)

    def deny(self, to: Frame) -> bytes:
        """Command 6 with an empty ADU."""
        return self.reply(to, Command.DENY)

    def acknowledge(self, frame: Frame) -> bytes | None:
        """The answer owed to a peer's packet that needs no application decision, or None.

        * Sent data (command 2), whatever its type mark, even user-defined or a 1-byte ADU:
          confirm (reference checklist item 3: never drop the link over an unknown upload).
          The profile's handshake request is confirmed with its handshake reply ADU.
        * The profile's keep-alive command: confirmed.
        * Control (1) and request (4) packets are for the application to execute or answer.
        """
        p = self.profile
        if frame.command == Command.SEND_DATA:
            if p.handshake_request is not None and frame.adu == p.handshake_request:
                stamp = frame.time if p.confirm_time == "echo" else self.clock()
                reply = Frame(frame.serial, Command.CONFIRM, p.handshake_reply or b"",
                              frame.destination, frame.source, stamp, p.version)
                self.stats["handshakes"] += 1
                return encode_frame(reply, p.max_adu)
            return self.confirm(frame)
        if p.keepalive_command is not None and frame.command == p.keepalive_command:
            self.stats["keepalives"] += 1
            return self.confirm(frame)
        return None

    def deny_damaged(self, error: DecodeError) -> bytes | None:
        """Deny a frame that failed its check (§6.5.3: bad checksum, marker, length...), using
        the serial from its header; None when not even the header is readable."""
        head = peek_header(error.data)
        if head is None:
            return None
        serial, source, destination = head
        return self.deny(Frame(serial, Command.SEND_DATA, b"", source, destination))

    def respond(self, to: Frame, data: Adu) -> bytes:
        """Command 5 carrying the answer to a request."""
        return self.reply(to, Command.RESPONSE, data)
