"""The "see why" jobs over trained runs (``tools/explain.py``, the notebook): disagreements, feature maps, saliency.

Each job loads runs through :func:`paddle_lenet.load_run` (identity-checked weights), computes its data with
:mod:`paddle_lenet.analysis`, and writes a PNG and a JSON of the same numbers.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from . import LoadedRun, load_run
from .analysis import class_names, disagreements, feature_maps, predict, saliency
from .errors import RunFolderError
from .files import write_json
from .report import feature_maps_png, gallery_png, saliency_png


def study_runs(study_root: str, label: str) -> list[str]:
    """The run folders of one model of a study (``<study>/runs/<label>/seed_*``), in seed order."""
    runs = sorted(glob.glob(os.path.join(study_root, "runs", label, "seed_*")), key=lambda p: int(p.rsplit("_", 1)[1]))
    runs = [r for r in runs if os.path.exists(os.path.join(r, "metrics.json"))]
    if not runs:
        folder = os.path.join(study_root, "runs")
        labels = ", ".join(sorted(os.listdir(folder))) if os.path.isdir(folder) else "none"
        raise RunFolderError(f"no finished runs of '{label}' under {folder}; name a label of the study ({labels})")
    return runs


def paired_study_runs(study_root: str, a: str, b: str) -> tuple[list[str], list[str]]:
    """The finished runs of two models of a study, restricted to the seeds both have (a study stopped between
    runs has one more of one model), so that seed i of each list is the same seed."""
    ra, rb = study_runs(study_root, a), study_runs(study_root, b)
    seeds = {os.path.basename(r) for r in ra} & {os.path.basename(r) for r in rb}
    if not seeds:
        raise RunFolderError(f"'{a}' and '{b}' have no finished seed in common under {study_root}")
    return [r for r in ra if os.path.basename(r) in seeds], [r for r in rb if os.path.basename(r) in seeds]


def _same_test_set(runs: list[LoadedRun]) -> None:
    prints = {(r.metrics or {}).get("test_fingerprint") for r in runs}
    if len(prints) > 1:
        raise RunFolderError("the runs were evaluated on different test sets; compare runs of the same data")


def disagree(a: list[str], b: list[str], names: tuple[str, str], out: str, per_side: int = 8) -> dict[str, Any]:
    """Images one model gets right and the other wrong, in every seed: ``out``/disagreements.png and .json."""
    ra, rb = [load_run(p) for p in a], [load_run(p) for p in b]
    _same_test_set(ra + rb)
    data = ra[0].experiment.test_data
    result = disagreements([predict(r.net, data) for r in ra], [predict(r.net, data) for r in rb], data.labels,
                           class_names(data))
    result.update(a=names[0], b=names[1], a_runs=a, b_runs=b)
    result["png"] = gallery_png(result, data, names, os.path.join(out, "disagreements.png"), per_side)
    write_json(os.path.join(out, "disagreements.json"), result)
    return result


def features(runs: list[str], labels: list[str], index: int, out: str, shifts: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Feature maps of test image ``index`` after each stage of each run's model, and their change under a shift."""
    loaded = [load_run(p) for p in runs]
    _same_test_set(loaded)
    data = loaded[0].experiment.test_data
    _check_index(index, len(data))
    image = data.batch(index)
    results = {lab: feature_maps(r.net, image, shifts) for lab, r in zip(labels, loaded, strict=True)}
    png = feature_maps_png(results, image, os.path.join(out, "feature_maps.png"))
    summary = {"index": index, "label": class_names(data)[int(data.labels[index, 0])], "png": png,
               "models": {lab: {k: v for k, v in r.items() if k != "maps"} for lab, r in results.items()}}
    write_json(os.path.join(out, "feature_maps.json"), summary)
    return summary


def saliency_maps(runs: list[str], labels: list[str], index: int, out: str) -> dict[str, Any]:
    """Plain gradient and guided backpropagation of each run's predicted class for test image ``index``."""
    loaded = [load_run(p) for p in runs]
    _same_test_set(loaded)
    data = loaded[0].experiment.test_data
    _check_index(index, len(data))
    image = data.batch(index)
    results = {lab: saliency(r.net, image) for lab, r in zip(labels, loaded, strict=True)}
    names = class_names(data)
    png = saliency_png(results, image, names, os.path.join(out, "saliency.png"))
    summary = {"index": index, "label": names[int(data.labels[index, 0])], "png": png,
               "models": {lab: {"predicted": names[r["target"]], "prob": r["probs"][r["target"]],
                                "gradient_abs_sum": float(np.abs(r["gradient"]).sum()),
                                "guided_abs_sum": float(np.abs(r["guided"]).sum())} for lab, r in results.items()}}
    write_json(os.path.join(out, "saliency.json"), summary)
    return summary


def _check_index(index: int, n: int) -> None:
    if not 0 <= index < n:
        raise RunFolderError(f"--index {index} is outside the test set (0 to {n - 1})")
