"""Evaluate a run: ``python tools/eval.py -c RUN_FOLDER_OR_CONFIG [-o ...] [--other-data] [--plots DIR] [--csv FILE]``.

The run's own ``config.yml`` is the base (model, data, settings as trained); ``-o`` overrides go on top.
Evaluating on a test set other than the run's is refused unless ``--other-data`` says it is meant.
The last line of stdout is one JSON object: the metrics, per-class accuracy and the confusion matrix.
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
    parser.add_argument("--plots", metavar="DIR", help="also write DIR/confusion.png (confusion matrix, per-class bars)")
    parser.add_argument("--csv", metavar="FILE", help="also write per-class accuracy as CSV (class, name, accuracy, support)")
    args = parser.parse_args(argv)
    from paddle_lenet.engine import evaluate_checkpoint
    from paddle_lenet.runfolder import resolve_run_config

    cfg, metrics = resolve_run_config(args.config, args.override)
    out = evaluate_checkpoint(cfg, metrics, args.other_data)
    if args.plots:
        from paddle_lenet.report import confusion_png

        out["plots"] = [confusion_png(out, os.path.join(args.plots, "confusion.png"),
                                      f"{cfg['Global']['name']}: {out['model']} on {out['dataset']} test set, "
                                      f"acc_top1 {100 * out['acc_top1']:.2f}%")]
    if args.csv:
        from paddle_lenet.files import write_text

        rows = ["class,name,accuracy,support"] + [
            f"{i},{name},{out['per_class_accuracy'][name]:.6f},{out['support'][name]}"
            for i, name in enumerate(out["class_names"])]
        write_text(args.csv, "\n".join(rows) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    run(main)
