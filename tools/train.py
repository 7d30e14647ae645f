"""Train one run: ``python tools/train.py -c configs/lenet.yml [-o Section.key=value ...]``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import config_parser, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = config_parser("Train a model and write its run folder.").parse_args(argv)
    from paddle_lenet.config import load_config

    cfg = load_config(args.config, args.override)  # validated before paddle is even imported
    from paddle_lenet.engine import train

    train(cfg)
    return 0


if __name__ == "__main__":
    run(main)
