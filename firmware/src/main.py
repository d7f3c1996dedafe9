# Board entry point: MicroPython runs main.py after boot. The firmware itself is the fg package
# (copied as .mpy); this file stays source so that it is found on every port.
import sys

from fg import app

rc = app.main(sys.argv[1] if len(sys.argv) > 1 else "config.json")
if rc and sys.platform != "esp32":
    sys.exit(rc)  # the unix port: a bad config is a non-zero exit; a board stays in the REPL
