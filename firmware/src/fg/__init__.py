# firegate firmware for the ESP32 (MicroPython); see docs/firmware.md.
