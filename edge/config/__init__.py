"""The agent's configuration: TOML validated in one place (see ``load.py``)."""

from common.config import ConfigError, Table

__all__ = ["ConfigError", "Table"]
