"""Evaluate a run's checkpoint: ``python tools/eval.py -c CONFIG [-o Global.checkpoint=PATH]``.

The last line of stdout is one JSON object with the metrics.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import config_parser, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = config_parser("Evaluate a checkpoint on the test split.").parse_args(argv)
    from paddle_lenet.config import load_config
    from paddle_lenet.engine import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(load_config(args.config, args.override))))
    return 0


if __name__ == "__main__":
    run(main)
