"""Parse the project's own Python files for the tests that read the code rather than run it.

Python 3.11's ``ast.parse`` keeps its recursion counter in interpreter-wide state. A garbage
collection inside the parse can finalise an object that formats a traceback, and 3.11's
traceback formatting calls ``ast.parse`` itself: the inner parse resets the counter and the
outer one fails with ``SystemError: AST constructor recursion depth mismatch`` (CPython
gh-106905, pytest-dev/pytest#10763). A full run leaves such objects behind (a websocket send
task whose exception nobody read), so the collector is paused for the parse, and each file is
parsed once.
"""

from __future__ import annotations

import ast
import functools
import gc
from pathlib import Path


@functools.cache
def parsed(path: Path) -> ast.Module:
    """The module's syntax tree, parsed with the garbage collector paused."""
    source = path.read_text()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, str(path))
    finally:
        if was_enabled:
            gc.enable()
