"""nommer: distributed media encoding (a Python 3 rebuild of media-nommer)."""

__version__ = "0.1.0"
