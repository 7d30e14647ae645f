"""How much does mixed pooling's test-time rule matter? Re-evaluate the zoo's trained ``mixed`` runs.

Mixed pooling (Yu et al. 2014) picks max or average pooling at random per window while training; the
package's inference rule is the expectation 0.5·max + 0.5·avg. Implementations that follow a
"use whichever the training drew more often" rule end up with pure max or pure average pooling at test
time. Training does not depend on the rule, so the same trained weights can be scored under all three:
this script does that for every finished run and prints a table (test accuracy in %).

    python docs/results/pooling_zoo_fashion10/mixed_test_rule.py output/pooling_zoo_fashion10/runs/mixed
"""

from __future__ import annotations

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

import paddle.nn as nn  # noqa: E402

from paddle_lenet.engine import Experiment, evaluate_checkpoint  # noqa: E402
from paddle_lenet.models.pooling import MixedPool  # noqa: E402
from paddle_lenet.runfolder import resolve_run_config  # noqa: E402

RULES = {"expectation": None, "max": nn.MaxPool2D, "avg": nn.AvgPool2D}


def score(run: str, rule: str) -> float:
    cfg, metrics = resolve_run_config(run, [])
    if RULES[rule] is None:
        return evaluate_checkpoint(cfg, metrics)["acc_top1"]
    original = Experiment.build_net

    def build_net(self: Experiment) -> nn.Layer:  # the trained network with its mixed layers swapped
        net = original(self)
        for name, layer in list(net.named_sublayers()):
            if isinstance(layer, MixedPool):
                parent = net
                for part in name.split(".")[:-1]:
                    parent = getattr(parent, part)
                setattr(parent, name.split(".")[-1], RULES[rule](layer.k, layer.k))
        return net

    Experiment.build_net = build_net
    try:
        return evaluate_checkpoint(cfg, metrics)["acc_top1"]
    finally:
        Experiment.build_net = original


def main(root: str) -> None:
    runs = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "seed_*", "metrics.json")))
    if not runs:
        raise SystemExit(f"no finished runs under {root}")
    print("| run | " + " | ".join(RULES) + " |\n|---|" + "---|" * len(RULES))
    table = {r: [100 * score(run, r) for run in runs] for r in RULES}
    for i, run in enumerate(runs):
        print(f"| {os.path.basename(run)} | " + " | ".join(f"{table[r][i]:.2f}" for r in RULES) + " |")
    print("| mean | " + " | ".join(f"{sum(v) / len(v):.2f}" for v in table.values()) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "output/pooling_zoo_fashion10/runs/mixed")
