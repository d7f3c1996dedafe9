"""``firegate demo``: the whole pipeline on simulators, with embedded defaults.

Panel (GB/T 26875.3 over a pty), Modbus (RTU over a pty) and BLE (BTHome over a mocked BlueZ)
simulators -> the real edge agent -> an MQTT broker (a private Mosquitto unless ``--broker``)
-> the real collector -> its store (embedded SQLite unless ``--influx``), all as child
processes of the demo, watched live until Ctrl-C or ``--duration``.

* :mod:`firegate.demo.plan`: the scenario file and the generated configs;
* :mod:`firegate.demo.stack`: starting and stopping the processes, by PID;
* :mod:`firegate.demo.watch`: what the pipeline is doing, read without touching its data path;
* :mod:`firegate.demo.display`: the live view;
* :mod:`firegate.demo.summary`: the machine-readable account of a run.

The command itself (options, the run loop, the summary) is :mod:`firegate.cli.demo`;
``docs/demo.md`` is the user's guide.
"""
