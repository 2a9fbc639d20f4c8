"""httpx without its command-line tool, which we never run.

httpx imports its command-line tool (with rich, click and pygments: about 50 ms, a sixth of a
`sync`'s start) unless that import fails, when it keeps a stub `httpx.main` that says what to
install. The import is made to fail once, when httpx is first imported, and `httpx._main` is
left importable afterwards for anyone who asks for it by name.
"""

from __future__ import annotations

import sys


def _import_httpx():
    skip = "httpx" not in sys.modules and "httpx._main" not in sys.modules
    if skip:
        sys.modules["httpx._main"] = None  # an ImportError for `from ._main import main`
    try:
        import httpx
    finally:
        if skip:
            del sys.modules["httpx._main"]
    return httpx


httpx = _import_httpx()
