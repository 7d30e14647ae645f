"""Seeing why: per-class results, disagreements between models, feature maps, saliency.

Every function returns plain data (dicts of lists and numbers, JSON-ready) that the figure functions in
:mod:`paddle_lenet.report` draw; tools and the notebook call the same functions, so a picture and its numbers have
one source.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .data import ArrayData, shift_images
from .flops import layer_table  # noqa: F401  (part of this module's API: the per-layer summary)


def class_names(data: ArrayData) -> list[str]:
    """Fashion-MNIST's and CIFAR's names; digits for MNIST."""
    n = data.info.num_classes
    return list(data.info.class_names) if data.info.class_names else [str(i) for i in range(n)]


def predict(net: nn.Layer, data: ArrayData, batch_size: int = 500, transform: Any = None) -> np.ndarray:
    """Softmax probabilities [N, classes] of ``net`` (in eval mode, no gradients) on every image of ``data``."""
    was_training = net.training
    net.eval()
    out = []
    try:
        with paddle.no_grad():
            for i in range(0, len(data), batch_size):
                x = data.batch(slice(i, i + batch_size))
                if transform is not None:
                    x = transform(x)
                out.append(F.softmax(net(paddle.to_tensor(x)), axis=1).numpy())
    finally:
        if was_training:
            net.train()
    return np.concatenate(out).astype("float64")


def per_class(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy per true class and the confusion matrix (rows: true class, columns: predicted class)."""
    y = labels.reshape(-1).astype(int)
    pred = probs.argmax(1)
    k = len(names)
    conf = np.zeros((k, k), dtype=int)
    np.add.at(conf, (y, pred), 1)
    support = conf.sum(1)
    acc = np.divide(np.diag(conf), support, out=np.zeros(k), where=support > 0)
    return {"class_names": list(names), "per_class_accuracy": {names[i]: float(acc[i]) for i in range(k)},
            "support": {names[i]: int(support[i]) for i in range(k)}, "confusion_matrix": conf.tolist(),
            "accuracy": float((pred == y).mean())}


def disagreements(probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray], labels: np.ndarray,
                  names: Sequence[str], limit: int = 24) -> dict[str, Any]:
    """Test images one model gets right and the other wrong — in every seed given (one array per seed and model).

    ``a_only``/``b_only``: indices right for one model in every seed and wrong for the other in every seed, most
    confident first (by the winner's mean probability of the true class); counts for every seed alone too.
    """
    y = labels.reshape(-1).astype(int)
    right_a = np.stack([p.argmax(1) == y for p in probs_a])
    right_b = np.stack([p.argmax(1) == y for p in probs_b])
    mean_a, mean_b = np.mean(probs_a, axis=0), np.mean(probs_b, axis=0)

    def pick(win: np.ndarray, lose: np.ndarray, pw: np.ndarray, pl: np.ndarray) -> list[dict[str, Any]]:
        idx = np.flatnonzero(win.all(0) & (~lose).all(0))
        idx = idx[np.argsort(-pw[idx, y[idx]], kind="stable")]
        return [{"index": int(i), "label": names[y[i]], "winner_prob": float(pw[i, y[i]]),
                 "loser_pred": names[int(pl[i].argmax())], "loser_prob": float(pl[i].max())} for i in idx]

    a_only, b_only = pick(right_a, right_b, mean_a, mean_b), pick(right_b, right_a, mean_b, mean_a)
    # seed i of each list as a pair (lists of unequal length: the first min(len) pairs)
    per_seed = [{"a_only": int((ra & ~rb).sum()), "b_only": int((rb & ~ra).sum())}
                for ra, rb in zip(right_a, right_b, strict=False)]
    by_class = {n: {"a_only": sum(d["label"] == n for d in a_only), "b_only": sum(d["label"] == n for d in b_only)}
                for n in names}
    return {"seeds": len(probs_a), "a_only_count": len(a_only), "b_only_count": len(b_only), "per_seed": per_seed,
            "by_class": by_class, "a_only": a_only[:limit], "b_only": b_only[:limit]}


# --------------------------------------------------------------------------- feature maps
def stages(net: nn.Layer) -> list[tuple[str, nn.Layer]]:
    """The layers whose outputs a reader compares: convolutions and downsampling layers, in the model's order
    (direct children first; a GAP head counts as one stage)."""
    from .models.pooling import DPPPool, LIPPool, LpPool, MixedPool, SoftPool, StochasticPool

    kinds = (nn.Conv2D, nn.MaxPool2D, nn.AvgPool2D, LpPool, MixedPool, StochasticPool, SoftPool, LIPPool, DPPPool)
    return [(name, layer) for name, layer in net.named_children() if isinstance(layer, kinds)]


@contextmanager
def _recording(net: nn.Layer) -> Iterator[dict[str, np.ndarray]]:
    out: dict[str, np.ndarray] = {}
    hooks = []
    for name, layer in stages(net):
        def hook(layer: nn.Layer, inputs: tuple, output: paddle.Tensor, name: str = name) -> None:
            out[name] = output.numpy()

        hooks.append(layer.register_forward_post_hook(hook))
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


def feature_maps(net: nn.Layer, image: np.ndarray, shifts: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """The activations after each stage for one image [C, H, W], and how much each stage's output changes when the
    image moves right by 1–2 px: ||f(x) − f(shift x)|| / ||f(x)|| (0: invariant). The translation argument of seeds
    003/004, per layer."""
    net.eval()
    x = image[None].astype("float32")
    maps: dict[str, Any] = {}
    with paddle.no_grad():
        with _recording(net) as rec:
            net(paddle.to_tensor(x))
            base = dict(rec)
        change = {}
        for k in shifts:
            with _recording(net) as rec:
                net(paddle.to_tensor(shift_images(x, k, "right")))
                change[str(k)] = {n: float(np.linalg.norm(rec[n] - base[n]) / max(np.linalg.norm(base[n]), 1e-12))
                                  for n in base}
                maps[f"shift_{k}"] = {n: rec[n][0] for n in rec}
    maps["original"] = {n: base[n][0] for n in base}
    return {"stages": list(base), "shapes": {n: list(base[n].shape[1:]) for n in base}, "relative_change": change,
            "maps": maps}


# --------------------------------------------------------------------------- saliency
_PLAIN_RELU = F.relu  # the guided ReLU's forward, also while guided_relu() has replaced F.relu


class _GuidedReLU(paddle.autograd.PyLayer):
    """ReLU whose backward passes only positive gradients through positive inputs (Springenberg et al. 2015)."""

    @staticmethod
    def forward(ctx: Any, x: paddle.Tensor) -> paddle.Tensor:
        ctx.save_for_backward(x)
        return _PLAIN_RELU(x)

    @staticmethod
    def backward(ctx: Any, grad: paddle.Tensor) -> paddle.Tensor:
        (x,) = ctx.saved_tensor()
        return grad * (x > 0).astype(grad.dtype) * (grad > 0).astype(grad.dtype)


@contextmanager
def guided_relu() -> Iterator[None]:
    """Within the block, every ``F.relu`` (the models' functional calls and ``nn.ReLU`` layers) is the guided ReLU.

    The models call ``paddle.nn.functional.relu`` through the module, so swapping the module's attribute for the
    duration reaches every ReLU without touching the architectures; it is put back on leaving, also on errors.
    """
    original = F.relu

    def relu(x: paddle.Tensor, name: str | None = None) -> paddle.Tensor:
        return _GuidedReLU.apply(x)

    F.relu = relu
    try:
        yield
    finally:
        F.relu = original


def saliency(net: nn.Layer, image: np.ndarray, target: int | None = None) -> dict[str, Any]:
    """Plain gradient and guided backpropagation of the target logit (default: the predicted class) with respect
    to one image [C, H, W]. Models without ReLU (LeNet5_classic's sigmoids) give the plain gradient twice."""
    net.eval()
    out: dict[str, Any] = {}
    for kind in ("gradient", "guided"):
        x = paddle.to_tensor(image[None].astype("float32"), stop_gradient=False)
        if kind == "guided":
            with guided_relu():
                logits = net(x)
        else:
            logits = net(x)
        t = int(logits.numpy().argmax()) if target is None else int(target)
        logits[0, t].backward()
        out[kind] = x.grad.numpy()[0]
        out["target"] = t
    out["probs"] = F.softmax(net(paddle.to_tensor(image[None].astype("float32"))), axis=1).numpy()[0].tolist()
    return out


