"""Seeing why (issue 21): per-class results, disagreements, feature maps, guided backprop, layer table, the notebook."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from PIL import Image

from paddle_lenet import analysis
from paddle_lenet.report import gallery_png

from .conftest import ROOT, tool


def test_per_class_and_confusion_on_known_predictions() -> None:
    probs = np.eye(3)[[0, 1, 2, 2, 1, 0]]
    labels = np.array([0, 1, 2, 1, 1, 2])
    r = analysis.per_class(probs, labels, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[1, 0, 0], [0, 2, 1], [1, 0, 1]]
    assert r["per_class_accuracy"] == {"a": 1.0, "b": pytest.approx(2 / 3), "c": 0.5}
    assert r["support"] == {"a": 1, "b": 3, "c": 2} and r["accuracy"] == pytest.approx(4 / 6)


def test_disagreements_keep_only_images_consistent_across_seeds() -> None:
    labels = np.array([0, 0, 1, 1])
    right = np.eye(2)[[0, 0, 1, 1]] * 0.9 + 0.05
    wrong = np.eye(2)[[1, 1, 0, 0]] * 0.9 + 0.05
    a = [np.stack([right[0], right[1], right[2], wrong[3]]), np.stack([right[0], wrong[1], right[2], wrong[3]])]
    b = [np.stack([wrong[0], wrong[1], wrong[2], right[3]]), np.stack([wrong[0], wrong[1], right[2], right[3]])]
    r = analysis.disagreements(a, b, labels, ["x", "y"])
    assert [d["index"] for d in r["a_only"]] == [0] and [d["index"] for d in r["b_only"]] == [3]
    assert r["per_seed"] == [{"a_only": 3, "b_only": 1}, {"a_only": 1, "b_only": 1}] and r["seeds"] == 2


def test_guided_backprop_on_cases_with_known_answers() -> None:
    paddle.seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))  # no ReLU: both maps are the target row of W
    img = np.random.default_rng(0).random((1, 4, 4)).astype("float32")
    s = analysis.saliency(linear, img, target=2)
    want = linear[1].weight.numpy()[:, 2].reshape(1, 4, 4)
    np.testing.assert_allclose(s["gradient"], want, rtol=1e-6)
    np.testing.assert_allclose(s["guided"], want, rtol=1e-6)

    class Gate(nn.Layer):  # evidence in one region: out = relu(x[top-left]) − relu(x[bottom-right])
        def forward(self, x: paddle.Tensor) -> paddle.Tensor:
            return paddle.stack([paddle.nn.functional.relu(x[:, 0, :2, :2]).sum((1, 2))
                                 - paddle.nn.functional.relu(x[:, 0, 2:, 2:]).sum((1, 2))], axis=1)

    img = np.ones((1, 4, 4), "float32")
    s = analysis.saliency(Gate(), img, target=0)
    assert (s["gradient"][0, :2, :2] == 1).all() and (s["gradient"][0, 2:, 2:] == -1).all()
    assert (s["guided"][0, :2, :2] == 1).all() and (s["guided"][0, 2:, 2:] == 0).all()  # negative evidence dropped
    assert paddle.nn.functional.relu is analysis._PLAIN_RELU  # put back


def test_feature_maps_of_an_invariant_and_a_shift_sensitive_model() -> None:
    class Sum(nn.Layer):  # global sum after a 1×1 conv: invariant to a shift that keeps the object in view
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2D(1, 1, 1, bias_attr=False)

        def forward(self, x: paddle.Tensor) -> paddle.Tensor:
            return self.conv(x).sum((2, 3))

    img = np.zeros((1, 8, 8), "float32")
    img[0, 3:5, 2:4] = 1
    r = analysis.feature_maps(Sum(), img, shifts=(1,))
    assert r["stages"] == ["conv"] and r["shapes"]["conv"] == [1, 8, 8]
    assert r["relative_change"]["1"]["conv"] == pytest.approx(1.0)  # the map moved: half its mass in new pixels


def test_tools_on_trained_runs(trained, tmp_path) -> None:
    lenet, nopool = os.path.join(trained, "lenet"), os.path.join(trained, "lenet_nopool")
    p = tool("eval", "-c", lenet, "--plots", str(tmp_path), "--csv", str(tmp_path / "c.csv"), check=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    conf = np.array(out["confusion_matrix"])
    assert conf.sum() == out["test_samples"] == 1000 and np.trace(conf) / 1000 == pytest.approx(out["acc_top1"])
    assert os.path.getsize(tmp_path / "confusion.png") > 10_000
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert [r["name"] for r in rows] == [str(i) for i in range(10)] and sum(int(r["support"]) for r in rows) == 1000
    d = json.loads(tool("explain", "disagree", "--a", lenet, "--b", nopool, "--out", str(tmp_path),
                        check=True).stdout.strip().splitlines()[-1])
    full = json.load(open(tmp_path / "disagreements.json"))
    assert d["a_only_count"] == full["a_only_count"] > 0 and os.path.getsize(d["png"]) > 10_000
    f = json.loads(tool("explain", "features", lenet, nopool, "--index", "5", "--out", str(tmp_path),
                        check=True).stdout.strip().splitlines()[-1])
    assert f["models"]["lenet"]["shapes"] == {"conv1": [6, 28, 28], "pool1": [6, 14, 14], "conv2": [16, 10, 10],
                                              "pool2": [16, 5, 5]}
    assert list(f["models"]["lenet_nopool"]["shapes"]) == ["conv1", "conv2", "conv3", "conv4"]
    s = json.loads(tool("explain", "saliency", lenet, "--index", "5", "--out", str(tmp_path),
                        check=True).stdout.strip().splitlines()[-1])
    assert s["models"]["lenet"]["guided_abs_sum"] > 0 and os.path.exists(tmp_path / "saliency.png")
    p = tool("explain", "features", lenet, "--index", "5000", "--out", str(tmp_path))
    assert p.returncode == 2 and "outside the test set" in p.stderr


def test_layer_table_explains_the_parameter_counts(trained) -> None:
    p = tool("count_params", "-c", os.path.join(trained, "lenet_nopool"), "--layers", "--json", check=True)
    t = json.loads(p.stdout.strip().splitlines()[-1])
    assert [(r["layer"], r["output"], r["params"]) for r in t["layers"][:4]] == [
        ("conv1", [6, 28, 28], 156), ("conv2", [16, 12, 12], 2416), ("conv3", [16, 12, 12], 2320),
        ("conv4", [16, 5, 5], 2320)]
    assert sum(r["params"] for r in t["layers"]) == t["params"] == 66_346
    assert sum(r["flops"] for r in t["layers"]) == t["flops"] == 1_822_992


def test_the_notebook_runs_top_to_bottom(tmp_path) -> None:
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient, ipykernel)")
    import nbformat

    nb = nbformat.read(os.path.join(ROOT, "examples", "pooling_vs_stride.ipynb"), as_version=4)
    env_before = dict(os.environ)
    os.environ.update(PADDLE_LENET_NOTEBOOK_OUT=str(tmp_path), PADDLE_LENET_NOTEBOOK_EPOCHS="1",
                      PADDLE_LENET_ROOT=ROOT, PYTHONPATH=ROOT)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": os.path.join(ROOT, "examples")}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "61,706 parameters" in text and "66,346 parameters" in text and "LeNet right, LeNet_nopool wrong" in text
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 5
    assert os.path.exists(tmp_path / "feature_maps.png") and os.path.exists(tmp_path / "saliency.png")


def test_a_gallery_with_nothing_to_show_says_so(tmp_path) -> None:
    """Many seeds can leave no image that one model wins in every seed: the figure states that, with the per-seed
    counts, instead of drawing empty frames (the data set is not needed: no image is shown)."""
    y = np.array([[0], [1], [2], [0]])
    a = [np.eye(3)[[0, 1, 2, 1]], np.eye(3)[[0, 2, 2, 0]]]  # seed 0 misses image 3, seed 1 misses image 1
    b = [np.eye(3)[[0, 1, 1, 0]], np.eye(3)[[0, 1, 2, 0]]]  # seed 0 misses image 2
    r = analysis.disagreements(a, b, y, ["x", "y", "z"])
    assert r["a_only_count"] == r["b_only_count"] == 0 and r["per_seed"] == [{"a_only": 1, "b_only": 1},
                                                                             {"a_only": 0, "b_only": 1}]
    png = gallery_png(r, None, ("A", "B"), str(tmp_path / "g.png"))
    w, h = Image.open(png).size
    assert w > 500 and h < 400  # one text panel, not two rows of empty frames
