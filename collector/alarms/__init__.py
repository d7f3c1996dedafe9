"""Alarms that reach people: lifecycle and escalation (issue 15, docs/alarms.md).

* :mod:`~collector.alarms.model`: the alarm, its timeline and audit entries, the changes fed
  to subscribers (pure data);
* :mod:`~collector.alarms.config`: ``[[escalation]]`` policies and ``[alarms]``;
* :mod:`~collector.alarms.store`: the SQLite file (``alarms.sqlite`` in the state directory);
* :mod:`~collector.alarms.book`: :class:`AlarmBook`, the thread-safe book the writer feeds and
  the API reads and acts on;
* :mod:`~collector.alarms.escalation`: the steps' notifications and the thread that fires
  them on time.

This package's ``__init__`` imports nothing: :mod:`collector.config` imports its config module.
"""
