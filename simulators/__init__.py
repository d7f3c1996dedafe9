"""Simulated field devices for tests, CI, demos and installers' bench tests."""
