"""Deployment: a trained run as a Paddle Inference model (+ ONNX), verified against dygraph.

``export_run`` writes ``model.json`` + ``model.pdiparams`` (``paddle.jit.save``, dynamic batch),
``meta.json`` (input shape, preprocessing, class names) and, when paddle2onnx is installed,
``model.onnx``. It then pushes one batch of real test images through every form and refuses the
export if they disagree (max |Δlogit| > 1e-4 or any top-1 class differs).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np
from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle

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
        hint = (f"'{model_dir}' is a training run folder, not an exported model; export it first: "
                f"python tools/export.py -c {model_dir} --out export/{os.path.basename(os.path.normpath(model_dir))}"
                if os.path.isfile(os.path.join(model_dir, "config.yml")) else
                f"'{model_dir}' is not an exported model (missing {os.path.basename(missing[0])}); "
                f"create one with tools/export.py -c RUN_FOLDER --out {model_dir}")
        raise ModelDirError(hint)
    config = inference.Config(*files)
    config.disable_glog_info()
    config.disable_gpu()
    try:
        return inference.create_predictor(config)
    except Exception as e:  # paddle raises many types for a damaged graph or truncated parameters
        raise ModelDirError(f"the exported model in '{model_dir}' is damaged ({type(e).__name__}); "
                            f"re-export it with tools/export.py") from None


def run_predictor(predictor: Any, x: np.ndarray) -> np.ndarray:
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(np.ascontiguousarray(x, dtype="float32"))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def load_meta(model_dir: str) -> dict[str, Any]:
    """``meta.json``, checked field by field: a tampered file is one line, never a wrong preprocessing."""
    path = os.path.join(model_dir, "meta.json")
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model folder '{model_dir}' does not exist; create it with tools/export.py -c CONFIG --out DIR")
    if not os.path.isfile(path) and os.path.isfile(os.path.join(model_dir, "config.yml")):
        make_predictor(model_dir)  # a training run folder: says so, with the export command
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        shape, names, n = meta["input_shape"], meta.get("class_names"), meta["num_classes"]
        ok = (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and 0 < v <= 4096 for v in shape)
              and meta["color"] in ("L", "RGB") and (meta["color"] == "L") == (shape[0] == 1)
              and isinstance(meta["scale"], (int, float)) and not isinstance(meta["scale"], bool)
              and 0 < meta["scale"] <= 1 and isinstance(n, int) and not isinstance(n, bool) and n >= 1
              and (names is None or (isinstance(names, list) and len(names) == n and all(isinstance(x, str) for x in names))))
        if not ok:
            raise ValueError
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelDirError(f"'{path}' is missing, unreadable or inconsistent (input_shape, color, scale, class_names); "
                            f"re-export with tools/export.py") from None


def export_run(cfg: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Export the run's checkpoint to ``out_dir`` and verify it; returns a report.

    Exporting needs no data: the check uses 64 of the run's test images when they are at hand, else 64
    seeded random images in the input's range — either way every form must agree with the dygraph model.
    """
    from .engine import Experiment
    from .errors import DataError
    from .files import makedirs

    path = cfg["Global"]["checkpoint"] or os.path.join(run_dir(cfg), "checkpoints", "final.pdparams")
    exp = Experiment(cfg, load_train=False, load_test=False)
    try:
        from .data import load_split

        test = load_split(cfg["Data"]["name"], cfg["Data"]["root"], "test")
        x, verified_on = test.batch(slice(0, 64)), f"64 {cfg['Data']['name']} test images"
    except DataError:
        x = np.random.default_rng(0).random((64, *exp.info.shape), dtype=np.float32)
        verified_on = "64 random images (the dataset is not at hand)"
    net = exp.net
    exp.load_weights(path, own=not cfg["Global"]["checkpoint"])
    net.eval()
    # everything is written and verified in a staging folder beside out_dir, then moved in file by file: a failed
    # check, a full disk or a kill leaves the previous export whole (and no half-written one)
    parent = os.path.dirname(os.path.abspath(out_dir))
    makedirs(parent)
    stage = os.path.join(parent, f".{os.path.basename(os.path.abspath(out_dir))}.partial-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        makedirs(stage)
        report = _export_into(cfg, exp, path, x, verified_on, stage)
        makedirs(out_dir)
        for name in FILES:
            target = os.path.join(out_dir, name)
            if name in report["files"]:
                os.replace(os.path.join(stage, name), target)
            elif os.path.exists(target):
                os.remove(target)  # an older export's ONNX file would not match the new model
    except OSError as e:
        from .files import fs_error

        raise fs_error(e, out_dir) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report["out"] = out_dir
    return report


FILES = ("model.json", "model.pdiparams", "meta.json", "model.onnx")


def _export_into(cfg: dict[str, Any], exp: Any, path: str, x: np.ndarray, verified_on: str, out_dir: str) -> dict[str, Any]:
    from .files import write_json

    net = exp.net
    c, h, w = exp.info.shape
    prefix = os.path.join(out_dir, "model")
    paddle.jit.save(net, prefix, input_spec=[paddle.static.InputSpec([None, c, h, w], "float32", "image")])
    info = DATASETS[cfg["Data"]["name"]]
    meta = {"model": cfg["Arch"]["name"], "dataset": info.name, "input_shape": [c, h, w],
            "color": "L" if c == 1 else "RGB", "scale": 1 / 255.0, "num_classes": exp.num_classes,
            "class_names": list(info.class_names) if info.class_names else None, "checkpoint": path}
    write_json(os.path.join(out_dir, "meta.json"), meta)
    report: dict[str, Any] = {"checkpoint": path, "files": ["model.json", "model.pdiparams", "meta.json"]}

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
        diff = float(np.abs(out - ref).max()) if np.isfinite(out).all() else float("inf")
        same_top1 = bool((out.argmax(1) == ref.argmax(1)).all())
        report[f"{name}_max_abs_diff"] = diff
        if diff > TOLERANCE or not same_top1:
            raise TrainingStopped(f"export check failed: {name} differs from dygraph by {diff:.2e} "
                                  f"(tolerance {TOLERANCE}), top-1 equal: {same_top1}; the previous export in the "
                                  f"folder, if any, is unchanged", 1)
    report["verified_on"] = verified_on
    return report
