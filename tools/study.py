"""Run a study: ``python tools/study.py -c configs/study/pooling_vs_stride.yml [-o Study.seeds=5 ...]``.

Writes ``<output_dir>/<study>/`` with every run, ``summary.json``, ``report.md`` and PNG figures.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import config_parser, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = config_parser("Train models × seeds and report statistics.").parse_args(argv)
    from paddle_lenet.study import run_study

    summary = run_study(args.config, args.override)
    print(f"wrote {os.path.join(summary['study_root'], 'report.md')}")
    return 0


if __name__ == "__main__":
    run(main)
