"""Inference on image files: the same preprocessing as training, through Paddle Inference."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import UserError
from .export import ModelDirError, load_meta, make_predictor, run_predictor


def load_image(path: str, meta: dict[str, Any]) -> np.ndarray:
    """File → float32 [C, H, W] in [0, 1], as ``ToTensor`` gives the training images."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = meta["input_shape"]
    try:
        with Image.open(path) as im:
            im = im.convert(meta["color"])
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype="float32")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"cannot read image '{path}': {e}") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr * np.float32(meta["scale"])


def predict_files(model_dir: str, files: list[str], topk: int = 3) -> list[dict[str, Any]]:
    meta = load_meta(model_dir)
    batch = np.stack([load_image(f, meta) for f in files])
    predictor = make_predictor(model_dir)
    try:
        logits = run_predictor(predictor, batch)
    except Exception as e:  # paddle raises ValueError/RuntimeError/OSError variants for a shape mismatch
        raise ModelDirError(f"the model in '{model_dir}' does not accept {list(batch.shape[1:])} input "
                            f"({str(e).strip().splitlines()[-1][:160]}); re-export it") from None
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    names = meta.get("class_names")
    out = []
    for f, p in zip(files, probs, strict=True):
        order = np.argsort(-p)[: max(1, topk)]
        out.append({"file": f, "top1": int(order[0]), "label": names[order[0]] if names else str(order[0]),
                    "topk": [{"class": int(k), "label": names[k] if names else str(k), "prob": float(p[k])} for k in order],
                    "probs": [round(float(v), 6) for v in p]})
    return out
