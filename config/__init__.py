"""Settings for likeflow, read from `LIKEFLOW_*` environment variables (the only place that reads them)."""

from config.settings import ConfigError, Settings, child_env, load_settings, unknown_variables

__all__ = ["ConfigError", "Settings", "child_env", "load_settings", "unknown_variables"]
