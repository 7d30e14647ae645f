"""Everything the package writes goes through here: atomic files, one-line filesystem errors, run names, locks.

Why one module: the promises "nothing half-written", "no ``.tmp`` left holding space", "a full or read-only
disk is one line, not a traceback" and "a run folder has one owner" must hold for every file the package
writes, so they are implemented once and every writer uses them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

from .errors import RunFolderError, UserError

NAME_RE = re.compile(r"^[A-Za-z0-9_+=-][A-Za-z0-9_.+=-]*$")
MAX_NAME = 100

_FIXES = {
    errno.ENOSPC: "the disk is full; free some space and run the same command again",
    errno.EDQUOT: "the disk quota is exceeded; free some space and run the same command again",
    errno.EROFS: "the file system is read-only; choose a writable -o Global.output_dir",
    errno.EACCES: "permission denied; choose a writable -o Global.output_dir",
    errno.EPERM: "permission denied; choose a writable -o Global.output_dir",
    errno.ENAMETOOLONG: "the path is too long; choose a shorter name or folder",
    errno.ENOTDIR: "a file stands where a folder is needed; move it or choose another path",
    errno.EEXIST: "a file stands where a folder is needed; move it or choose another path",
    errno.EISDIR: "a folder stands where a file is needed; choose another path",
}


class FileSystemError(UserError):
    """The file system refused a write: full, read-only, permission, a file where a folder should be."""


def fs_error(e: OSError, what: str = "") -> FileSystemError:
    """An OSError as the one line a user can act on."""
    path = e.filename or what
    fix = _FIXES.get(e.errno or 0, "check the path and the disk")
    return FileSystemError(f"cannot write '{path}': {e.strerror or e}; {fix}")


def check_name(value: Any, what: str) -> str:
    """A run/study/label name is one plain path component, never a path: no '/', no '..', not absolute."""
    if not isinstance(value, str) or not value:
        raise RunFolderError(f"{what} must be a non-empty name, got {value!r}")
    if len(value) > MAX_NAME or not NAME_RE.match(value) or value.strip(".") == "":
        raise RunFolderError(
            f"{what}={value!r} is not a plain name; use up to {MAX_NAME} letters, digits, '_', '-', '+', '=', '.' "
            f"(no '/', no '..', not starting with '.')")
    return value


def makedirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise fs_error(e, path) from None
    if not os.path.isdir(path):
        raise FileSystemError(f"cannot use '{path}' as a folder: a file has that name; move it or choose another path")


def atomic_write(path: str, write: Callable[[str], None], fsync: bool = False) -> None:
    """``write(tmp)`` then rename over ``path``; on any failure the temporary file is removed.

    Readers see either the old file or the whole new one. SIGINT/SIGTERM arriving during the write is
    held back until the rename is done (see :func:`deferred_signals`).
    """
    tmp = f"{path}.tmp{os.getpid()}"
    with deferred_signals():
        try:
            write(tmp)
            if fsync:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            _remove_quietly(tmp)
            raise fs_error(e, path) from None
        except BaseException:
            _remove_quietly(tmp)
            raise


def write_text(path: str, text: str) -> None:
    def w(p: str) -> None:
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, w)


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str, what: str = "file", kind: type = dict) -> Any:
    """A JSON file the package wrote (a ``kind``, by default an object); a damaged one is a one-line error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        if not isinstance(value, kind):
            raise ValueError(f"holds a {type(value).__name__}, not a {kind.__name__}")
        return value
    except FileNotFoundError:
        raise RunFolderError(f"{what} '{path}' is missing") from None
    except (OSError, ValueError) as e:
        why = str(e)[:80] if str(e).startswith("holds a") else type(e).__name__
        raise RunFolderError(f"{what} '{path}' is unreadable or corrupt ({why}); "
                             f"delete it and run the command that writes it again") from None


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


# --------------------------------------------------------------------------- signals
_deferred_depth = 0
_pending: list[int] = []


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while a file is being replaced; re-deliver them afterwards.

    Only the main thread can own signal handlers; elsewhere this is a no-op.
    """
    global _deferred_depth
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}
    if _deferred_depth == 0:
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, lambda signum, frame: _pending.append(signum))
    _deferred_depth += 1
    try:
        yield
    finally:
        _deferred_depth -= 1
        if _deferred_depth == 0:
            for s, h in old.items():
                signal.signal(s, h)
            while _pending:
                os.kill(os.getpid(), _pending.pop(0))


# --------------------------------------------------------------------------- the run-folder lock
class FolderLock:
    """One owner per folder: a POSIX lock on ``<folder>/.lock`` held for the owner's lifetime.

    ``lockf`` (fcntl POSIX locks) rather than ``flock`` because Linux NFS clients honour it, so shards of a
    study on several machines writing into one shared ``output_dir`` cannot collide either. The file holds
    the owner's host and PID for the error message; it is never deleted (deleting lock files races).
    """

    def __init__(self, folder: str, what: str = "run folder") -> None:
        self.folder, self.what = folder, what
        self.path = os.path.join(folder, ".lock")
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        makedirs(self.folder)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise fs_error(e, self.path) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(f"{self.what} '{self.folder}' is in use by {owner}; wait for it to finish, "
                                 f"or choose another -o Global.name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the lock
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
