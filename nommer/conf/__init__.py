"""Settings: defaults (``nommer.conf.defaults``) overridden by a nomconf module,
validated by ``nommer.conf.loader``."""

from nommer.conf.loader import (
    DEFAULT_CONFIG,
    ConfigErrors,
    Settings,
    load_settings,
    redacted,
)

__all__ = ["DEFAULT_CONFIG", "ConfigErrors", "Settings", "load_settings", "redacted"]
