"""Session rules (§6): serials, confirm/deny, resend after timeout up to 3 times, and the peer's
packets acted on once (a bounded memory that survives a link reset)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.gb26875 import (
    HIKVISION,
    ApplicationData,
    ClockSync,
    Command,
    Completed,
    DecodeError,
    DeliveryMemory,
    FacilityOperation,
    FacilityOperationRecord,
    Failed,
    Frame,
    Incoming,
    Resend,
    Session,
    StreamDecoder,
    TimeLabel,
    UitdState,
    UitdStatus,
    Unmatched,
    address_from_int,
    decode_frame,
    encode_adu,
)
from protocols.gb26875.session import (
    RX_TRANSITIONS,
    TRANSITIONS,
    ProtocolError,
    RxAction,
    RxInput,
    RxState,
    TxAction,
    TxInput,
    TxState,
    rx_transition,
    transition,
)

T = TimeLabel(0, 0, 12, 1, 6, 26)
UITD, CENTRE = address_from_int(889), address_from_int(0)
DATA = ApplicationData(21, (UitdStatus(UitdState.NORMAL, T),))


def pair(**kw: object) -> tuple[Session, Session]:
    return (Session(UITD, CENTRE, clock=lambda: T, **kw),  # type: ignore[arg-type]
            Session(CENTRE, UITD, clock=lambda: T))


def test_every_state_input_pair_is_a_valid_transition_or_protocol_error() -> None:
    for state, inp in itertools.product(TxState, TxInput):
        try:
            new, action = transition(state, inp)
        except ProtocolError:
            assert (state, inp) not in TRANSITIONS
            assert state is not TxState.WAITING, "a waiting transaction accepts every input"
        else:
            assert new in TxState and action in TxAction
            assert (new is TxState.FAILED) == (action is TxAction.FAIL)


def test_confirm_completes_and_echoes_serial_with_swapped_addresses() -> None:
    uitd, centre = pair()
    raw = uitd.send(Command.SEND_DATA, DATA, now=0)
    frame = decode_frame(raw)
    assert (frame.serial, frame.source, frame.destination) == (0, UITD, CENTRE)
    (inc,) = centre.receive(frame, 0)
    assert isinstance(inc, Incoming) and not inc.duplicate
    confirm = decode_frame(centre.confirm(frame))
    assert (confirm.serial, confirm.command, confirm.adu) == (0, Command.CONFIRM, b"")
    assert (confirm.source, confirm.destination) == (CENTRE, UITD)
    (done,) = uitd.receive(confirm, 1)
    assert isinstance(done, Completed) and done.request == frame
    assert uitd.open_transactions == 0 and uitd.next_deadline() is None


def test_timeout_resends_same_bytes_three_times_then_fails() -> None:
    uitd, _ = pair()
    raw = uitd.send(Command.SEND_DATA, DATA, now=0)
    assert uitd.next_deadline() == 10.0
    assert uitd.poll(9.99) == []
    for attempt, now in ((2, 10.0), (3, 20.0), (4, 30.0)):
        (ev,) = uitd.poll(now)
        assert ev == Resend(0, raw, attempt)
    (fail,) = uitd.poll(40.0)
    assert isinstance(fail, Failed) and "4 transmissions" in fail.reason
    assert uitd.stats["resent"] == 3 and uitd.stats["failed"] == 1


def test_deny_resends_then_final_deny_fails() -> None:
    uitd, centre = pair(retries=1)
    frame = decode_frame(uitd.send(Command.SEND_DATA, DATA, now=0))
    deny = decode_frame(centre.deny(frame))
    assert deny.command == Command.DENY and deny.serial == frame.serial
    (ev,) = uitd.receive(deny, 1)
    assert isinstance(ev, Resend) and ev.attempt == 2
    (ev2,) = uitd.receive(deny, 2)
    assert isinstance(ev2, Failed) and "denied" in ev2.reason


def test_retransmission_confirmed_again_but_reported_once() -> None:
    uitd, centre = pair()
    raw = uitd.send(Command.SEND_DATA, DATA, now=0)
    (first,) = centre.receive(decode_frame(raw), 0)
    (resend,) = uitd.poll(10)  # our confirm was lost
    assert isinstance(resend, Resend)
    (second,) = centre.receive(decode_frame(resend.data), 10)
    assert isinstance(first, Incoming) and not first.duplicate
    assert isinstance(second, Incoming) and second.duplicate
    assert centre.stats["duplicates"] == 1
    # Same serial but new content (the peer restarted numbering) is not a duplicate.
    uitd.reset()
    other = ApplicationData(21, (UitdStatus(UitdState.NORMAL | UitdState.FAULT, T),))
    (third,) = centre.receive(decode_frame(uitd.send(Command.SEND_DATA, other, 11)), 11)
    assert isinstance(third, Incoming) and not third.duplicate


def test_request_response_and_unmatched_answers() -> None:
    from protocols.gb26875 import Reserved

    centre, uitd = Session(CENTRE, UITD, clock=lambda: T), Session(UITD, CENTRE, clock=lambda: T)
    req = decode_frame(centre.send(Command.REQUEST, ApplicationData(81, (Reserved(),)), 0))
    (inc,) = uitd.receive(req, 0)
    assert isinstance(inc, Incoming)
    resp = decode_frame(uitd.respond(req, DATA))
    assert resp.command == Command.RESPONSE and resp.serial == req.serial
    (done,) = centre.receive(resp, 1)
    assert isinstance(done, Completed) and done.reply == resp
    (late,) = centre.receive(resp, 2)
    assert isinstance(late, Unmatched) and centre.stats["unmatched"] == 1


def test_serials_start_per_profile_wrap_and_skip_open_ones() -> None:
    hik = Session(UITD, CENTRE, profile=HIKVISION, clock=lambda: T)
    assert decode_frame(hik.send(2, DATA, 0)).serial == 1
    s = Session(UITD, CENTRE, clock=lambda: T)
    s._next_serial = 0xFFFE
    serials = [decode_frame(s.send(2, DATA, 0)).serial for _ in range(3)]
    assert serials == [0xFFFE, 0xFFFF, 0]
    s2 = Session(UITD, CENTRE, clock=lambda: T)
    first = decode_frame(s2.send(2, DATA, 0)).serial
    s2._next_serial = first  # force a collision with the open transaction
    assert decode_frame(s2.send(2, DATA, 0)).serial == first + 1


def test_reset_fails_open_transactions_and_restarts_numbering() -> None:
    s = Session(UITD, CENTRE, clock=lambda: T)
    s.send(2, DATA, 0)
    s.send(2, DATA, 0)
    events = s.reset()
    assert [type(e) for e in events] == [Failed, Failed]
    assert decode_frame(s.send(2, DATA, 0)).serial == 0


def test_timeout_over_ten_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="10"):
        Session(UITD, CENTRE, timeout=11)


def test_deny_damaged_frame_uses_its_serial() -> None:
    uitd, centre = pair()
    raw = bytearray(uitd.send(Command.SEND_DATA, DATA, 0))
    raw[-3] ^= 0xFF
    (err,) = StreamDecoder().feed(bytes(raw))
    assert isinstance(err, DecodeError)
    deny = centre.deny_damaged(err)
    assert deny is not None
    (ev,) = uitd.receive(decode_frame(deny), 1)
    assert isinstance(ev, Resend)
    assert centre.deny_damaged(DecodeError(err.kind, "x", 0, b"@@\x01")) is None


@given(st.lists(st.sampled_from(["confirm", "deny", "timeout", "stray"]), max_size=30))
def test_any_sequence_keeps_the_session_consistent(steps: list[str]) -> None:
    uitd, centre = pair()
    now = 0.0
    frame = decode_frame(uitd.send(Command.SEND_DATA, DATA, now))
    transmissions = 1
    for step in steps:
        now += 1
        if uitd.open_transactions == 0:
            frame = decode_frame(uitd.send(Command.SEND_DATA, DATA, now))
            transmissions = 1
        if step == "timeout":
            now += 10
            events = uitd.poll(now)
        elif step == "stray":
            events = uitd.receive(decode_frame(centre.confirm(
                decode_frame(uitd.send(2, DATA, now)))), now)
            events += uitd.receive(decode_frame(centre.confirm(frame)), now)
        else:
            reply = centre.confirm(frame) if step == "confirm" else centre.deny(frame)
            events = uitd.receive(decode_frame(reply), now)
        for ev in events:
            if isinstance(ev, Resend):
                transmissions += 1
                assert ev.attempt == transmissions <= 4
            if isinstance(ev, Failed):
                assert transmissions == 4
    assert uitd.open_transactions <= 2


def test_acknowledge_follows_the_profile() -> None:
    from protocols.gb26875 import DAHUA, HANDSHAKE, Frame, RawApplicationData, encode_adu

    centre = Session(CENTRE, UITD, profile=HANDSHAKE, clock=lambda: T)
    hello = Frame(5, Command.SEND_DATA, b"\x16", UITD, CENTRE, T)
    reply = decode_frame(centre.acknowledge(hello) or b"")
    assert (reply.command, reply.adu, reply.serial, reply.time) == (Command.CONFIRM, b"\x17", 5, T)
    odd = Frame(6, Command.SEND_DATA, encode_adu(RawApplicationData(200, 1, b"\x01")), UITD,
                CENTRE, T)
    assert decode_frame(centre.acknowledge(odd) or b"").command == Command.CONFIRM
    assert centre.acknowledge(Frame(7, Command.REQUEST, b"", UITD, CENTRE, T)) is None
    dahua = Session(CENTRE, UITD, profile=DAHUA, clock=lambda: T)
    keepalive = Frame(8, 0x07, b"", UITD, CENTRE, T)
    assert decode_frame(dahua.acknowledge(keepalive) or b"").command == Command.CONFIRM
    assert Session(CENTRE, UITD, clock=lambda: T).acknowledge(keepalive) is None


# -- the peer's packets: acted on once (RX_TRANSITIONS over a DeliveryMemory) -----------------

SILENCE = ApplicationData(4, (FacilityOperationRecord(1, 1, FacilityOperation.SILENCE, 2, T),))


def upload(serial: int, data: ApplicationData = DATA, command: int = Command.SEND_DATA) -> Frame:
    return Frame(serial, command, encode_adu(data), UITD, CENTRE, T)


def delivered(session: Session, frame: Frame) -> bool:
    """Receive ``frame``: True when it is delivered, False when a duplicate."""
    (ev,) = session.receive(frame, 0)
    assert isinstance(ev, Incoming) and ev.frame == frame
    return not ev.duplicate


def test_every_packet_state_input_pair_is_a_valid_transition_or_protocol_error() -> None:
    for state, inp in itertools.product(RxState, RxInput):
        try:
            new, action = rx_transition(state, inp)
        except ProtocolError:
            assert (state, inp) not in RX_TRANSITIONS
        else:
            assert new in RxState and action in RxAction
            # Delivered and duplicate exactly when a copy arrives; taken exactly after one did.
            assert (action in (RxAction.DELIVER, RxAction.DUPLICATE)) == (inp is RxInput.RECEIVE)
            assert (new is RxState.TAKEN) == (inp is RxInput.RECEIVE)
    assert set(RX_TRANSITIONS) == set(itertools.product(RxState, RxInput))


def test_the_same_upload_twice_is_delivered_once() -> None:
    centre = Session(CENTRE, UITD, clock=lambda: T)
    assert delivered(centre, upload(7))
    assert not delivered(centre, upload(7))  # our confirm was lost: confirm again, act once
    assert not delivered(centre, upload(7))
    assert centre.stats["duplicates"] == 2 and centre.stats["received"] == 3
    # The stricter key: another serial, another command or other bytes is another packet.
    assert delivered(centre, upload(8))
    assert delivered(centre, upload(7, command=Command.REQUEST))
    other = ApplicationData(21, (UitdStatus(UitdState.NORMAL | UitdState.FAULT, T),))
    assert delivered(centre, upload(7, other))


def test_the_memory_survives_a_link_reset_and_a_new_session() -> None:
    memory = DeliveryMemory()
    first = Session(CENTRE, UITD, clock=lambda: T, memory=memory)
    assert delivered(first, upload(0)) and delivered(first, upload(1, SILENCE))
    first.reset()  # the link dropped: numbering restarts (表1), what was taken is still known
    assert not delivered(first, upload(0))
    second = Session(CENTRE, UITD, clock=lambda: T, memory=memory)  # the next connection
    assert not delivered(second, upload(0))
    # A happening (图9, own time label) resent numbered anew after the reconnect is the same
    # happening; a state word under a new serial is left to the receiver's diff.
    assert not delivered(second, upload(5, SILENCE))
    assert delivered(second, upload(6))
    # Without a shared memory a new session knows nothing.
    assert delivered(Session(CENTRE, UITD, clock=lambda: T), upload(0))


def test_the_memory_bound_forgets_the_oldest_first() -> None:
    centre = Session(CENTRE, UITD, clock=lambda: T, memory=DeliveryMemory(size=2))
    assert all(delivered(centre, upload(s)) for s in (0, 1, 2))
    assert len(centre.memory) == 2
    assert not delivered(centre, upload(2)) and not delivered(centre, upload(1))
    assert delivered(centre, upload(0))  # pushed out by 2: new again (and now 2 is oldest)
    assert delivered(centre, upload(2))
    with pytest.raises(ValueError, match="size"):
        DeliveryMemory(size=0)


def test_a_duplicate_is_kept_longest() -> None:
    centre = Session(CENTRE, UITD, clock=lambda: T, memory=DeliveryMemory(size=2))
    assert delivered(centre, upload(0)) and delivered(centre, upload(1))
    assert not delivered(centre, upload(0))  # still being resent: 1 is the oldest now
    assert delivered(centre, upload(2))
    assert not delivered(centre, upload(0)) and delivered(centre, upload(1))


def test_a_released_packet_is_delivered_again() -> None:
    """The receiver could not store it and sent no confirm (图3): the resend must not be lost."""
    centre = Session(CENTRE, UITD, clock=lambda: T)
    assert delivered(centre, upload(3, SILENCE))
    centre.release(upload(3, SILENCE))
    assert centre.memory.state(upload(3, SILENCE)) is RxState.NEW
    assert delivered(centre, upload(3, SILENCE))
    assert not delivered(centre, upload(9, SILENCE))  # by content: the same happening
    centre.release(upload(4))  # never received (or evicted): nothing to forget
    assert centre.stats["released"] == 1


def test_keepalives_and_unknown_commands_are_not_remembered() -> None:
    from protocols.gb26875 import DAHUA

    centre = Session(CENTRE, UITD, profile=DAHUA, clock=lambda: T)
    keepalive = Frame(8, 0x07, b"", UITD, CENTRE, T)
    assert delivered(centre, keepalive) and delivered(centre, keepalive)
    assert len(centre.memory) == 0
    control = upload(8, ApplicationData(90, (ClockSync(T),)), command=Command.CONTROL)
    assert delivered(centre, control) and not delivered(centre, control)
    centre.release(keepalive)
    assert centre.stats["released"] == 0


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.sampled_from(RxInput)),
                max_size=40), st.integers(1, 4))
def test_the_memory_agrees_with_a_plain_set_and_stays_bounded(
        steps: list[tuple[int, bool, RxInput]], size: int) -> None:
    """Against a model with no bound: a memory large enough agrees with it exactly; a small one
    may only have forgotten (a duplicate is always one the model knows), and never holds more
    than ``size`` keys."""
    small, large, model = DeliveryMemory(size), DeliveryMemory(100), set[object]()
    for serial, happening, inp in steps:
        frame = upload(serial, SILENCE if happening else DATA)
        keys: set[object] = {(serial, frame.adu)} | ({frame.adu} if happening else set())
        taken = bool(model & keys)
        action, exact = small.apply(frame, inp), large.apply(frame, inp)
        if inp is RxInput.RECEIVE:
            assert exact is (RxAction.DUPLICATE if taken else RxAction.DELIVER)
            assert action is RxAction.DELIVER or taken
            model |= keys  # taken now, under every key of the packet
        else:
            assert exact is (RxAction.FORGET if taken else RxAction.IGNORE)
            model -= keys
            assert small.state(frame) is large.state(frame) is RxState.NEW
        assert len(small) <= size
