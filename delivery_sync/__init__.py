"""delivery-sync: a fast local SQLite replica of slow remote delivery statistics."""


def __getattr__(name: str) -> str:
    # The version from the package metadata (pyproject.toml is its only source), read on demand:
    # importlib.metadata costs every command ~30 ms of start-up, and only --version needs it.
    if name == "__version__":
        from importlib.metadata import version

        return version("delivery-sync")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
