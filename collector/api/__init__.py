"""The HTTP API and the live web console (issue 15)."""
