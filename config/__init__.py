"""Settings for likeflow, read from `LIKEFLOW_*` environment variables (the only place that reads them)."""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
