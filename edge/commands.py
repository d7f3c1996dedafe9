"""Downward commands routed to the drivers that carry them out.

Each driver offers handlers for the commands it knows (``Driver.commands()``). One handler per
command goes to the uplink's control channel; when several drivers offer the same command
(two panels both read their state), it fans out to all of them and the ack reports each
driver's result. It fails only if every driver failed, with every driver's reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from edge.drivers.base import CommandError, CommandHandler, Driver
from protocols.wire import Command, CommandName, JsonValue

__all__ = ["merge_handlers"]


def merge_handlers(drivers: Sequence[Driver]) -> dict[CommandName, CommandHandler]:
    offered: dict[CommandName, list[tuple[str, CommandHandler]]] = {}
    for driver in drivers:
        for name, handler in driver.commands().items():
            offered.setdefault(name, []).append((driver.name, handler))
    merged: dict[CommandName, CommandHandler] = {}
    for name, handlers in offered.items():
        merged[name] = handlers[0][1] if len(handlers) == 1 else _fan_out(handlers)
    return merged


def _fan_out(handlers: list[tuple[str, CommandHandler]]) -> CommandHandler:
    async def run(command: Command) -> Mapping[str, JsonValue]:
        outcomes = await asyncio.gather(*(h(command) for _, h in handlers),
                                        return_exceptions=True)
        results: dict[str, JsonValue] = {}
        errors: list[str] = []
        for (driver, _), outcome in zip(handlers, outcomes, strict=True):
            if isinstance(outcome, CommandError):
                errors.append(f"{driver}: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results[driver] = dict(outcome)
        if not results:
            raise CommandError("; ".join(errors))
        if errors:
            results["errors"] = list(errors)
        return results

    return run
