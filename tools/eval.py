"""Evaluate a run: ``python tools/eval.py -c RUN_FOLDER_OR_CONFIG [-o ...] [--other-data]``.

The run's own ``config.yml`` is the base (model, data, settings as trained); ``-o`` overrides go on top.
Evaluating on a test set other than the run's is refused unless ``--other-data`` says it is meant.
The last line of stdout is one JSON object with the metrics.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import config_parser, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("Evaluate a run's checkpoint on its test split.")
    parser.add_argument("--other-data", action="store_true",
                        help="allow a test set other than the one the run was evaluated on")
    args = parser.parse_args(argv)
    from paddle_lenet.engine import evaluate_checkpoint
    from paddle_lenet.runfolder import resolve_run_config

    cfg, metrics = resolve_run_config(args.config, args.override)
    print(json.dumps(evaluate_checkpoint(cfg, metrics, args.other_data)))
    return 0


if __name__ == "__main__":
    run(main)
