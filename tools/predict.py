"""Classify image files with an exported model through Paddle Inference.

``python tools/predict.py --model-dir DIR IMAGE... [--topk 3] [--json] [--invert]``. Any PNG/JPG size or mode
is converted as in training: transparency over white, to grayscale or RGB, resized to the model's input,
scaled to [0, 1]. An unreadable file is reported on stderr, the others are still classified, and the exit
code is 2 at the end.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import ArgParser, positive_int, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(description="Classify images with an exported model (Paddle Inference).")
    parser.add_argument("--model-dir", required=True, help="folder written by tools/export.py")
    parser.add_argument("images", nargs="+", help="PNG/JPG files")
    parser.add_argument("--topk", type=positive_int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument("--invert", action="store_true", help="dark-on-light drawings: invert to MNIST's light-on-dark")
    args = parser.parse_args(argv)
    from paddle_lenet.predict import predict_files

    errors: list[str] = []

    def report(message: str) -> None:
        errors.append(message)
        print(f"error: {message}", file=sys.stderr, flush=True)

    for r in predict_files(args.model_dir, args.images, args.topk, args.invert, on_error=report):
        if args.json:
            print(json.dumps(r))
        else:
            best = ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["topk"])
            print(f"{r['file']}: {best}" + (f"  ({r['hint']})" if "hint" in r else ""))
    return 2 if errors else 0


if __name__ == "__main__":
    run(main)
