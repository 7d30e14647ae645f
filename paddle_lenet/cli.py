"""Shared plumbing for the thin CLIs in ``tools/``: signals, quiet imports, ``-c``/``-o`` flags, exit codes.

Exit codes (the README's "Guarantees" lists them): 0 success; 2 a problem in the input that the one-line
message names (config, data, run folder, file system); 3 training diverged (non-finite loss); 130 stopped by
SIGINT/SIGTERM; 1 anything else (a failed export check, a study run that failed, an internal error).

:func:`install_signal_handlers` (called by each tool first, never at import) makes SIGINT/SIGTERM exit 130
with one line from the first instant — during paddle's import and the kernel build too. Training replaces it
with its own graceful handler (finish the step, checkpoint) while a run is in progress, and restores it after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable

from .errors import TrainingStopped, UserError
from .stdio import real_stderr_fd

MIN_PADDLE = (3, 0)


def _descendants() -> list[int]:
    """This process's children, grandchildren, ... (Linux ``/proc``; elsewhere none are found)."""
    parents: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        ppid = int(f.read().rsplit(b")", 1)[1].split()[1])  # the name may hold spaces and ")"
                    parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _early_handler(signum: int, frame: object) -> None:
    # the kernel build's compiler runs in child processes (paddle's loader: a shell, a setup script, g++): left
    # running, it would go on writing into the kernel cache while the next process builds there too
    for pid in _descendants():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    if not _quiet_stops:
        name = signal.Signals(signum).name
        msg = f"stopped: {name}; nothing is half-written (files are replaced whole or not at all)\n"
        os.write(real_stderr_fd(), msg.encode())
    os._exit(130)


# a study's worker process (``run(..., quiet_stops=True)``): the study that signalled it says the one line for all
_quiet_stops = False


def install_signal_handlers() -> None:
    """Exit 130 with one line on SIGINT/SIGTERM: what a tool wants from its first instant (imports, the kernel
    build). Called by the ``tools/`` scripts before anything else; never by importing the library.

    numpy is imported here with the two signals blocked: its BLAS starts worker threads at import, which inherit
    the block. Otherwise a signal arriving while paddle imports (the main thread holds it back then, see
    ``_paddle``) is delivered to one of those threads, and paddle's import-time C handler ends the process with
    −15 and no line.
    """
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(s, _early_handler)
        except ValueError:  # not the main thread
            return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        import numpy  # noqa: F401
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def quiet_paddle() -> None:
    """Import paddle without its import-time noise (the "No ccache found" hint, glog) burying the line that matters.

    A plain ``filterwarnings`` is not enough: paddle's import itself installs an "always" filter in front
    of ours. Recording the import's warnings swallows them and restores the filters afterwards.
    """
    warnings.filterwarnings("ignore", message=".*To copy construct from a tensor.*")
    from . import _paddle  # noqa: F401


def paddle_version() -> tuple[str, tuple[int, ...]] | None:
    """Installed paddle's version, read from its metadata (no import: that takes seconds)."""
    from importlib import metadata

    for dist in ("paddlepaddle", "paddlepaddle-gpu"):
        try:
            v = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        nums = []
        for part in v.split(".")[:2]:
            digits = "".join(ch for ch in part if ch.isdigit())
            nums.append(int(digits or 0))
        return v, tuple(nums)
    return None


def require_paddle() -> None:
    """One line instead of a traceback deep in the kernels when the installed paddle is too old or missing."""
    found = paddle_version()
    if found is None:
        raise UserError("PaddlePaddle is not installed; pip install paddlepaddle (CPU) or see the README's GPU recipe")
    v, nums = found
    if nums < MIN_PADDLE:
        raise UserError(f"paddle_lenet needs PaddlePaddle >= {'.'.join(map(str, MIN_PADDLE))}, found {v}; for GPUs "
                        f"the 3.x wheels are on Paddle's own index (see the README's GPU recipe)")


class ArgParser(argparse.ArgumentParser):
    """argparse with the package's error format: one stderr line, exit 2 (argparse prints usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _hold_signals()
        print(f"error: {message}; see {self.prog} --help", file=sys.stderr, flush=True)
        sys.exit(2)


def int_at_least(lo: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``lo``, or argparse's one-line error naming the value."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v}")
        return v

    return parse


def int_between(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: an integer in [lo, hi], or argparse's one-line error naming the value and the range."""
    at_least = int_at_least(lo)

    def parse(text: str) -> int:
        v = at_least(text)
        if v > hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {v}")
        return v

    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def config_parser(description: str, example: str = "configs/lenet.yml") -> argparse.ArgumentParser:
    """PaddleClas-style ``-c CONFIG -o Section.key=value`` parser that tools extend."""
    parser = ArgParser(description=description)
    parser.add_argument("-c", "--config", required=True, help=f"YAML config file, e.g. {example}")
    parser.add_argument(
        "-o", "--override", action="append", default=[], metavar="Section.key=value",
        help="override a config value (repeatable); values are parsed as YAML scalars or lists",
    )
    return parser


def _internal_error(e: BaseException) -> int:
    """Last resort: one line, the traceback kept in a file for a bug report (PADDLE_LENET_DEBUG=1 shows it)."""
    if os.environ.get("PADDLE_LENET_DEBUG"):
        traceback.print_exc()
        return 1
    try:
        fd, path = tempfile.mkstemp(prefix="paddle_lenet-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(" ".join(sys.argv) + "\n\n" + traceback.format_exc())
        where = f"; details in {path}"
    except OSError:
        where = "; run again with PADDLE_LENET_DEBUG=1 for details"
    msg = str(e).strip().splitlines()[-1][:200] if str(e).strip() else ""
    print(f"internal error: {type(e).__name__}: {msg}{where} (please report it)", file=sys.stderr, flush=True)
    return 1


class _PipeTolerant:
    """stdout that survives its reader going away (``train.py | head``): the work goes on, the output is dropped.

    A closed pipe must not stop a run halfway with exit 0; after the first EPIPE everything goes to /dev/null.
    """

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        self._stream = open(os.devnull, "w")

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None,
        quiet_stops: bool = False) -> None:
    """Run a tool's ``main``; every way out is an exit code and at most one stderr line.

    ``quiet_stops``: a stop by SIGINT/SIGTERM exits 130 without a line — for a study's workers, which the study stops
    with SIGTERM when it is itself stopped: the study prints the one line (its workers share its stderr).
    """
    from .files import fs_error

    global _quiet_stops
    _quiet_stops = quiet_stops
    install_signal_handlers()
    for stream in (sys.stdout, sys.stderr):  # a C/ASCII locale: "×" and "±" must not end a tool
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    sys.stdout = _PipeTolerant(sys.stdout)
    try:
        require_paddle()
        code = main(argv)
    except UserError as e:
        _hold_signals()
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except TrainingStopped as e:
        _hold_signals()
        if not (quiet_stops and e.exit_code == 130):
            print(f"stopped: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except BrokenPipeError:  # `tool | head`: the reader has what it wanted
        _hold_signals()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        _exit(0)
    except KeyboardInterrupt:
        _hold_signals()
        if not quiet_stops:
            print("stopped: SIGINT", file=sys.stderr, flush=True)
        code = 130
    except MemoryError:
        _hold_signals()
        print("error: out of memory; use a smaller Data.batch_size or Data.train_limit", file=sys.stderr, flush=True)
        code = 2
    except OSError as e:  # the file system refused something not wrapped closer to the write
        _hold_signals()
        print(f"error: {fs_error(e)}", file=sys.stderr, flush=True)
        code = 2
    except SystemExit as e:  # argparse's errors and --help
        _hold_signals()
        if e.code is None or isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr, flush=True)
            code = 1
    except Exception as e:
        _hold_signals()
        code = _internal_error(e)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _hold_signals()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    _exit(code or 0)


def _hold_signals() -> None:
    """From the moment the answer is decided, SIGINT/SIGTERM wait: a signal must neither add a second line after
    the error line nor — interpreter shutdown puts the default handlers back — end the process with −15.
    Blocking covers the main thread; threads started since (paddle's, OpenMP's) would still take a signal and, once
    shutdown has put SIG_DFL back, die of it: ignoring the two signals covers every thread, and shutdown keeps an
    ignored signal ignored."""
    with contextlib.suppress(ValueError, OSError):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)


def _exit(code: int) -> None:
    _hold_signals()
    sys.exit(code)
