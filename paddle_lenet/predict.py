"""Inference on image files: the same preprocessing as training, through Paddle Inference."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import UserError
from .export import ModelDirError, load_meta, make_predictor, run_predictor


def load_image(path: str, meta: dict[str, Any], invert: bool = False) -> np.ndarray:
    """File → float32 [C, H, W] in [0, 1], as ``ToTensor`` gives the training images.

    Transparency is composited over white, as an image viewer shows the file (converting RGBA straight to
    grayscale would read the invisible colour of transparent pixels). ``invert`` turns dark-on-light
    drawings into MNIST's light-on-dark.
    """
    import stat

    from PIL import Image, ImageOps, UnidentifiedImageError

    c, h, w = meta["input_shape"]
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
            raise UserError(f"cannot read image '{path}': not a regular file")
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # a phone's rotated JPEG, as a viewer shows it
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F") and meta["color"] == "L":
                return _high_depth(im, (w, h), invert) * np.float32(meta["scale"] * 255.0)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, rgba)
            im = im.convert(meta["color"])
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype="float32")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image '{path}': {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if invert:
        arr = 255.0 - arr
    return arr * np.float32(meta["scale"])


def _high_depth(im: Any, size: tuple[int, int], invert: bool) -> np.ndarray:
    """A 16-bit or float grayscale image as [1, H, W] in [0, 1]: 16-bit PNGs span 0–65535, float TIFFs 0–1
    (or 0–255 when their values say so). PIL's convert("L") would clip them to 0–255 instead."""
    from PIL import Image

    arr = np.asarray(im, dtype="float64")
    if im.mode == "F":
        full = 1.0 if np.nanmax(arr) <= 1.0 else 255.0
    else:
        full = 65535.0 if np.nanmax(arr) > 255 or "16" in im.mode else 255.0
    arr = np.clip(np.nan_to_num(arr / full), 0.0, 1.0).astype("float32")
    if arr.shape != (size[1], size[0]):
        arr = np.asarray(Image.fromarray(arr, mode="F").resize(size, Image.BILINEAR), dtype="float32")
    if invert:
        arr = 1.0 - arr
    return arr[None]


def predict_files(model_dir: str, files: list[str], topk: int = 3, invert: bool = False,
                  on_error: Any = None) -> list[dict[str, Any]]:
    """Top-k predictions for every readable file; an unreadable one goes to ``on_error(message)`` and is skipped."""
    meta = load_meta(model_dir)
    predictor = make_predictor(model_dir)
    good, arrays = [], []
    for f in files:
        try:
            arrays.append(load_image(f, meta, invert))
            good.append(f)
        except UserError as e:
            if on_error is None:
                raise
            on_error(str(e))
    if not good:
        return []
    batch = np.stack(arrays)
    try:
        logits = run_predictor(predictor, batch)
    except Exception as e:  # paddle raises ValueError/RuntimeError/OSError variants for a shape mismatch
        raise ModelDirError(f"the model in '{model_dir}' does not accept {list(batch.shape[1:])} input "
                            f"({str(e).strip().splitlines()[-1][:160]}); re-export it") from None
    if not np.isfinite(logits).all():
        raise ModelDirError(f"the model in '{model_dir}' gives non-finite outputs (NaN or inf); its weights are "
                            f"damaged: re-export it from a good run")
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    names = meta.get("class_names")
    out = []
    for f, p, arr in zip(good, probs, arrays, strict=True):
        order = np.argsort(-p)[: max(1, topk)]
        hint = {}
        if not invert and meta["color"] == "L" and float(arr.mean()) > 0.5:
            hint = {"hint": "a mostly light image; the model learnt light strokes on black: try --invert"}
        out.append({**hint, "file": f, "top1": int(order[0]), "label": names[order[0]] if names else str(order[0]),
                    "topk": [{"class": int(k), "label": names[k] if names else str(k), "prob": float(p[k])} for k in order],
                    "probs": [round(float(v), 6) for v in p]})
    return out
