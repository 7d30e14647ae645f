"""The fast path as one pass over a built model: execution strategy outside the architectures.

Models (``models/``) hold only their plain graph. :func:`accelerate` turns a built model's layers into
kernel-backed subclasses of themselves — the same objects, the same parameters and ``state_dict`` keys,
forward hooks still firing — whose ``forward`` calls the package's CPU kernels (:mod:`paddle_lenet.ops`)
and falls back to the plain layer's ``forward`` wherever the kernels do not apply (GPU, static graph for
export, other dtypes, no compiler). So FLOPs, export and parameter counts see the model the run trained,
and ``Global.fast`` is one switch in one place (:class:`paddle_lenet.engine.Experiment`).
"""

from __future__ import annotations

from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
import paddle.nn as nn

from . import ops
from .models.pooling import DPPPool, LIPPool, LpPool, MixedPool, SoftPool, StochasticPool


class FastConv2D(nn.Conv2D):
    """``nn.Conv2D`` through the package's conv kernel (square kernel, symmetric int padding, no groups)."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not paddle.in_dynamic_mode():
            return nn.Conv2D.forward(self, x)
        return ops.conv2d(x, self.weight, self.bias, self._stride[0], self._padding)

    @staticmethod
    def fits(layer: nn.Conv2D) -> bool:
        kh, kw = layer.weight.shape[2:]
        return (isinstance(layer._padding, int) and layer._stride[0] == layer._stride[1] and layer._groups == 1
                and list(layer._dilation) == [1, 1] and kh == kw and layer._data_format == "NCHW"
                and layer._padding_mode == "zeros")


class FastConv2DInputGradByConv(FastConv2D):
    """A :class:`FastConv2D` whose input gradient is a convolution of the output gradient with the flipped kernel
    (``ops.conv2d(..., dx_conv=True)``): for layers with few output channels, where the default path's GEMM has
    depth O (LIP's logit convolutions: O = 6 and 16). Other rounding, so a layer's choice (an accelerated layer's
    ``_inner``), never the kernel's."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not paddle.in_dynamic_mode():
            return nn.Conv2D.forward(self, x)
        return ops.conv2d(x, self.weight, self.bias, self._stride[0], self._padding, dx_conv=True)


def _two_by_two(layer: nn.MaxPool2D | nn.AvgPool2D) -> bool:
    """2×2 windows, stride 2, no padding, floor mode, NCHW: what the pooling kernels compute."""
    def pair(v: object) -> list:
        return list(v) if isinstance(v, (list, tuple)) else [v, v]

    return (pair(layer.ksize) == [2, 2] and pair(layer.stride or layer.ksize) == [2, 2]
            and pair(layer.padding) == [0, 0] and not layer.ceil_mode and layer.data_format == "NCHW")


class FastMaxPool2D(nn.MaxPool2D):
    """2×2, stride-2 max pooling through the package's kernel (ties: the first element, as Paddle's)."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not paddle.in_dynamic_mode():
            return nn.MaxPool2D.forward(self, x)
        return ops.max_pool2x2(x)

    @staticmethod
    def fits(layer: nn.MaxPool2D) -> bool:
        return _two_by_two(layer) and not layer.return_mask


class FastAvgPool2D(nn.AvgPool2D):
    """2×2, stride-2 average pooling through the package's kernel: Paddle's arithmetic, without its generic loop."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not paddle.in_dynamic_mode():
            return nn.AvgPool2D.forward(self, x)
        return ops.avg_pool2x2(x)

    @staticmethod
    def fits(layer: nn.AvgPool2D) -> bool:
        return _two_by_two(layer) and layer.divisor is None


class FastGlobalAvgPool2D(nn.AdaptiveAvgPool2D):
    """``nn.AdaptiveAvgPool2D(1)`` (NCHW) through the package's kernel: Paddle's arithmetic, without its 0.4 ms a call."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not paddle.in_dynamic_mode():
            return nn.AdaptiveAvgPool2D.forward(self, x)
        return ops.global_avg_pool(x)

    @staticmethod
    def fits(layer: nn.AdaptiveAvgPool2D) -> bool:
        size = layer._output_size
        one = list(size) == [1, 1] if isinstance(size, (list, tuple)) else size == 1
        return one and layer._data_format == "NCHW"


class _RandomWindowsOnKernels:
    """A random pooling's 2×2 window ``average`` through the average kernel (Paddle's ``avg_pool2d`` bit for bit:
    Paddle's generic pool loop was 2.9 ms of mixed pooling's 14.7 ms step) and its uniforms through the draw kernel
    (``paddle.rand``'s numbers: 0.4–0.5 ms a call in Paddle's loop). Neither changes a bit of the layer."""

    k: int

    def average(self, x: paddle.Tensor) -> paddle.Tensor:
        return ops.avg_pool2x2(x) if self.k == 2 else super().average(x)  # type: ignore[misc]

    def rand(self, shape: list[int], like: paddle.Tensor) -> paddle.Tensor:
        return ops.rand(shape, like)  # Paddle's own draw wherever the kernel does not apply


class FastStochasticPool(_RandomWindowsOnKernels, StochasticPool):
    """Stochastic pooling's training draw in one pass per window, from the same uniforms as the plain layer; its
    inference (Σ a⁺² / Σ a⁺) averages on the kernel."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.training and paddle.in_dynamic_mode() and ops.window_kernels(x, self.k) is not None:
            return ops.stochastic_pool(x, self.uniforms(x), self.k)
        return StochasticPool.forward(self, x)


class FastMixedPool(_RandomWindowsOnKernels, MixedPool):
    """Mixed pooling with its window average and its draws on the kernels; its max pooling is the ``nn.MaxPool2D``
    sublayer, accelerated on its own; the blend stays the plain layer's ops."""


class FastDropout(nn.Dropout):
    """``nn.Dropout`` in training through the dropout kernel: Paddle's mask from the same draws, its output and
    gradient, bit for bit (Paddle's loop is 0.8 ms a call on LeNet_BN's 75k activations, a mispredicted branch at every
    other element)."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.training and paddle.in_dynamic_mode() and isinstance(self.p, (int, float)):
            return ops.dropout(x, float(self.p))
        return nn.Dropout.forward(self, x)

    @staticmethod
    def fits(layer: nn.Dropout) -> bool:
        return layer.axis is None and layer.mode == "upscale_in_train" and not getattr(layer, "inplace", False)


class FastSoftPool(SoftPool):
    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if paddle.in_dynamic_mode() and ops.window_kernels(x, self.k) is not None:
            return ops.soft_window(x, x, self.k, self.k, 0)
        return SoftPool.forward(self, x)


class FastLIPPool(LIPPool):
    """LIP's weighted 3×3 window mean through its window kernel, and the logit branch's instance norm, sigmoid and
    scale in one kernel after the logit conv (accelerated as a sublayer of its own, with its input gradient as a
    convolution: ``_inner``)."""

    _inner = {"conv": FastConv2DInputGradByConv}

    def logit(self, x: paddle.Tensor) -> paddle.Tensor:
        norm = self.norm
        if (paddle.in_dynamic_mode() and ops.window_kernels(x, 3) is not None and norm.scale is not None
                and norm.bias is not None and norm._data_format == "NCHW"):
            return ops.lip_logit(self.conv(x), norm.scale, norm.bias, norm._epsilon)
        return LIPPool.logit(self, x)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if paddle.in_dynamic_mode() and ops.window_kernels(x, 3) is not None:
            return ops.soft_window(x, self.logit(x), 3, 2, 1)
        return LIPPool.forward(self, x)


class FastDPPPool(DPPPool):
    """DPP fused into one pass per window, forward and backward."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if paddle.in_dynamic_mode() and ops.window_kernels(x, self.k) is not None:
            return ops.dpp_pool(x, self.lam, self.alpha, self.k)
        return DPPPool.forward(self, x)


class FastLpPool(LpPool):
    """Lp pooling in one pass per window, forward and backward."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if paddle.in_dynamic_mode() and ops.window_kernels(x, self.k) is not None:
            return ops.lp_pool(x, self.p, self.k)
        return LpPool.forward(self, x)


# plain class → (accelerated subclass, does this instance fit it); exact classes only: a user's subclass of a
# plain layer has its own forward, which the pass must not replace
_SWAPS: dict[type, tuple[type, object]] = {
    nn.Conv2D: (FastConv2D, FastConv2D.fits),
    nn.MaxPool2D: (FastMaxPool2D, FastMaxPool2D.fits),
    nn.AvgPool2D: (FastAvgPool2D, FastAvgPool2D.fits),
    nn.AdaptiveAvgPool2D: (FastGlobalAvgPool2D, FastGlobalAvgPool2D.fits),
    nn.Dropout: (FastDropout, FastDropout.fits),
    StochasticPool: (FastStochasticPool, None),
    MixedPool: (FastMixedPool, None),
    SoftPool: (FastSoftPool, None),
    LIPPool: (FastLIPPool, None),
    DPPPool: (FastDPPPool, None),
    LpPool: (FastLpPool, None),
}


# accelerated class → the kernels of ops.REVISIONS that compute it (a run's arithmetic revision is theirs)
KERNELS: dict[type, tuple[str, ...]] = {
    FastConv2D: ("conv2d",),
    FastConv2DInputGradByConv: ("conv2d", "conv2d_dx_conv"),
    FastMaxPool2D: ("max_pool2x2",),
    FastAvgPool2D: ("avg_pool2x2",),
    FastGlobalAvgPool2D: ("global_avg_pool",),
    FastDropout: ("dropout",),
    FastStochasticPool: ("stochastic_pool", "avg_pool2x2", "rand"),
    FastMixedPool: ("avg_pool2x2", "rand"),
    FastSoftPool: ("soft_window",),
    FastLIPPool: ("lip_window", "lip_logit"),
    FastDPPPool: ("dpp",),
    FastLpPool: ("lp_pool",),
}


def accelerate(net: nn.Layer) -> nn.Layer:
    """Put ``net``'s layers on the package's CPU kernels, in place; returns ``net``.

    Same function, same parameters: ``tests/test_models.py`` checks outputs and every gradient of every
    LeNet-family configuration against the plain model. Idempotent.
    """
    for layer in net.sublayers(include_self=True):
        swap = _SWAPS.get(type(layer))
        if swap is not None and (swap[1] is None or swap[1](layer)):
            layer.__class__ = swap[0]
    # then an accelerated layer's own choice for a sublayer the first loop accelerated (after it, in any order)
    for layer in net.sublayers(include_self=True):
        for name, cls in getattr(type(layer), "_inner", {}).items():
            sub = getattr(layer, name, None)
            if sub is not None and type(sub) in cls.__mro__[1:2]:
                sub.__class__ = cls
    return net


def accelerated_layers(net: nn.Layer) -> list[str]:
    """Names of the sublayers the pass put on the kernels (what a run records as its arithmetic)."""
    fast = tuple(KERNELS)
    return [name or "(model)" for name, layer in net.named_sublayers(include_self=True) if isinstance(layer, fast)]


def kernels_used(net: nn.Layer) -> list[str]:
    """The kernels ``net``'s accelerated layers call (sorted names of ``ops.REVISIONS``): what its arithmetic is."""
    return sorted({k for layer in net.sublayers(include_self=True) for k in KERNELS.get(type(layer), ())})
