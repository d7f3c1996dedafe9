"""The top floor: the ``firegate`` command line, the demo and provisioning.

This is the only package that imports more than one runtime. Below it sit three siblings
that never import each other: :mod:`edge` (the gateway agent), :mod:`collector` (the cloud
service) and :mod:`simulators`; they share only :mod:`protocols` (the wire formats, pure) and
:mod:`common` (config validation, back-off). ``docs/architecture.md`` draws the house;
``tests/test_layering.py`` keeps it so.
"""
