"""Deployment: a trained run as a Paddle Inference model (+ ONNX), verified against dygraph.

``export_run`` writes ``model.json`` + ``model.pdiparams`` (``paddle.jit.save``, dynamic batch),
``meta.json`` (input shape, preprocessing, class names) and, when paddle2onnx is installed,
``model.onnx``. It then pushes one batch of real test images through every form and refuses the
export if they disagree (max |Δlogit| > 1e-4 or any top-1 class differs).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle

from . import checkpoint as ckpt
from .config import run_dir
from .data import DATASETS
from .errors import TrainingStopped, UserError

TOLERANCE = 1e-4


class ModelDirError(UserError):
    """A model folder that is missing, incomplete, or does not fit the input."""


def make_predictor(model_dir: str) -> Any:
    """A Paddle Inference predictor for an exported folder (quiet: no glog banner)."""
    from paddle import inference

    files = [os.path.join(model_dir, f) for f in ("model.json", "model.pdiparams")]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ModelDirError(f"'{model_dir}' is not an exported model (missing {os.path.basename(missing[0])}); "
                            f"create one with tools/export.py -c CONFIG --out {model_dir}")
    config = inference.Config(*files)
    config.disable_glog_info()
    config.disable_gpu()
    return inference.create_predictor(config)


def run_predictor(predictor: Any, x: np.ndarray) -> np.ndarray:
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(np.ascontiguousarray(x, dtype="float32"))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def load_meta(model_dir: str) -> dict[str, Any]:
    path = os.path.join(model_dir, "meta.json")
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model folder '{model_dir}' does not exist; create it with tools/export.py -c CONFIG --out DIR")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        meta["input_shape"] = [int(v) for v in meta["input_shape"]]
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelDirError(f"'{path}' is missing or unreadable; re-export with tools/export.py") from None


def export_run(cfg: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Export the run's checkpoint to ``out_dir`` and verify it; returns a report.

    Exporting needs no data: the check uses 64 of the run's test images when they are at hand, else 64
    seeded random images in the input's range — either way every form must agree with the dygraph model.
    """
    from .engine import Experiment
    from .errors import DataError
    from .files import makedirs, write_json

    path = cfg["Global"]["checkpoint"] or os.path.join(run_dir(cfg), "checkpoints", "final.pdparams")
    exp = Experiment(cfg, load_train=False, load_test=False)
    try:
        from .data import load_split

        test = load_split(cfg["Data"]["name"], cfg["Data"]["root"], "test")
        x, verified_on = test.images[:64], f"64 {cfg['Data']['name']} test images"
    except DataError:
        x = np.random.default_rng(0).random((64, *exp.info.shape), dtype=np.float32)
        verified_on = "64 random images (the dataset is not at hand)"
    net = exp.net
    net.set_state_dict(ckpt.load_params(path, net))
    if hasattr(net, "fast"):
        net.fast = False  # export the plain graph: standard ops, portable to ONNX
    net.eval()
    c, h, w = exp.info.shape
    makedirs(out_dir)
    prefix = os.path.join(out_dir, "model")
    try:
        paddle.jit.save(net, prefix, input_spec=[paddle.static.InputSpec([None, c, h, w], "float32", "image")])
    except OSError as e:
        from .files import fs_error

        raise fs_error(e, out_dir) from None
    info = DATASETS[cfg["Data"]["name"]]
    meta = {"model": cfg["Arch"]["name"], "dataset": info.name, "input_shape": [c, h, w],
            "color": "L" if c == 1 else "RGB", "scale": 1 / 255.0, "num_classes": exp.num_classes,
            "class_names": list(info.class_names) if info.class_names else None, "checkpoint": path}
    write_json(os.path.join(out_dir, "meta.json"), meta)
    report: dict[str, Any] = {"out": out_dir, "checkpoint": path, "files": ["model.json", "model.pdiparams", "meta.json"]}

    with paddle.no_grad():
        ref = net(paddle.to_tensor(x)).numpy()
    outputs = {"paddle_inference": run_predictor(make_predictor(out_dir), x)}
    try:
        import paddle2onnx
    except ImportError:
        report["onnx"] = "skipped: pip install -e .[onnx] to export ONNX"
    else:
        onnx_path = os.path.join(out_dir, "model.onnx")
        paddle2onnx.export(prefix + ".json", prefix + ".pdiparams", save_file=onnx_path, opset_version=13,
                           enable_onnx_checker=True, verbose=False)
        report["files"].append("model.onnx")
        try:
            import onnxruntime as ort
        except ImportError:
            report["onnx"] = "exported, not verified: onnxruntime is not installed"
        else:
            sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            outputs["onnxruntime"] = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    for name, out in outputs.items():
        diff = float(np.abs(out - ref).max())
        same_top1 = bool((out.argmax(1) == ref.argmax(1)).all())
        report[f"{name}_max_abs_diff"] = diff
        if diff > TOLERANCE or not same_top1:
            raise TrainingStopped(f"export check failed: {name} differs from dygraph by {diff:.2e} "
                                  f"(tolerance {TOLERANCE}), top-1 equal: {same_top1}", 1)
    report["verified_on"] = verified_on
    return report
