"""Run a study: ``python tools/study.py -c configs/study/pooling_vs_stride.yml [-o Study.seeds=5 ...]``.

Writes ``<output_dir>/<study>/`` with every run, ``summary.json``, ``report.md`` and PNG figures.
``--shard K/N`` trains only the K-th of N slices of the runs (0 <= K < N; e.g. one Slurm array task each,
all into one shared ``Global.output_dir``); ``--report`` then builds the report from whatever has finished.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import config_parser, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("Train models × seeds and report statistics.", example="configs/study/pooling_vs_stride.yml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--shard", metavar="K/N", help="train only slice K of N (K from 0), no report")
    group.add_argument("--report", action="store_true", help="no training: report the runs that have finished")
    args = parser.parse_args(argv)
    from paddle_lenet.study import parse_shard, run_study

    summary = run_study(args.config, args.override, parse_shard(args.shard), args.report)
    if summary is not None:
        print(f"wrote {os.path.join(summary['study_root'], 'report.md')}")
    return 0


if __name__ == "__main__":
    run(main)
