"""Re-derive what a published study's numbers imply from its recorded summary, without re-training.

    python docs/results/republish.py [docs/results/NAME ...]

For each published study: the FLOPs of every model are counted again on the model its study config builds
(the model a run trains, accelerated as in training: issue 18 found LIP's published 0.83 M, which missed its
logit convolutions), the comparisons are recomputed from the recorded per-seed accuracies with the current
statistics (Holm, permutation, minimum detectable effect, equivalence within the config's margin), and the
report and figures are rendered again. Accuracies, times and shift robustness are the recorded ones, untouched.
"""

from __future__ import annotations

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from paddle_lenet.engine import Experiment  # noqa: E402
from paddle_lenet.report import write_study_report  # noqa: E402
from paddle_lenet.study import compare_models, load_study  # noqa: E402


def study_config(name: str) -> str:
    for suffix in ("_fashion10", "_fashion", "_mnist5k"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return os.path.join(ROOT, "configs", "study", f"{name}.yml")


def republish(folder: str) -> None:
    path = os.path.join(folder, "summary.json")
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    data = "MNIST5k" if summary["dataset"] == "MNIST5k" else "MNIST"  # the architecture only needs the input shape
    base, jobs = load_study(study_config(os.path.basename(folder)), [f"Data.name={data}", "Study.seeds=1"], gpus=[])
    for job in jobs:
        if job["label"] in summary["models"]:
            exp = Experiment(job["cfg"], load_train=False, load_test=False)
            summary["models"][job["label"]]["flops"] = exp.flops()
    st = base["Study"]
    pairs = [[c["a"], c["b"]] for c in summary["comparisons"]]
    summary["comparisons"] = compare_models(summary["models"], pairs, st["alpha"], st["equivalence_margin"])
    summary["alpha"], summary["equivalence_margin"] = st["alpha"], st["equivalence_margin"]
    write_study_report(summary, folder)
    print(f"{folder}: " + ", ".join(f"{k} {m['flops'] / 1e6:.2f} M" for k, m in summary["models"].items()))


if __name__ == "__main__":
    for folder in sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "docs", "results", "*", ""))):
        if os.path.exists(os.path.join(folder, "summary.json")):
            republish(folder.rstrip("/"))
