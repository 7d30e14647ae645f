"""Measure training/eval throughput of the package's own path, optionally against PyTorch eager.

``python tools/benchmark.py -c configs/lenet.yml -o Data.name=FashionMNIST -o Data.root=DIR --steps 200
[--pairs 5] [--reference torch] [--json]``. Run it on a quiet machine: two CPU-heavy processes on two
cores distort both sides.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import config_parser, nonnegative_int, positive_int, run  # noqa: E402
from paddle_lenet.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = config_parser("Benchmark the training path.")
    parser.add_argument("--steps", type=positive_int, default=200, help="optimizer steps per timed block (may span epochs)")
    parser.add_argument("--warmup", type=nonnegative_int, default=30)
    parser.add_argument("--pairs", type=positive_int, default=5, help="timed blocks (alternating with the reference)")
    parser.add_argument("--reference", choices=("torch", "torch-compile"),
                        help="also time the same model in PyTorch, eager or torch.compile (inductor); alternating blocks")
    parser.add_argument("--torch-threads", type=positive_int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    parser.add_argument("--all", action="store_true",
                        help="every LeNet-family configuration (each Arch.pool, the GAP head, LeNet5_classic, LeNet_BN, "
                             "its strided twin), as a table of img/s relative to max-pool LeNet (their blocks alternate "
                             "with LeNet's)")
    args = parser.parse_args(argv)
    from paddle_lenet.config import load_config

    cfg = load_config(args.config, args.override)
    from paddle_lenet.bench import TORCH_MODELS

    has_twin = cfg["Arch"]["name"] in TORCH_MODELS and cfg["Arch"]["pool"] is None and cfg["Arch"]["head"] in (None, "fc")
    if args.reference and not has_twin and not args.all:
        raise UserError(f"--reference {args.reference} has twins of {', '.join(TORCH_MODELS)} only (their own pooling "
                        f"and head); drop Arch.pool / Arch.head")
    if args.reference:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UserError("--reference torch needs PyTorch: pip install torch (it is not a dependency)") from None
    cfg["Global"]["vdl"] = False
    from paddle_lenet.bench import benchmark, benchmark_family

    if args.all:
        rows = benchmark_family(cfg, args.steps, args.warmup, args.pairs, args.reference, args.torch_threads)
        if args.json:
            print(json.dumps(rows))
        else:
            print(f"{'configuration':<28} {'train img/s':>12} {'vs LeNet':>9} {'vs torch':>9} {'eval img/s':>11}")
            for r in rows:
                torch_ratio = f"{r['ratio_vs_torch']:.2f}x" if "ratio_vs_torch" in r else "-"
                print(f"{r['label']:<28} {r['train_images_per_second']:>12,.0f} {r['vs_lenet']:>8.2f}x "
                      f"{torch_ratio:>9} {r['eval_images_per_second']:>11,.0f}")
        return 0

    r = benchmark(cfg, args.steps, args.warmup, args.pairs, args.reference, args.torch_threads)
    if args.json:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k:>30}: {v:,.1f}" if isinstance(v, float) else f"{k:>30}: {v}")
    return 0


if __name__ == "__main__":
    run(main)
