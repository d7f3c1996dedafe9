"""Simulated Modbus RTU/TCP field devices (``firegate sim modbus``).

* :mod:`.model`: the devices' physical state, scenario dynamics and faults on a controllable
  clock (pure, no I/O); :mod:`.actions`: what scenario events do, as a table;
  :mod:`.contacts`: two-state contacts with bounce;
* :mod:`.scenario`: the ``[modbus]`` table of a scenario TOML file, validated;
* :mod:`.server`: the pymodbus adapter serving a bus over TCP, RTU on a pty, or a serial port;
* :mod:`.ptylink`: a pty pair with a baud-rate-paced relay;
* :mod:`.cli`: the command. Register maps live in :mod:`protocols.registers`.

Nothing is imported here, so importing the package stays cheap.
"""
