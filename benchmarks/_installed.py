"""Measure the package as a user runs it: with its bytecode compiled.

`pip install` compiles a package's bytecode; an editable install writes it on first import, unless
PYTHONDONTWRITEBYTECODE is set (as on some CI and sandbox machines). Then every process compiles
all of delivery_sync from source again, about 30 ms a start here, which no installed copy pays.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import delivery_sync


def compile_package() -> str:
    """Write delivery_sync's bytecode (py_compile writes even under PYTHONDONTWRITEBYTECODE); a note to print."""
    folder = Path(delivery_sync.__file__).parent
    compileall.compile_dir(folder, quiet=1)
    return f"bytecode of {folder} compiled, as an installed copy has it"
