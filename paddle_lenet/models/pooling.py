"""Downsampling operators of seed 003, as interchangeable layers (window k, stride k).

Each follows its paper's definition; where training and inference differ (mixed, stochastic) the
layer switches on ``self.training``. The hand-computed windows in ``tests/test_pooling.py`` pin the math.
"""

from __future__ import annotations

from .. import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def windows(x: paddle.Tensor, k: int = 2) -> paddle.Tensor:
    """``[N, C, H, W]`` → ``[N, C, H//k, W//k, k*k]`` non-overlapping windows (floor mode, like MaxPool2D)."""
    n, c, h, w = x.shape
    ho, wo = h // k, w // k
    x = x[:, :, : ho * k, : wo * k]
    x = x.reshape([n, c, ho, k, wo, k]).transpose([0, 1, 2, 4, 3, 5])
    return x.reshape([n, c, ho, wo, k * k])


class LpPool(nn.Layer):
    """Power-average pooling (Σ|x|^p)^(1/p): p=1 is sum pooling, p→∞ tends to max.

    The absolute value matters in the faithful LeNet, whose second pool sees un-ReLU'd (signed)
    conv outputs; the clip keeps the gradient finite on all-zero windows.
    """

    def __init__(self, p: float = 3.0, kernel_size: int = 2) -> None:
        super().__init__()
        self.p, self.k = float(p), kernel_size

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = (windows(x, self.k).abs() ** self.p).sum(-1)
        return paddle.clip(s, min=1e-12) ** (1.0 / self.p)


class MixedPool(nn.Layer):
    """Mixed pooling (Yu et al. 2014): each window randomly max or average during training.

    At inference the fixed rule is the training-time expectation, 0.5·max + 0.5·avg.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        w = windows(x, self.k)
        mx, avg = w.max(-1), w.mean(-1)
        if self.training:
            lam = (paddle.rand(mx.shape) < 0.5).astype(x.dtype)
            return lam * mx + (1 - lam) * avg
        return 0.5 * mx + 0.5 * avg


class StochasticPool(nn.Layer):
    """Stochastic pooling (Zeiler & Fergus 2013): p_i = a_i / Σa_j within each window.

    Training samples one activation by p; inference returns Σ p_i a_i. Probabilities use max(a, 0)
    (the paper assumes ReLU inputs); an all-zero window falls back to uniform.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    def probs(self, w: paddle.Tensor) -> paddle.Tensor:
        a = F.relu(w)
        s = a.sum(-1, keepdim=True)
        uniform = paddle.full_like(a, 1.0 / a.shape[-1])
        return paddle.where(s > 0, a / paddle.clip(s, min=1e-12), uniform)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        w = windows(x, self.k)
        p = self.probs(w).detach()
        if not self.training:
            return (p * w).sum(-1)
        u = paddle.rand(p.shape[:-1] + [1], dtype=p.dtype)
        idx = (paddle.cumsum(p, axis=-1) < u).astype("int64").sum(-1, keepdim=True)
        idx = paddle.clip(idx, max=w.shape[-1] - 1)
        return paddle.take_along_axis(w, idx, axis=-1).squeeze(-1)


class SoftPool(nn.Layer):
    """SoftPool (Stergiou et al. 2021): Σ softmax(a)_i · a_i over each window."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        w = windows(x, self.k)
        return (F.softmax(w, axis=-1) * w).sum(-1)


class LIPPool(nn.Layer):
    """Local importance pooling (Gao et al. 2019): Σ exp(logit)·x / Σ exp(logit) per window.

    The logit module is the paper's small projection: a 3×3 conv, then 12·sigmoid (bounded so exp
    cannot overflow), one importance map per channel.
    """

    def __init__(self, channels: int, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size
        self.logit = nn.Conv2D(channels, channels, 3, padding=1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        w = paddle.exp(12.0 * F.sigmoid(self.logit(x)))
        return F.avg_pool2d(x * w, self.k, self.k) / F.avg_pool2d(w, self.k, self.k)


class DPPPool(nn.Layer):
    """Detail-preserving pooling (Saeedan et al. 2018), "lite" variant.

    Weights w = α + ρ_λ(x − x̃) with x̃ the window mean and ρ_λ(d) = (d² + ε²)^(λ/2), so
    activations that differ from their neighbourhood (details) get more weight; α, λ ≥ 0 are
    learned per channel through softplus. Output Σ w·x / Σ w.
    """

    def __init__(self, channels: int, kernel_size: int = 2, eps: float = 1e-3) -> None:
        super().__init__()
        self.k, self.eps = kernel_size, eps
        self.alpha = self.create_parameter([1, channels, 1, 1, 1], default_initializer=nn.initializer.Constant(0.0))
        self.lam = self.create_parameter([1, channels, 1, 1, 1], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        w = windows(x, self.k)
        d = w - w.mean(-1, keepdim=True)
        weight = F.softplus(self.alpha) + (d * d + self.eps**2) ** (F.softplus(self.lam) / 2)
        return (weight * w).sum(-1) / weight.sum(-1)


POOLS = ("max", "avg", "lp", "mixed", "stochastic", "soft", "lip", "dpp")


def make_pool(kind: str, channels: int, p: float = 3.0, kernel_size: int = 2) -> nn.Layer:
    """The pooling layer named by ``Arch.pool``."""
    if kind == "max":
        return nn.MaxPool2D(kernel_size, kernel_size)
    if kind == "avg":
        return nn.AvgPool2D(kernel_size, kernel_size)
    if kind == "lp":
        return LpPool(p, kernel_size)
    if kind == "mixed":
        return MixedPool(kernel_size)
    if kind == "stochastic":
        return StochasticPool(kernel_size)
    if kind == "soft":
        return SoftPool(kernel_size)
    if kind == "lip":
        return LIPPool(channels, kernel_size)
    if kind == "dpp":
        return DPPPool(channels, kernel_size)
    raise ValueError(f"unknown pool '{kind}'; choose one of {', '.join(POOLS)}")
