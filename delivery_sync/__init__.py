"""delivery-sync: a fast local SQLite replica of slow remote delivery statistics."""

from importlib.metadata import version as _version

__version__ = _version("delivery-sync")  # one source of truth: pyproject.toml
