"""Shared plumbing for the thin CLIs in ``tools/``: quiet imports, ``-c``/``-o`` flags, exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable

from .errors import TrainingStopped, UserError


def quiet_paddle() -> None:
    """Silence import-time noise (ccache hints, glog) that would bury the one line that matters."""
    warnings.filterwarnings("ignore", message=".*ccache.*")
    warnings.filterwarnings("ignore", message=".*To copy construct from a tensor.*")
    os.environ.setdefault("GLOG_minloglevel", "2")


def config_parser(description: str) -> argparse.ArgumentParser:
    """PaddleClas-style ``-c CONFIG -o Section.key=value`` parser that tools extend."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file, e.g. configs/lenet.yml")
    parser.add_argument(
        "-o", "--override", action="append", default=[], metavar="Section.key=value",
        help="override a config value (repeatable); values are parsed as YAML scalars or lists",
    )
    return parser


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a tool's ``main`` and turn user errors into one stderr line and exit code 2."""
    quiet_paddle()
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(code or 0)
