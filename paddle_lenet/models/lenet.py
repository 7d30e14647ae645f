"""The LeNet family: the notebook's two models (seed 000), classic LeNet-5 (001), LeNet-BN (002).

Faithful ports keep their sources' quirks; each docstring names them. Parameter names match the
notebook (``conv1``, ``linear1``, ...) so checkpoints stay interchangeable with the original code.
"""

from __future__ import annotations

from .. import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .pooling import make_pool
from .registry import register_model


def _gap_head(channels: int, num_classes: int, hidden: int = 120) -> nn.Layer:
    """Global-average-pooling head (Lin et al. 2013; the form of seed 002): a 3×3 conv to 120
    feature maps, global average, one linear classifier — replacing the 400→120→84 FC stack.

    The leading ReLU matters for LeNet, whose pool2 output is not activated. A GAP head discards
    where features are, so it needs more steps than the FC stack (measured: ~3 epochs on mnist-5k).
    """
    return nn.Sequential(nn.ReLU(), nn.Conv2D(channels, hidden, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2D(1),
                         nn.Flatten(), nn.Linear(hidden, num_classes))


class LeNet(nn.Layer):
    """The notebook's LeNet: 61,706 parameters with the default head.

    Quirks kept from the notebook: ReLU is applied twice around ``pool1`` (conv1 → ReLU → pool →
    ReLU), and there is *no* ReLU between ``conv2`` and ``pool2``.

    ``pool`` swaps both pooling layers for another operator of seed 003; ``head='gap'`` replaces the
    FC stack by a global-average-pooling head.
    """

    def __init__(self, num_classes: int = 10, pool: str = "max", pool_p: float = 3.0,
                 head: str = "fc", mixed_test: str = "expectation") -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels=1, out_channels=6, kernel_size=5, stride=1, padding=2)
        self.pool1 = make_pool(pool, 6, pool_p, mixed_test=mixed_test)
        self.conv2 = nn.Conv2D(in_channels=6, out_channels=16, kernel_size=5, stride=1)
        self.pool2 = make_pool(pool, 16, pool_p, mixed_test=mixed_test)
        self.head_kind = head
        if head == "gap":
            self.head = _gap_head(16, num_classes)
        else:
            self.linear1 = nn.Linear(in_features=16 * 5 * 5, out_features=120)
            self.linear2 = nn.Linear(in_features=120, out_features=84)
            self.linear3 = nn.Linear(in_features=84, out_features=num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = F.relu(self.pool1(F.relu(self.conv1(x))))  # the second ReLU, as in the notebook
        x = self.pool2(self.conv2(x))  # no ReLU before pool2, as in the notebook
        if self.head_kind == "gap":
            return self.head(x)
        x = paddle.flatten(x, start_axis=1, stop_axis=-1)
        x = F.relu(self.linear1(x))
        x = F.relu(self.linear2(x))
        return self.linear3(x)


class LeNet_nopool(nn.Layer):
    """The notebook's LeNet_nopool: pooling replaced by stride-2 convolutions; 66,346 parameters.

    Quirk kept: no ReLU after ``conv4`` (the notebook flattens its raw output). An extra
    ``conv3`` (3×3, stride 1) sits between the two strided convs, so the model is *not*
    parameter-matched to LeNet — the notebook's comparison confounds the two.
    """

    def __init__(self, num_classes: int = 10, head: str = "fc") -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels=1, out_channels=6, kernel_size=5, stride=1, padding=2)
        self.conv2 = nn.Conv2D(in_channels=6, out_channels=16, kernel_size=5, stride=2)
        self.conv3 = nn.Conv2D(in_channels=16, out_channels=16, kernel_size=3, stride=1, padding=1)
        self.conv4 = nn.Conv2D(in_channels=16, out_channels=16, kernel_size=3, stride=2)
        self.head_kind = head
        if head == "gap":
            self.head = _gap_head(16, num_classes)
        else:
            self.linear1 = nn.Linear(in_features=16 * 5 * 5, out_features=120)
            self.linear2 = nn.Linear(in_features=120, out_features=84)
            self.linear3 = nn.Linear(in_features=84, out_features=num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = self.conv4(x)  # no ReLU here, as in the notebook
        if self.head_kind == "gap":
            return self.head(x)
        x = paddle.flatten(x, start_axis=1, stop_axis=-1)
        x = F.relu(self.linear1(x))
        x = F.relu(self.linear2(x))
        return self.linear3(x)


class LeNet5Classic(nn.Layer):
    """Classic LeNet-5 of seed 001: sigmoid activations, average pooling, Xavier-uniform weights,
    biases as PyTorch initialises them (uniform in ±1/√fan_in), since the seed leaves them alone.

    61,706 parameters. Its C3 is fully connected (16·6·25+16 = 2,416 parameters), not the 1998
    paper's sparse C3 (1,516) — as in the source.
    """

    def __init__(self, num_classes: int = 10, pool: str = "avg", pool_p: float = 3.0) -> None:
        super().__init__()
        xavier = paddle.ParamAttr(initializer=nn.initializer.XavierUniform())

        def bias(fan_in: int) -> paddle.ParamAttr:
            # seed 001 only re-initialises the weights; its biases keep PyTorch's default U(±1/√fan_in)
            # (Paddle's own default would be zero)
            bound = 1.0 / fan_in**0.5
            return paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound))

        self.conv1 = nn.Conv2D(1, 6, 5, stride=1, padding=2, weight_attr=xavier, bias_attr=bias(1 * 25))
        self.pool1 = make_pool(pool, 6, pool_p)
        self.conv2 = nn.Conv2D(6, 16, 5, weight_attr=xavier, bias_attr=bias(6 * 25))
        self.pool2 = make_pool(pool, 16, pool_p)
        self.linear1 = nn.Linear(400, 120, weight_attr=xavier, bias_attr=bias(400))
        self.linear2 = nn.Linear(120, 84, weight_attr=xavier, bias_attr=bias(120))
        self.linear3 = nn.Linear(84, num_classes, weight_attr=xavier, bias_attr=bias(84))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.pool1(F.sigmoid(self.conv1(x)))
        x = self.pool2(F.sigmoid(self.conv2(x)))
        x = paddle.flatten(x, start_axis=1)
        x = F.sigmoid(self.linear1(x))
        x = F.sigmoid(self.linear2(x))
        return self.linear3(x)


class LeNetBN(nn.Layer):
    """Seed 002's LeNet with Dropout, BatchNorm and a global-average-pooling head.

    ``strided=True`` is its twin: both max-pools removed and conv1/conv2 at stride 2, so the two
    have exactly the same parameters (the only difference is how they downsample).
    Shapes 28 → 14 → 7 → 3 → 1 in both.
    """

    def __init__(self, num_classes: int = 10, strided: bool = False, pool: str = "max", pool_p: float = 3.0) -> None:
        super().__init__()
        s = 2 if strided else 1
        self.conv1 = nn.Conv2D(1, 6, 5, stride=s, padding=2)
        self.pool1 = nn.Identity() if strided else make_pool(pool, 6, pool_p)
        self.drop1 = nn.Dropout(0.4)
        self.conv2 = nn.Conv2D(6, 16, 5, stride=s, padding=2)
        self.bn2 = nn.BatchNorm2D(16)
        self.pool2 = nn.Identity() if strided else make_pool(pool, 16, pool_p)
        self.conv3 = nn.Conv2D(16, 120, 5)
        self.bn3 = nn.BatchNorm2D(120)
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(120, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.drop1(self.pool1(F.relu(self.conv1(x))))
        x = self.pool2(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.bn3(self.conv3(x)))
        x = paddle.flatten(self.avg_pool(x), start_axis=1)
        return self.fc(x)


@register_model(source="000", name="LeNet")
def lenet(num_classes: int = 10, pool: str = "max", pool_p: float = 3.0, head: str = "fc",
          mixed_test: str = "expectation") -> LeNet:
    return LeNet(num_classes, pool, pool_p, head, mixed_test)


@register_model(source="000", name="LeNet_nopool")
def lenet_nopool(num_classes: int = 10, head: str = "fc") -> LeNet_nopool:
    return LeNet_nopool(num_classes, head)


@register_model(source="001")
def LeNet5_classic(num_classes: int = 10, pool: str = "avg", pool_p: float = 3.0) -> LeNet5Classic:
    return LeNet5Classic(num_classes, pool, pool_p)


@register_model(source="002")
def LeNet_BN(num_classes: int = 10, pool: str = "max", pool_p: float = 3.0) -> LeNetBN:
    return LeNetBN(num_classes, strided=False, pool=pool, pool_p=pool_p)


@register_model(source="002")
def LeNet_BN_strided(num_classes: int = 10) -> LeNetBN:
    return LeNetBN(num_classes, strided=True)
