"""FLOPs of one forward pass, counted with forward hooks.

``paddle.flops`` crashes on numpy >= 2.4, and counts differ between tools anyway, so the rule is
stated here: 2 FLOPs per multiply-add of every Conv2D and Linear — LIP's logit convolutions and a GAP
head's convolution included — and nothing else (bias adds, activations, normalisation and pooling
arithmetic are left out; for the LeNets they are under 2%). The accelerated layers
(:mod:`paddle_lenet.accelerate`) are subclasses of ``nn.Conv2D``, so their hooks fire: the count is the
model's, whichever path computes it.
"""

from __future__ import annotations

from typing import Any

from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn


def count_flops(net: nn.Layer, input_shape: tuple[int, int, int]) -> int:
    return sum(row["flops"] for row in layer_table(net, input_shape))


def layer_table(net: nn.Layer, input_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Each leaf layer (and every Conv2D/Linear) in call order: output shape, its own parameters, its FLOPs by the
    rule above; :func:`count_flops` is their sum, ``count_params.py --layers`` prints them."""
    rows: list[dict[str, Any]] = []
    hooks = []
    names = {id(layer): name for name, layer in net.named_sublayers()}

    def hook(layer: nn.Layer, inputs: tuple, output: paddle.Tensor) -> None:
        flops = 0
        if isinstance(layer, nn.Conv2D):
            flops = 2 * int(output.numel()) * layer.weight.shape[1] * layer.weight.shape[2] * layer.weight.shape[3]
        elif isinstance(layer, nn.Linear):
            flops = 2 * int(output.numel()) * layer.weight.shape[0]
        own = sum(int(p.numel()) for p in layer.parameters(include_sublayers=False))
        kind = type(layer)
        if kind.__module__.endswith(".accelerate"):  # the architecture's layer, whichever code computes it
            kind = kind.__bases__[0]
        rows.append({"layer": names.get(id(layer), kind.__name__), "type": kind.__name__,
                     "output": list(output.shape[1:]), "params": own, "flops": flops})

    for layer in net.sublayers(include_self=True):
        if not layer.sublayers() or isinstance(layer, (nn.Conv2D, nn.Linear)):
            hooks.append(layer.register_forward_post_hook(hook))
    was_training = net.training
    net.eval()
    try:
        with paddle.no_grad():
            net(paddle.zeros([1, *input_shape], dtype="float32"))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            net.train()
    return rows
