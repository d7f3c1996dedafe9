"""Wire formats of firegate, pure and I/O-free.

* :mod:`protocols.gb26875` - the GB/T 26875.3-2011 fire-panel protocol (frames, application data,
  code tables, dialect profiles, session rules).
* :mod:`protocols.wire` - firegate's own MQTT payload contract shared by edge, firmware and
  collector.

Nothing in this package opens a file, a socket or a serial port, starts a thread or touches
asyncio; ``tests/test_purity.py`` walks its imports to keep it that way.
"""
