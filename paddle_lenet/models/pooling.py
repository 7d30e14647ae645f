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

from ..config import POOLS


def windows(x: paddle.Tensor, k: int) -> paddle.Tensor:
    """The k×k, stride-k windows of an NCHW tensor as ``[N, C, H//k, k, W//k, k]`` (a view; a last partial row or
    column is dropped, as pooling drops it). Reductions over axes 3 and 5 are per-window statistics, and
    ``keepdim`` ones broadcast back onto every pixel of their window — no upsampling op, so exported graphs
    hold only standard operators."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    ho, wo = h // k, w // k
    return x[:, :, : ho * k, : wo * k].reshape([-1, c, ho, k, wo, k])


class LpPool(nn.Layer):
    """Lp pooling as ``nn.LPPool2D`` defines it: the power *sum* (Σ|x|^p)^(1/p) over each window.

    That is 4^(1/p) times the power *mean* of a 2×2 window (Sermanet et al. 2012 weight the sum with a
    Gaussian; Paddle's and PyTorch's LPPool use uniform weights, as here). p = 1 is sum pooling, p → ∞ tends to
    max. Deliberate deviation from ``nn.LPPool2D``: the absolute value, because the faithful LeNet's second
    pool sees un-ReLU'd (signed) conv outputs and a negative sum has no real p-th root.

    Computed relative to each window's largest |x|, m: (Σ|x|^p)^(1/p) = m·(Σ(|x|/m)^p)^(1/p), whose inner sum
    lies in [1, k²], so nothing under- or overflows at any p in (0, 64] and nothing is clipped into the result
    (an earlier clip of the sum at 1e-12 put 1e-12^(1/p) under every output: 0.42 instead of 0.30 at p = 32).
    m carries no gradient of its own — the function is homogeneous in m, ∂out/∂m = 0 — and all-zero windows
    give 0 with zero, finite gradients.
    """

    def __init__(self, p: float = 3.0, kernel_size: int = 2) -> None:
        super().__init__()
        self.p, self.k = float(p), kernel_size

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        k = self.k
        c, ho, wo = x.shape[1], x.shape[2] // k, x.shape[3] // k
        a = x[:, :, : ho * k, : wo * k].abs()
        m = F.max_pool2d(a, k, k).detach()
        safe = paddle.where(m > 0, m, paddle.ones_like(m))
        # each window's maximum on each of its pixels (expand, not an upsampling op: exported graphs stay standard)
        per_pixel = safe.reshape([-1, c, ho, 1, wo, 1]).expand([-1, c, ho, k, wo, k]).reshape([-1, c, ho * k, wo * k])
        # r^p as exp(p·log r) (Paddle's CPU pow is ~5× slower); the window sum as k²·avg_pool, in [1, k²] where m > 0
        r = paddle.clip(a / per_pixel, min=1e-30)
        s = F.avg_pool2d(paddle.exp(self.p * paddle.log(r)), k, k) * float(k * k)
        s = paddle.where(m > 0, s, paddle.ones_like(s))
        return paddle.where(m > 0, m * paddle.exp(paddle.log(s) / self.p), paddle.zeros_like(m))


class _RandomWindows(nn.Layer):
    """A random pooling's k×k, stride-k window mean and its uniform draws as methods, so the accelerate pass can put
    them on kernels."""

    k: int

    def average(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.avg_pool2d(x, self.k, self.k)

    def rand(self, shape: list[int], like: paddle.Tensor) -> paddle.Tensor:
        return paddle.rand(shape, dtype=like.dtype)


class MixedPool(_RandomWindows):
    """Mixed pooling (Yu et al. 2014): each window randomly max or average during training.

    At inference the default rule (``test="expectation"``) is the training-time expectation, 0.5·max + 0.5·avg —
    the package's own rule (the paper's text was not at hand; the per-window choice of λ ∈ {0, 1} is the paper's).
    Public implementations use whichever of max and average the training drew more often; with fair per-window
    draws that is pure max or pure average: ``test="max"`` or ``"avg"`` (``Arch.mixed_test``).
    ``docs/results/pooling_zoo_fashion10/mixed_test_rule.py`` measured the three rules on the same weights: up to
    4 points apart.
    """

    RULES = ("expectation", "max", "avg")

    def __init__(self, kernel_size: int = 2, test: str = "expectation") -> None:
        super().__init__()
        if test not in self.RULES:
            raise ValueError(f"unknown mixed pooling test rule '{test}'; choose one of {', '.join(self.RULES)}")
        self.k, self.test = kernel_size, test
        self.max_pool = nn.MaxPool2D(kernel_size, kernel_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        mx = self.max_pool(x)
        avg = self.average(x)
        if self.training:
            lam = (self.rand(mx.shape, x) < 0.5).astype(x.dtype)
            return lam * mx + (1 - lam) * avg
        if self.test == "max":
            return mx
        if self.test == "avg":
            return avg
        return 0.5 * mx + 0.5 * avg


class StochasticPool(_RandomWindows):
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
        self.max_pool = nn.MaxPool2D(kernel_size, kernel_size)  # windows with nothing positive

    def uniforms(self, x: paddle.Tensor) -> paddle.Tensor:
        """One uniform u per window: the only random numbers the layer consumes (the accelerated layer draws
        the same ones, so both paths sample the same elements)."""
        n, c, h, w = x.shape
        return self.rand([n, c, h // self.k, w // self.k], x)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        k = self.k
        n, c, h, w = x.shape
        if self.training:
            u = self.uniforms(x)
        a = F.relu(x)
        mass = self.average(a)  # Σ a⁺ / k²: zero where the window has nothing positive
        mx = self.max_pool(x)
        if not self.training:  # Σ p·a with p = a⁺/Σa⁺ is Σ a⁺² / Σ a⁺ (a·a⁺ = a⁺²)
            return paddle.where(mass > 0, self.average(a * a) / paddle.clip(mass, min=1e-30), mx)
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


def soft_window(x: paddle.Tensor, logit: paddle.Tensor, k: int, s: int, p: int) -> paddle.Tensor:
    """Σ softmax(logit)·x over each k×k window (stride s, padding p; padded positions excluded).

    The weighted mean with weights e^logit that SoftPool (logit = x) and LIP (logit = its importance map)
    are made of: a softmax over the window axis for non-overlapping windows, else
    avg_pool(x·e^L) / avg_pool(e^L) shifted by the tensor's maximum, which needs logits within ~80 of each
    other (LIP's are in [0, 12]).
    """
    if k == s and p == 0:
        n, c, h, w = x.shape
        ho, wo = h // k, w // k

        def win(t: paddle.Tensor) -> paddle.Tensor:
            t = t[:, :, : ho * k, : wo * k].reshape([n, c, ho, k, wo, k]).transpose([0, 1, 2, 4, 3, 5])
            return t.reshape([n, c, ho, wo, k * k])

        return (F.softmax(win(logit), axis=-1) * win(x)).sum(-1)
    e = paddle.exp(logit - logit.max().detach())
    return F.avg_pool2d(x * e, k, s, p) / F.avg_pool2d(e, k, s, p)


class SoftPool(nn.Layer):
    """SoftPool (Stergiou et al. 2021): Σ softmax(a)_i · a_i over each window.

    Deviation, deliberate: the backward pass is the exact derivative of this function, w·(1 + x − y)·g, while the
    authors' CUDA kernel treats the weights as constants (w·g). Not offered as an option: a gradient that is not
    the function's changes what is being compared (the package compares operators as functions), and the exact
    one is what every autograd re-implementation of the paper computes.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.k = kernel_size

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return soft_window(x, x, self.k, self.k, 0)  # weights softmax(x) over each window


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

    def logit(self, x: paddle.Tensor) -> paddle.Tensor:
        return 12.0 * F.sigmoid(self.norm(self.conv(x)))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # avg_pool(x·e^logit) / avg_pool(e^logit) over 3×3 windows, stride 2, padding 1
        return soft_window(x, self.logit(x), 3, 2, 1)


class DPPPool(nn.Layer):
    """Detail-preserving pooling (Saeedan, Weber, Goesele & Roth, CVPR 2018), symmetric "lite" variant,
    as in the authors' Torch code (``DPP_sym_lite``, ``CWeightCalc``, ``PositiveBias``):

    guide Ĩ = the 2×2 window mean; d = (I − Ĩ)² + 10⁻³; d̂ = the window mean of d;
    w = (d / d̂)^(e^λ / 2) + e^α; out = Σ w·I / Σ w over each 2×2 window.

    λ and α are learned per channel, initialised uniformly in ±1/√C like the authors' modules; α is capped at 10.
    Deviation: the authors clamp the parameter in place after a step and pass α's gradient through; here the cap
    is applied in the forward pass (the same forward values), so α's gradient is zero while α ≥ 10 — reached
    only if e^α is ~22,000 times the detail weights, which LeNet's runs never approach.
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

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        c = x.shape[1]
        x6 = windows(x, self.k)  # per-window statistics keep their axes and broadcast onto the window's pixels
        inv = 1.0 / (self.k * self.k)  # window means as sums (Paddle Inference's oneDNN mean prints a line per call)
        m = x6.sum(axis=[3, 5], keepdim=True) * inv
        diff = x6 - m
        d = diff * diff + 1e-3
        # the window mean of d is the window's variance + 10⁻³: mean(x²) − m² + 10⁻³
        dn = (x6 * x6).sum(axis=[3, 5], keepdim=True) * inv - m * m + 1e-3
        gamma = (paddle.exp(self.lam) / 2).reshape([1, c, 1, 1, 1, 1])
        alpha = paddle.exp(paddle.clip(self.alpha, max=10.0)).reshape([1, c, 1, 1, 1, 1])
        weight = paddle.exp(gamma * (paddle.log(d) - paddle.log(paddle.clip(dn, min=1e-3)))) + alpha
        return ((weight * x6).sum(axis=[3, 5]) / weight.sum(axis=[3, 5]))


# Version of each operator's definition: recorded with every run so that a study never reuses a run whose
# operator has since been corrected (lip, dpp: the authors' definitions; stochastic: non-positive windows).
# lp 2: no clip under the power sum (exact at large p)
REVISIONS = {"lip": 2, "dpp": 2, "stochastic": 2, "lp": 2}




def make_pool(kind: str, channels: int, p: float = 3.0, kernel_size: int = 2, mixed_test: str = "expectation") -> nn.Layer:
    """The pooling layer named by ``Arch.pool`` (``mixed_test``: mixed pooling's inference rule)."""
    if kind == "max":
        return nn.MaxPool2D(kernel_size, kernel_size)
    if kind == "avg":
        return nn.AvgPool2D(kernel_size, kernel_size)
    if kind == "lp":
        return LpPool(p, kernel_size)
    if kind == "mixed":
        return MixedPool(kernel_size, mixed_test)
    if kind == "stochastic":
        return StochasticPool(kernel_size)
    if kind == "soft":
        return SoftPool(kernel_size)
    if kind == "lip":
        return LIPPool(channels)  # the authors' 3×3/stride-2 windows
    if kind == "dpp":
        return DPPPool(channels, kernel_size)
    raise ValueError(f"unknown pool '{kind}'; choose one of {', '.join(POOLS)}")
