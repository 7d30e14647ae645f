"""Downsampling operators of seed 003, as interchangeable layers (2×2 windows, stride 2; LIP: 3×3, stride 2).

Each follows its paper's definition; where training and inference differ (mixed, stochastic) the
layer switches on ``self.training``. ``tests/test_pooling.py`` pins the math on hand-computed windows and
independent numpy computations of each definition.
"""

from __future__ import annotations

from .. import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .. import ops


class LpPool(nn.Layer):
    """Lp pooling as ``nn.LPPool2D`` defines it: the power *sum* (Σ|x|^p)^(1/p) over each window.

    That is 4^(1/p) times the power *mean* of a 2×2 window (Sermanet et al. 2012 weight the sum with a
    Gaussian; Paddle's and PyTorch's LPPool use uniform weights, as here). p = 1 is sum pooling, p → ∞ tends to
    max. Deliberate deviation from ``nn.LPPool2D``: the absolute value, because the faithful LeNet's second
    pool sees un-ReLU'd (signed) conv outputs and a negative sum has no real p-th root; the clip keeps the
    gradient finite on all-zero windows.
    """

    def __init__(self, p: float = 3.0, kernel_size: int = 2) -> None:
        super().__init__()
        self.p, self.k = float(p), kernel_size

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # |x|^p as exp(p·log|x|) (Paddle's CPU pow is ~5× slower), the window sum as k²·avg_pool
        xp = paddle.exp(self.p * paddle.log(paddle.clip(x.abs(), min=1e-30)))
        s = F.avg_pool2d(xp, self.k, self.k) * float(self.k * self.k)
        return paddle.exp(paddle.log(paddle.clip(s, min=1e-12)) / self.p)


class MixedPool(nn.Layer):
    """Mixed pooling (Yu et al. 2014): each window randomly max or average during training.

    At inference the fixed rule is the training-time expectation, 0.5·max + 0.5·avg. (Not verified against
    the paper's text, which was not at hand; the per-window choice of λ ∈ {0, 1} is the paper's.)
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    fast = False

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        mx = ops.max_pool2x2(x) if self.fast and self.k == 2 else F.max_pool2d(x, self.k, self.k)
        avg = F.avg_pool2d(x, self.k, self.k)
        if self.training:
            lam = (paddle.rand(mx.shape) < 0.5).astype(x.dtype)
            return lam * mx + (1 - lam) * avg
        return 0.5 * mx + 0.5 * avg


class StochasticPool(nn.Layer):
    """Stochastic pooling (Zeiler & Fergus, ICLR 2013): p_i = a_i / Σ_j a_j within each window.

    Training samples one activation with probability p_i; inference returns the probabilistic weighting
    Σ p_i a_i. The paper defines p for non-negative (post-ReLU) activations; the faithful LeNet's pool2 sees
    signed conv outputs, so here p uses the positive parts max(a, 0) — the definition restricted to them —
    and a window with no positive activation takes its maximum. That is the limit of the definition: as the
    last positive activation of a window shrinks to 0, all probability mass sits on it, the window's maximum.
    (It replaces an earlier uniform draw that nothing in the paper motivates.)
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    fast = False

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        k = self.k
        n, c, h, w = x.shape
        if self.training:  # one uniform u per window (drawn first: nothing else here consumes random numbers)
            u = paddle.rand([n, c, h // k, w // k], dtype=x.dtype)
            if self.fast:
                out = ops.stochastic_pool(x, u, k)  # the pick below in one pass (None: no kernels)
                if out is not None:
                    return out
        a = F.relu(x)
        mass = F.avg_pool2d(a, k, k)  # Σ a⁺ / k²: zero where the window has nothing positive
        mx = ops.max_pool2x2(x) if self.fast and k == 2 else F.max_pool2d(x, k, k)
        if not self.training:  # Σ p·a with p = a⁺/Σa⁺ is Σ a⁺² / Σ a⁺ (a·a⁺ = a⁺²)
            return paddle.where(mass > 0, F.avg_pool2d(a * a, k, k) / paddle.clip(mass, min=1e-30), mx)
        # sample element i of each window with probability a⁺_i / Σ a⁺: the first i (row-major) whose
        # cumulative a⁺ reaches u·Σa⁺ (the inverse CDF); strided slices, no window copies
        parts = [x[:, :, r: h - h % k: k, q: w - w % k: k] for r in range(k) for q in range(k)]
        target = u * mass * float(k * k)
        picked = parts[-1]
        cums, running = [], None
        for part in parts[:-1]:
            running = F.relu(part) if running is None else running + F.relu(part)
            cums.append(running)
        for part, cum in zip(reversed(parts[:-1]), reversed(cums), strict=True):  # nested, last element first
            picked = paddle.where(target < cum, part, picked)
        return paddle.where(mass > 0, picked, mx)


class SoftPool(nn.Layer):
    """SoftPool (Stergiou et al. 2021): Σ softmax(a)_i · a_i over each window."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    fast = False

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return ops.soft_window(x, x, self.k, self.k, 0, kernel=self.fast)  # weights softmax(x) over each window


class LIPPool(nn.Layer):
    """Local importance pooling (Gao, Wang & Wu, ICCV 2019), the authors' ``SimplifiedLIP``.

    logit = 12·sigmoid(InstanceNorm(conv3×3(x))) — a bias-free 3×3 conv, channels → channels, an affine
    instance norm, the bounded "soft gate" — then out = avg_pool(x·e^logit) / avg_pool(e^logit) over 3×3
    windows with stride 2 and padding 1 (the padding cancels in the ratio). As in the authors' ``init_layer``
    the conv starts at zero, so LIP starts as plain 3×3 averaging and learns where to look. Deviation: none in
    the function; the windows overlap (3×3, stride 2), unlike the other operators here, as in the paper.
    Output size equals 2×2/stride-2 pooling's for the LeNet maps (28 → 14, 10 → 5).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2D(channels, channels, 3, padding=1, bias_attr=False,
                              weight_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))
        self.norm = nn.InstanceNorm2D(channels)  # affine: scale 1, shift 0 at the start

    fast = False

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        logit = 12.0 * F.sigmoid(self.norm(ops.conv2d(x, self.conv) if self.fast else self.conv(x)))
        # avg_pool(x·e^logit) / avg_pool(e^logit) over 3×3 windows, stride 2, padding 1
        return ops.soft_window(x, logit, 3, 2, 1, kernel=self.fast)


class DPPPool(nn.Layer):
    """Detail-preserving pooling (Saeedan, Weber, Goesele & Roth, CVPR 2018), symmetric "lite" variant,
    as in the authors' Torch code (``DPP_sym_lite``, ``CWeightCalc``, ``PositiveBias``):

    guide Ĩ = the 2×2 window mean; d = (I − Ĩ)² + 10⁻³; d̂ = the window mean of d;
    w = (d / d̂)^(e^λ / 2) + e^α; out = Σ w·I / Σ w over each 2×2 window.

    λ and α are learned per channel, initialised uniformly in ±1/√C like the authors' modules; α is capped at 10
    (the authors clamp the parameter in place; here the cap is applied in the forward pass, same values).
    Computed with Paddle's pooling ops: d̂ as the window's variance + 10⁻³ = mean(I²) − Ĩ² + 10⁻³ (the same value;
    one-pass, so it loses precision only for activations ~10³× larger than LeNet's).
    Activations that differ from their window's mean (details) get more weight, with λ setting how much.
    """

    def __init__(self, channels: int, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size
        bound = 1.0 / channels**0.5
        init = nn.initializer.Uniform(-bound, bound)
        self.lam = self.create_parameter([1, channels, 1, 1, 1], default_initializer=init)
        self.alpha = self.create_parameter([1, channels, 1, 1, 1], default_initializer=init)

    fast = False

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        k = self.k
        if self.fast:
            out = ops.dpp_pool(x, self.lam, self.alpha, k)  # one fused pass per window (None: no kernels)
            if out is not None:
                return out
        n, c, h, w = x.shape
        ho, wo = h // k, w // k
        x = x[:, :, : ho * k, : wo * k]

        def per_window(t: paddle.Tensor) -> paddle.Tensor:  # a window statistic, back on each of its pixels
            return F.interpolate(t, scale_factor=k, mode="nearest")

        m = F.avg_pool2d(x, k, k)
        diff = x - per_window(m)
        d = diff * diff + 1e-3
        # the window mean of d is the window's variance + 10⁻³: mean(x²) − m² + 10⁻³, at output resolution
        dn = F.avg_pool2d(x * x, k, k) - m * m + 1e-3
        gamma = (paddle.exp(self.lam) / 2).reshape([1, c, 1, 1])
        alpha = paddle.exp(paddle.clip(self.alpha, max=10.0)).reshape([1, c, 1, 1])
        weight = paddle.exp(gamma * (paddle.log(d) - per_window(paddle.log(paddle.clip(dn, min=1e-3))))) + alpha
        return F.avg_pool2d(weight * x, k, k) / F.avg_pool2d(weight, k, k)


# Version of each operator's definition: recorded with every run so that a study never reuses a run whose
# operator has since been corrected (lip, dpp: the authors' definitions; stochastic: non-positive windows).
REVISIONS = {"lip": 2, "dpp": 2, "stochastic": 2}


POOLS = ("max", "avg", "lp", "mixed", "stochastic", "soft", "lip", "dpp")


def make_pool(kind: str, channels: int, p: float = 3.0, kernel_size: int = 2, fast: bool = False) -> nn.Layer:
    """The pooling layer named by ``Arch.pool``; ``fast`` lets it use the package's CPU kernels (same function)."""
    layer = _make_pool(kind, channels, p, kernel_size)
    if hasattr(layer, "fast"):
        layer.fast = fast
    return layer


def _make_pool(kind: str, channels: int, p: float, kernel_size: int) -> nn.Layer:
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
        return LIPPool(channels)  # the authors' 3×3/stride-2 windows
    if kind == "dpp":
        return DPPPool(channels, kernel_size)
    raise ValueError(f"unknown pool '{kind}'; choose one of {', '.join(POOLS)}")
