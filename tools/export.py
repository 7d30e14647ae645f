"""Export a run for deployment: ``python tools/export.py -c RUN_FOLDER_OR_CONFIG [-o ...] --out DIR``.

Reads the run's own ``config.yml``. Writes a Paddle Inference model (``model.json`` + ``model.pdiparams``,
dynamic batch), ``meta.json`` and, with the ``[onnx]`` extra installed, ``model.onnx``; fails unless all agree
with the dygraph model (on the run's test images, or on random images when the dataset is not at hand).
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import config_parser, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("Export a trained run (Paddle Inference + ONNX) and verify it.")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    from paddle_lenet.export import export_run
    from paddle_lenet.runfolder import resolve_run_config

    cfg, _ = resolve_run_config(args.config, args.override)
    print(json.dumps(export_run(cfg, args.out)))
    return 0


if __name__ == "__main__":
    run(main)
