"""The agent's configuration: TOML validated in one place (see ``load.py``)."""

from .validators import ConfigError, Table

__all__ = ["ConfigError", "Table"]
