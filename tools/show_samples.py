"""A PNG grid of dataset images with their labels (the notebook's step 3, as a file).

``python tools/show_samples.py -c CONFIG --out samples.png [--split train|test] [--n 16]``
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import config_parser, int_between, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("Write a grid of dataset samples with labels as PNG.")
    parser.add_argument("--out", default="samples.png", help="output PNG path")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--n", type=int_between(1, 400), default=16,
                        help="number of images, 1-400 (the first N of the split; a grid of more is unreadable)")
    args = parser.parse_args(argv)
    from paddle_lenet.config import load_config
    from paddle_lenet.runfolder import resolve_run_config

    cfg = resolve_run_config(args.config, args.override)[0] if os.path.isdir(args.config) \
        else load_config(args.config, args.override)
    from paddle_lenet.data import load_split
    from paddle_lenet.report import sample_grid

    data = load_split(cfg["Data"]["name"], cfg["Data"]["root"], args.split)
    name = data.info.description.split(" (")[0]
    sample_grid(data, args.n, args.out, title=f"{name}, {args.split} split: first {min(args.n, len(data))}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
