"""The built-in ``resend`` command: the collector asks again for seqs its gap ledger misses.

``args``: ``ep`` (the epoch's 16 hex digits; absent: 0), ``first`` and ``last`` (the seq
range, inclusive). The outbox puts the records of that range it still holds back to pending
(those sent and awaiting confirmation; pending and in-flight ones are on their way already)
and the answer says which runs it no longer has, which the collector then reports as lost
(docs/wire-protocol.md, "Command")::

    {"resent": 7, "missing": [[1041, 1044], [1050, 1050]]}

An epoch that is not the outbox's: everything is missing (those records belong to a store
this gateway no longer has). Arguments are checked strictly; a refusal is ``ok=false``.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.drivers.base import CommandError, CommandHandler
from edge.outbox import Outbox, OutboxError
from protocols.wire import MAX_STORED_RANGES, SEQ_LIMIT, Command, JsonValue, WireError

# The epoch's wire form has one home, the contract's own check (not re-written here).
from protocols.wire._checks import parse_epoch

__all__ = ["MAX_RESEND_SPAN", "resend_handler"]

MAX_RESEND_SPAN = 100_000
"""Seqs one ``resend`` may name (``last - first + 1``): the outbox reads the stored seqs of
the range while holding its connection, so a wider gap is asked for in parts."""
_ARGS = ("ep", "first", "last")


def resend_handler(outbox: Outbox) -> CommandHandler:
    """The ``resend`` handler over ``outbox``."""

    async def resend(command: Command) -> Mapping[str, JsonValue]:
        epoch, first, last = _arguments(command.args)
        try:
            done = await outbox.resend(epoch, first, last)
        except OutboxError as e:
            raise CommandError(f"outbox: {e}") from e
        if len(done.missing) > MAX_STORED_RANGES:
            # The held ones are pending again all the same; the answer would not fit.
            raise CommandError(f"{len(done.missing)} missing runs (more than "
                               f"{MAX_STORED_RANGES}); ask for a narrower range")
        return {"resent": done.resent, "missing": [[a, b] for a, b in done.missing]}

    return resend


def _arguments(args: Mapping[str, object]) -> tuple[int, int, int]:
    unknown = sorted(set(args) - set(_ARGS))
    if unknown:
        raise CommandError(f"args.{unknown[0]}: unknown argument (resend takes ep, first, last)")
    try:
        epoch = parse_epoch("args.ep", args["ep"]) if "ep" in args else 0
    except WireError as e:
        raise CommandError(str(e)) from None
    first, last = _seq(args, "first"), _seq(args, "last")
    if first > last:
        raise CommandError(f"args.last: must be at least first ({first}), got {last}")
    if last - first >= MAX_RESEND_SPAN:
        raise CommandError(f"args.last: at most {MAX_RESEND_SPAN} seqs per resend, got "
                           f"{first}..{last}")
    return epoch, first, last


def _seq(args: Mapping[str, object], name: str) -> int:
    value = args.get(name)
    if value is None:
        raise CommandError(f"args.{name}: is required")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < SEQ_LIMIT:
        raise CommandError(f"args.{name}: a seq (an integer 1..2**53-1), got {value!r}")
    return value
