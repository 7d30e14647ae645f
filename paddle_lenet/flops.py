"""FLOPs of one forward pass, counted with forward hooks.

``paddle.flops`` crashes on numpy >= 2.4, and counts differ between tools anyway, so the rule is
stated here: 2 FLOPs per multiply-add of every Conv2D and Linear — LIP's logit convolutions and a GAP
head's convolution included — and nothing else (bias adds, activations, normalisation and pooling
arithmetic are left out; for the LeNets they are under 2%). The accelerated layers
(:mod:`paddle_lenet.accelerate`) are subclasses of ``nn.Conv2D``, so their hooks fire: the count is the
model's, whichever path computes it.
"""

from __future__ import annotations

from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn


def count_flops(net: nn.Layer, input_shape: tuple[int, int, int]) -> int:
    total = 0

    def conv_hook(layer: nn.Conv2D, inputs: tuple, output: paddle.Tensor) -> None:
        nonlocal total
        cin = layer.weight.shape[1]  # already divided by groups
        kh, kw = layer.weight.shape[2:]
        total += 2 * int(output.numel()) * cin * kh * kw

    def linear_hook(layer: nn.Linear, inputs: tuple, output: paddle.Tensor) -> None:
        nonlocal total
        total += 2 * int(output.numel()) * layer.weight.shape[0]

    hooks = []
    for layer in net.sublayers(include_self=True):
        if isinstance(layer, nn.Conv2D):
            hooks.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            hooks.append(layer.register_forward_post_hook(linear_hook))
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
    return total
