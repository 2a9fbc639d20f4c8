"""delivery-sync: a fast local SQLite replica of slow remote delivery statistics."""

__version__ = "0.1.0"
