"""Shared plumbing for the thin CLIs in ``tools/``: signals, quiet imports, ``-c``/``-o`` flags, exit codes.

Exit codes (the README's "Guarantees" lists them): 0 success; 2 a problem in the input that the one-line
message names (config, data, run folder, file system); 3 training diverged (non-finite loss); 130 stopped by
SIGINT/SIGTERM; 1 anything else (a failed export check, a study run that failed, an internal error).

Importing this module installs the SIGINT/SIGTERM handler, so a tool can be interrupted cleanly from the
first instant — during paddle's import and the kernel build too. Training replaces it with its own
graceful handler (finish the step, checkpoint) while a run is in progress.
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
from collections.abc import Callable, Iterator

from .errors import TrainingStopped, UserError

MIN_PADDLE = (3, 0)


_real_stderr: int | None = None  # the terminal's stderr while fd 2 is captured (see captured_stderr)


def _early_handler(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    msg = f"stopped: {name}; nothing is half-written (files are replaced whole or not at all)\n"
    os.write(_real_stderr if _real_stderr is not None else 2, msg.encode())
    os._exit(130)


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


def install_signal_handlers() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(s, _early_handler)
        except ValueError:  # not the main thread
            pass


install_signal_handlers()


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


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def config_parser(description: str) -> argparse.ArgumentParser:
    """PaddleClas-style ``-c CONFIG -o Section.key=value`` parser that tools extend."""
    parser = ArgParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file, e.g. configs/lenet.yml")
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


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a tool's ``main``; every way out is an exit code and at most one stderr line."""
    from .files import fs_error

    try:
        require_paddle()
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except BrokenPipeError:  # `tool | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        print("stopped: SIGINT", file=sys.stderr, flush=True)
        code = 130
    except MemoryError:
        print("error: out of memory; use a smaller Data.batch_size or Data.train_limit", file=sys.stderr, flush=True)
        code = 2
    except OSError as e:  # the file system refused something not wrapped closer to the write
        print(f"error: {fs_error(e)}", file=sys.stderr, flush=True)
        code = 2
    except SystemExit:
        raise
    except Exception as e:
        code = _internal_error(e)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code or 0)
