"""The process's stderr while paddle's extension loader runs: captured, with the terminal's kept at hand."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator

_real_stderr: int | None = None  # the terminal's stderr while fd 2 is captured


def real_stderr_fd() -> int:
    """Where a last line must go: the terminal's stderr, also while :func:`captured_stderr` holds fd 2."""
    return _real_stderr if _real_stderr is not None else 2


@contextlib.contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """Send file descriptor 2 — this process's *and its children's* stderr — to a temporary file.

    Paddle's extension loader runs helper processes that print import-time warnings to the inherited
    stderr; Python-level filters cannot reach them. Yields a function returning what was captured.
    """
    global _real_stderr
    sys.stderr.flush()
    saved = os.dup(2)
    tmp = tempfile.TemporaryFile()
    os.dup2(tmp.fileno(), 2)
    _real_stderr = saved
    try:
        yield lambda: (tmp.seek(0), tmp.read().decode(errors="replace"))[1]
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        _real_stderr = None
        os.close(saved)
        tmp.close()
