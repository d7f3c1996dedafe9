"""Wire formats of firegate, pure and I/O-free.

* :mod:`protocols.gb26875` - the GB/T 26875.3-2011 fire-panel protocol (frames, application data,
  code tables, dialect profiles, session rules).
* :mod:`protocols.wire` - firegate's own MQTT payload contract shared by edge, firmware and
  collector.
* :mod:`protocols.panel_records` - GB/T 26875.3 uploads to wire records (the bridge any process
  uses: the agent's panel driver, the collector as a monitoring centre).
* :mod:`protocols.registers` - Modbus register maps and device profiles to wire records.

Nothing in this package opens a file, a socket or a serial port, starts a thread or touches
asyncio; ``tests/test_purity.py`` walks its imports to keep it that way.
"""
