"""The All-CNN family of seed 004 (Springenberg et al., "Striving for Simplicity", 2015).

Base models A, B, C and, for each, three variants:
- ``Strided_CNN_*``: every max-pool removed, the conv before it gets stride 2 (same parameters as the base);
- ``ConvPool_CNN_*``: an extra 3×3 conv before each max-pool (the parameter-count control);
- ``All_CNN_*``: each max-pool replaced by a 3×3 conv with stride 2 (same parameters as ConvPool).
Input 3×32×32. Pools are 3×3/stride 2 with padding 1 (32 → 16 → 8), the stage after the second
downsampling starts with an unpadded 3×3 conv (8 → 6), then global averaging over 6×6, as in
the paper's Table 1/2. Every conv, the 1×1 class conv included, is followed by ReLU (as in the
paper). Dropout: 20% on the input, 50% after each pool or its replacement.
"""

from __future__ import annotations

from .. import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn

from .registry import register_model

# Stage layouts before each downsampling: (kernel, out_channels) per conv.
_STAGES = {
    "A": [[(5, 96)], [(5, 192)]],
    "B": [[(5, 96), (1, 96)], [(5, 192), (1, 192)]],
    "C": [[(3, 96), (3, 96)], [(3, 192), (3, 192)]],
}


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None) -> list[nn.Layer]:
    return [nn.Conv2D(cin, cout, k, stride=stride, padding=k // 2 if pad is None else pad), nn.ReLU()]


class AllCNN(nn.Layer):
    """One member of the family; ``variant`` is ``base``, ``strided``, ``convpool`` or ``allcnn``."""

    def __init__(self, model: str = "C", variant: str = "base", num_classes: int = 10, dropout: bool = True) -> None:
        super().__init__()
        layers: list[nn.Layer] = [nn.Dropout(0.2)] if dropout else []
        cin = 3
        for stage in _STAGES[model]:
            for i, (k, cout) in enumerate(stage):
                last = i == len(stage) - 1
                layers += _conv(cin, cout, k, stride=2 if (last and variant == "strided") else 1)
                cin = cout
            if variant == "convpool":
                layers += _conv(cin, cin, 3)
            if variant in ("base", "convpool"):
                layers.append(nn.MaxPool2D(3, 2, padding=1))
            elif variant == "allcnn":
                layers += _conv(cin, cin, 3, stride=2)
            if dropout:
                layers.append(nn.Dropout(0.5))
        layers += _conv(cin, 192, 3, pad=0) + _conv(192, 192, 1) + _conv(192, num_classes, 1)
        self.features = nn.Sequential(*layers)
        self.gap = nn.AdaptiveAvgPool2D(1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.flatten(self.gap(self.features(x)), start_axis=1)


def _register(model: str, variant: str, prefix: str) -> None:
    def factory(num_classes: int = 10, dropout: bool = True) -> AllCNN:
        return AllCNN(model, variant, num_classes, dropout)

    factory.__doc__ = f"{prefix}{model} of Springenberg et al. 2015 (CIFAR, 3×32×32)."
    register_model(input_shape=(3, 32, 32), source="004", name=f"{prefix}{model}")(factory)


for _m in "ABC":
    for _variant, _prefix in (("base", "Model"), ("strided", "Strided_CNN_"),
                              ("convpool", "ConvPool_CNN_"), ("allcnn", "All_CNN_")):
        _register(_m, _variant, _prefix)
