"""The package's CPU kernels (paddle_lenet/ops.py): built here, equal to Paddle's ops, thread-count invariant."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from paddle_lenet import ops
from paddle_lenet.accelerate import accelerate


@pytest.fixture(autouse=True)
def _restore() -> None:
    yield
    ops.configure(enabled=True, threads=0)


def test_kernels_are_built() -> None:
    """CI has a C++ compiler, so the fast path must really run the kernels, not the fallback."""
    assert ops.kernels() is not None


def _grads(conv: nn.Conv2D, x: paddle.Tensor, fn, seed: int = 1) -> list[np.ndarray]:
    for p in conv.parameters():
        p.clear_gradient()
    x = x.detach()
    x.stop_gradient = False
    out = fn(x)
    w = paddle.to_tensor(np.random.default_rng(seed).standard_normal(out.shape).astype("float32"))
    (out * w).sum().backward()
    return [out.numpy(), conv.weight.grad.numpy(), conv.bias.grad.numpy(), x.grad.numpy()]


# (batch, in channels, size, out channels, kernel, stride, padding): every conv of LeNet and
# LeNet_nopool, batches smaller than and not divisible by the 8 reduction chunks, wide outputs, stride-2 layers
# on rows wider than 32 (odd and even), a 3x3 layer of 9-16 outputs over an odd number of input channels (the window
# weight gradient's one-channel pass), LeNet_BN_strided's first layer (the phased window GEMM)
@pytest.mark.parametrize("n,c,h,o,k,s,p", [(64, 1, 28, 6, 5, 1, 2), (64, 6, 14, 16, 5, 1, 0), (5, 6, 28, 16, 5, 2, 0),
                                           (13, 16, 12, 16, 3, 1, 1), (3, 16, 12, 16, 3, 2, 0),
                                           (2, 3, 32, 20, 3, 1, 1), (9, 2, 9, 7, 3, 2, 1),
                                           (2, 3, 37, 4, 3, 2, 1), (2, 2, 34, 3, 5, 2, 2),
                                           (3, 3, 12, 10, 3, 1, 1), (5, 1, 28, 6, 5, 2, 2)])
def test_conv2d_matches_paddle(n: int, c: int, h: int, o: int, k: int, s: int, p: int) -> None:
    paddle.seed(n + c + h)
    conv = nn.Conv2D(c, o, k, stride=s, padding=p)
    x = paddle.randn([n, c, h, h])
    ours = _grads(conv, x, lambda t: ops.conv2d(t, conv.weight, conv.bias, conv._stride[0], conv._padding))
    ref = _grads(conv, x, conv)
    for name, a, b in zip(("out", "dW", "db", "dx"), ours, ref, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()), err_msg=name)


# LIP's logit convolutions, other kernel sizes and paddings (p ≤ k − 1), odd sizes, and a stride-2 layer (not taken)
@pytest.mark.parametrize("n,c,h,o,k,s,p", [(64, 6, 28, 6, 3, 1, 1), (13, 16, 10, 16, 3, 1, 1), (5, 3, 13, 5, 3, 1, 0),
                                           (7, 6, 14, 16, 5, 1, 2), (4, 2, 11, 3, 5, 1, 4), (3, 4, 12, 5, 3, 2, 1)])
def test_conv2d_input_gradient_by_convolution_matches_paddle(n: int, c: int, h: int, o: int, k: int, s: int,
                                                             p: int) -> None:
    paddle.seed(n + c + h + 1)
    conv = nn.Conv2D(c, o, k, stride=s, padding=p)
    x = paddle.randn([n, c, h, h])
    ours = _grads(conv, x, lambda t: ops.conv2d(t, conv.weight, conv.bias, s, p, dx_conv=True))
    default = _grads(conv, x, lambda t: ops.conv2d(t, conv.weight, conv.bias, s, p))
    ref = _grads(conv, x, conv)
    for name, a, b in zip(("out", "dW", "db", "dx"), ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()), err_msg=name)
    for name, a, b in zip(("out", "dW", "db"), ours[:3], default[:3], strict=True):  # only dx takes the other path
        np.testing.assert_array_equal(a, b, err_msg=name)
    same_dx = np.array_equal(ours[3], default[3])
    assert same_dx == (s != 1), "dx_conv changes the input gradient's rounding exactly where it applies (stride 1)"


def test_lip_logit_convolution_takes_the_input_gradient_by_convolution() -> None:
    from paddle_lenet.accelerate import FastConv2DInputGradByConv, accelerate, kernels_used
    from paddle_lenet.models.pooling import LIPPool

    net = nn.Sequential(nn.Conv2D(1, 6, 5, padding=2), LIPPool(6))
    accelerate(net)
    assert type(net[1].conv) is FastConv2DInputGradByConv and type(net[0]) is not FastConv2DInputGradByConv
    assert {"conv2d", "conv2d_dx_conv", "lip_logit", "lip_window"} <= set(kernels_used(net))
    accelerate(net)  # idempotent
    assert type(net[1].conv) is FastConv2DInputGradByConv


def test_input_gradient_skipped_for_data() -> None:
    """The first layer's input is data: its gradient is not computed, the others are."""
    conv = nn.Conv2D(1, 6, 5, padding=2)
    x = paddle.randn([4, 1, 28, 28])
    ops.conv2d(x, conv.weight, conv.bias, 1, 2).sum().backward()
    assert x.grad is None and conv.weight.grad is not None


def test_results_do_not_depend_on_thread_count() -> None:
    paddle.seed(0)
    conv = nn.Conv2D(6, 16, 5)
    x = paddle.randn([64, 6, 14, 14])
    runs = []
    for threads in (1, 2, 3):
        ops.configure(threads=threads)
        runs.append(_grads(conv, x, lambda t: ops.conv2d(t, conv.weight, conv.bias, conv._stride[0], conv._padding)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("h,w", [(28, 28), (10, 10), (10, 12), (6, 34)])  # 14, 5, 6, 17 windows a row
def test_max_pool_matches_paddle_with_ties(h: int, w: int) -> None:
    """Values and gradient routing equal Paddle's, also where the window holds equal maxima (and ±0, where Paddle's
    value may carry the other zero's sign), for rows of windows that fill the kernel's vectors of eight, fall short
    of one, or leave a remainder."""
    rng = np.random.default_rng(h * w)
    x_np = rng.integers(0, 3, size=(8, 6, h, w)).astype("float32")  # many ties
    x_np[:, :, ::3] *= -1.0  # -0 beside +0: equal values, so the gradient goes to the first
    g = paddle.to_tensor(rng.standard_normal((8, 6, h // 2, w // 2)).astype("float32"))
    outs = []
    for fn in (ops.max_pool2x2, lambda t: F.max_pool2d(t, 2, 2)):
        x = paddle.to_tensor(x_np, stop_gradient=False)
        y = fn(x)
        (y * g).sum().backward()
        outs.append((y.numpy(), x.grad.numpy()))
    assert outs[0][0].shape == (8, 6, h // 2, w // 2)
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])


def test_max_pool_nan_never_wins_a_comparison() -> None:
    """The kernel's rule, x > m in row-major order: a NaN first in its window stays; a later NaN is passed over."""
    x_np = np.array([[[[np.nan, 1.0, 2.0, np.nan] * 5, [0.0, 3.0, 4.0, 5.0] * 5]]], "float32")
    y = ops.max_pool2x2(paddle.to_tensor(x_np)).numpy()[0, 0, 0]
    assert np.isnan(y[0::2]).all() and np.array_equal(y[1::2], np.full(5, 5.0, "float32"))


def test_disabled_falls_back_to_paddle() -> None:
    ops.configure(enabled=False)
    conv = nn.Conv2D(1, 6, 5, padding=2)
    x = paddle.randn([2, 1, 28, 28])
    np.testing.assert_allclose(ops.conv2d(x, conv.weight, conv.bias, 1, 2).numpy(), conv(x).numpy(), rtol=1e-6, atol=1e-6)


def _pool_run(layer: nn.Layer, x_np: np.ndarray, g_np: np.ndarray) -> list[np.ndarray]:
    """Output, input gradient and parameter gradients of ``layer`` in training mode."""
    for p in layer.parameters():
        p.clear_gradient()
    x = paddle.to_tensor(x_np, stop_gradient=False)
    paddle.seed(5)  # stochastic pooling draws its uniforms from paddle's generator on both paths
    y = layer(x)
    (y * paddle.to_tensor(g_np)).sum().backward()
    return [y.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]


# odd sizes (a dropped last row/column), 3×3 windows, signed inputs with all-negative windows, ties, underflow
@pytest.mark.parametrize("pool,k,shape", [("stochastic", 2, (8, 6, 28, 28)), ("stochastic", 3, (3, 4, 11, 10)),
                                          ("stochastic", 4, (2, 3, 13, 9)),
                                          ("dpp", 2, (8, 6, 28, 28)), ("dpp", 2, (5, 16, 11, 9)),
                                          ("dpp", 3, (2, 3, 9, 10)), ("soft", 2, (8, 6, 28, 28)),
                                          ("soft", 2, (5, 16, 11, 9)), ("lp", 2, (8, 6, 28, 28)),
                                          ("lp", 2, (5, 16, 11, 9)), ("lp", 3, (2, 3, 9, 10))])
def test_pooling_kernels_equal_their_plain_graph(pool: str, k: int, shape: tuple) -> None:
    from paddle_lenet.models.pooling import make_pool

    assert ops.kernels() is not None
    rng = np.random.default_rng(k)
    x_np = rng.standard_normal(shape).astype("float32") * 3
    x_np[0, 0, :4, :4] = -1.0  # windows with nothing positive (stochastic: the first maximum) and equal values
    x_np[0, 1, :4, :4] = 2.0
    x_np[1, 2, 2:4, 2:4] = -100.0  # soft: weights e^(x - max) that underflow; the window's own maximum is used
    x_np[1, 0, :6, :6] = 0.0  # lp: all-zero windows (0, with zero gradients)
    x_np[1, 1, 0, 0] = 0.0  # and a zero inside a window
    paddle.seed(1)
    layer = make_pool(pool, shape[1], kernel_size=k)
    paddle.seed(1)
    fast_layer = accelerate(make_pool(pool, shape[1], kernel_size=k))
    fast_layer.set_state_dict(layer.state_dict())
    layer.train()
    fast_layer.train()
    out_shape = (shape[0], shape[1], shape[2] // k, shape[3] // k)
    g_np = rng.standard_normal(out_shape).astype("float32")
    plain = _pool_run(layer, x_np, g_np)
    fast = _pool_run(fast_layer, x_np, g_np)
    assert fast[0].shape == out_shape and len(fast) == len(plain) == (4 if pool == "dpp" else 2)
    for a, b in zip(fast, plain, strict=True):  # float rounding, relative to each tensor's scale
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max())))
    if pool == "stochastic":  # exactly one input per window receives the gradient, as in the plain graph
        assert np.array_equal(fast[1] != 0, plain[1] != 0)
    ops.configure(threads=1)
    assert all(np.array_equal(a, b) for a, b in zip(_pool_run(fast_layer, x_np, g_np), fast, strict=True))


def _np_soft_window(x: np.ndarray, logit: np.ndarray, g: np.ndarray, k: int, s: int, p: int) -> list[np.ndarray]:
    """Out, dX, dL of Σ softmax(L)·x over each window (padding excluded), window by window in float64."""
    n, c, h, w = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out, dx, dl = np.zeros((n, c, ho, wo)), np.zeros(x.shape), np.zeros(x.shape)
    for i in range(ho):
        for j in range(wo):
            r0, r1 = max(i * s - p, 0), min(i * s - p + k, h)
            c0, c1 = max(j * s - p, 0), min(j * s - p + k, w)
            lw = logit[:, :, r0:r1, c0:c1].astype(np.float64)
            e = np.exp(lw - lw.max(axis=(2, 3), keepdims=True))
            pw = e / e.sum(axis=(2, 3), keepdims=True)
            xw = x[:, :, r0:r1, c0:c1].astype(np.float64)
            y = (pw * xw).sum(axis=(2, 3))
            out[:, :, i, j] = y
            gw = g[:, :, i, j][:, :, None, None] * pw
            dx[:, :, r0:r1, c0:c1] += gw
            dl[:, :, r0:r1, c0:c1] += gw * (xw - y[:, :, None, None])
    return [out, dx, dl]


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 5, 13, 11), (2, 3, 10, 9)])
def test_lip_windows_equal_their_definition(shape: tuple) -> None:
    """LIP's 3×3/stride-2/padding-1 windows in the kernel (separable sums) against the softmax-weighted mean computed
    window by window, odd sizes included, and windows whose weights underflow against the plane's maximum."""
    assert ops.kernels() is not None
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal(shape).astype("float32")
    l_np = rng.uniform(0, 12, shape).astype("float32")
    l_np[0, 0, :5, :5] = -200.0  # e^(L - plane max) is 0 there: those windows use their own maximum
    ho, wo = (shape[2] - 1) // 2 + 1, (shape[3] - 1) // 2 + 1
    g_np = rng.standard_normal((shape[0], shape[1], ho, wo)).astype("float32")
    want = _np_soft_window(x_np, l_np, g_np, 3, 2, 1)

    def run() -> list[np.ndarray]:
        x = paddle.to_tensor(x_np, stop_gradient=False)
        logit = paddle.to_tensor(l_np, stop_gradient=False)
        y = ops.soft_window(x, logit, 3, 2, 1)
        return [t.numpy() for t in (y, *paddle.grad([y], [x, logit], [paddle.to_tensor(g_np)]))]

    got = run()
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max())))
    ops.configure(threads=1)
    try:
        assert all(np.array_equal(a, b) for a, b in zip(run(), got, strict=True))
    finally:
        ops.configure(threads=0)


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 5, 7, 9)])
def test_lip_logit_equals_the_plain_branch(shape: tuple) -> None:
    """LIP's logit after its conv (instance norm, sigmoid, ×12) in one kernel against Paddle's three ops: output and
    the gradients of the input, the norm's scale and bias — with logits saturating both ways and a constant plane
    (zero variance) — and bit-identical for 1 or 2 threads."""
    assert ops.kernels() is not None
    rng = np.random.default_rng(7)
    y_np = rng.standard_normal(shape).astype("float32")
    y_np[0, 0] = 0.25  # constant: the norm divides by sqrt(eps)
    g_np = rng.standard_normal(shape).astype("float32")
    scale_np = rng.uniform(-30, 30, shape[1]).astype("float32")  # z up to ~±100: the sigmoid saturates
    bias_np = rng.uniform(-2, 2, shape[1]).astype("float32")
    norm = nn.InstanceNorm2D(shape[1])

    def run(kernel: bool) -> list[np.ndarray]:
        y = paddle.to_tensor(y_np, stop_gradient=False)
        scale = paddle.to_tensor(scale_np, stop_gradient=False)
        bias = paddle.to_tensor(bias_np, stop_gradient=False)
        if kernel:
            out = ops.lip_logit(y, scale, bias, norm._epsilon)
        else:
            out = 12.0 * F.sigmoid(F.instance_norm(y, weight=scale, bias=bias, eps=norm._epsilon))
        return [t.numpy() for t in (out, *paddle.grad([out], [y, scale, bias], [paddle.to_tensor(g_np)]))]

    got, want = run(True), run(False)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * max(1.0, float(np.abs(b).max())))
    ops.configure(threads=1)
    try:
        assert all(np.array_equal(a, b) for a, b in zip(run(True), got, strict=True))
    finally:
        ops.configure(threads=0)


def _mkl_probe(env_value: str | None) -> tuple[str, str, str]:
    """(asked, MKL_DEBUG_CPU_TYPE after the request, BLAS digest) of a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    if env_value is not None:
        env["MKL_DEBUG_CPU_TYPE"] = env_value
    code = ("import os; from paddle_lenet import ops; a = ops.use_mkl_avx2(); "
            "print(a, repr(os.environ.get('MKL_DEBUG_CPU_TYPE')), ops.blas())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    asked, value, digest = out.stdout.split()[-3:]
    return asked, value, digest


def test_mkl_avx2_is_asked_for_only_off_intel_and_never_over_a_users_setting() -> None:
    asked, value, digest = _mkl_probe(None)
    user_asked, user_value, default_digest = _mkl_probe("")  # the user's own (empty) setting: MKL's default path
    assert (user_asked, user_value) == ("False", "''")
    flags = set(ops._cpu_fingerprint().split())
    if ops._cpu_vendor() in ("GenuineIntel", "") or not {"avx2", "fma"} <= flags:
        assert (asked, value, digest) == ("False", "None", default_digest)
    else:  # AMD and others: MKL's AVX2 path, which rounds differently, so the recorded digest tells the two apart
        assert (asked, value) == ("True", "'5'") and digest != default_digest


def test_avx512_is_narrowed_to_avx2_only_on_half_width_units() -> None:
    avx512 = {"avx2", "fma", "avx512f", "avx512bw"}
    assert ops.avx512_half_width("AuthenticAMD", "25", avx512)  # Zen 4: 512-bit ops on 256-bit units
    assert not ops.avx512_half_width("AuthenticAMD", "25", {"avx2", "fma"})  # Zen 3: nothing to narrow
    assert not ops.avx512_half_width("AuthenticAMD", "26", avx512)  # Zen 5: 512-bit units, the faster build
    assert not ops.avx512_half_width("GenuineIntel", "6", avx512)
    # this machine's build follows the rule, and the ISA it records says what was built
    narrowed = ops.avx512_half_width(ops._cpu_vendor(), ops._cpuinfo_field("cpu family"),
                                     set(ops._cpu_fingerprint().split()))
    assert ("-mno-avx512f" in ops.CFLAGS) == narrowed
    if "avx512f" in ops._cpu_fingerprint().split():
        assert ops.isa() == ("avx2" if narrowed else "avx512f")


@pytest.mark.parametrize("shape", [(64, 120, 5, 5), (37, 120, 3, 3), (3, 2, 13, 11), (2, 5, 1, 1), (1, 9, 1, 7)])
def test_global_avg_pool_is_paddles_bit_for_bit(shape: tuple) -> None:
    """Revision LEGACY too: LeNet_BN and GAP-head runs from before the kernel must keep their bits (their records).
    NaNs compare as NaNs: which of two NaNs an addition returns (its sign bit) is the compiler's operand order."""
    rng = np.random.RandomState(8)
    a = rng.standard_normal(shape).astype("float32")
    a.flat[::7], a.flat[1::11], a.flat[5::17] = 0.0, -0.0, 3e38
    a.flat[3::13] *= 1e-39
    a.flat[::29], a.flat[2::31], a.flat[4::37] = np.inf, np.nan, -np.inf
    g = rng.standard_normal([shape[0], shape[1], 1, 1]).astype("float32")
    g.flat[::5], g.flat[1::9], g.flat[2::23] = -0.0, 0.0, 1e-39
    out = []
    for f in (lambda t: F.adaptive_avg_pool2d(t, 1), ops.global_avg_pool):
        x = paddle.to_tensor(a, stop_gradient=False)
        y = f(x)
        (dx,) = paddle.grad([y], [x], [paddle.to_tensor(g)])
        y, dx = y.numpy(), dx.numpy()
        assert np.isnan(y).any() and not np.isnan(dx).any()  # the hostile values reached the sums, not the gradient
        out.append((np.where(np.isnan(y), np.float32(np.nan), y).tobytes(), dx.tobytes()))
    assert out[0] == out[1]


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 2, 13, 11), (1, 1, 3, 5)])
def test_avg_pool_is_paddles_bit_for_bit(shape: tuple) -> None:
    """Its revision is LEGACY: runs that pooled with Paddle's op before the kernel existed must have the same bits."""
    rng = np.random.RandomState(7)
    a = rng.standard_normal(shape).astype("float32")
    a.flat[::7], a.flat[1::11], a.flat[5::17] = 0.0, -0.0, 3e38  # zeros of both signs; sums that overflow
    a.flat[3::13] *= 1e-39  # subnormals
    a.flat[::29], a.flat[2::31], a.flat[4::37] = np.inf, np.nan, -np.inf
    g = rng.standard_normal([shape[0], shape[1], shape[2] // 2, shape[3] // 2]).astype("float32")
    g.flat[::5], g.flat[1::9] = -0.0, 0.0
    out = []
    for f in (lambda t: F.avg_pool2d(t, 2, 2), ops.avg_pool2x2):
        x = paddle.to_tensor(a, stop_gradient=False)
        y = f(x)
        (dx,) = paddle.grad([y], [x], [paddle.to_tensor(g)])
        out.append((y.numpy().tobytes(), dx.numpy().tobytes()))
    assert out[0] == out[1]



def _draws_after(draw, seed: int) -> tuple[bytes, bytes]:
    """What ``draw`` returns after ``paddle.seed(seed)``, and the generator's next draws after it (where it left the
    generator)."""
    paddle.seed(seed)
    out = draw()
    return np.ascontiguousarray(out.numpy()).tobytes(), paddle.rand([700]).numpy().tobytes()


# seed 9's draw 67547 rounds to 2^64: the distribution clamps it to the float below 1 (Paddle's libstdc++), so the
# draw kernel must too; the sizes straddle the engine's 312-draw twist and the kernel's 1024-draw blocks
@pytest.mark.parametrize("seed,shape", [(9, [67550]), (9, [3, 1, 22517]), (1, [1]), (2, [311]), (3, [312]),
                                        (4, [64, 16, 5, 5]), (5, [1025]), (6, [0, 4])])
def test_rand_is_paddles_bit_for_bit(seed: int, shape: list) -> None:
    """Revision LEGACY: mixed and stochastic pooling draw through it, and their records were made with paddle.rand."""
    like = paddle.zeros([1])
    ours, theirs = _draws_after(lambda: ops.rand(shape, like), seed), _draws_after(lambda: paddle.rand(shape), seed)
    assert ours == theirs
    if seed == 9 and shape == [67550]:
        assert np.frombuffer(ours[0], np.float32)[67547] == np.nextafter(np.float32(1), np.float32(0))


@pytest.mark.parametrize("p", [0.4, 0.5, 0.05, 0.999])
def test_dropout_is_paddles_bit_for_bit(p: float) -> None:
    """The mask from the same draws, the same output and gradient (zeros of both signs, subnormals, infinities), and
    the generator left where Paddle's dropout leaves it."""
    rng = np.random.RandomState(11)
    a = rng.standard_normal([64, 6, 14, 14]).astype("float32")
    a.flat[::7], a.flat[1::11], a.flat[5::17] = 0.0, -0.0, 3e38
    a.flat[3::13] *= 1e-39
    a.flat[::29], a.flat[4::37] = np.inf, -np.inf
    g = rng.standard_normal(a.shape).astype("float32")
    g.flat[::5], g.flat[1::9], g.flat[2::23] = -0.0, 0.0, 1e-39
    out = []
    for f in (lambda t: F.dropout(t, p, training=True), lambda t: ops.dropout(t, p)):
        x = paddle.to_tensor(a, stop_gradient=False)
        paddle.seed(9)
        y = f(x)
        after = paddle.rand([700]).numpy().tobytes()
        (dx,) = paddle.grad([y], [x], [paddle.to_tensor(g)])
        out.append((y.numpy().tobytes(), dx.numpy().tobytes(), after))
    assert out[0] == out[1]
    kept = (np.frombuffer(out[0][0], np.float32) != 0)[a.ravel() != 0]
    assert abs(kept.mean() - (1 - p)) < 0.01  # the test drew real masks


def test_the_dropout_layer_is_accelerated_only_where_paddles_op_is_what_it_computes() -> None:
    """Training, upscale_in_train and no axis take the kernel; inference, an axis, the other mode and p = 0 or 1 stay
    Paddle's (the accelerated layer's result equals the plain one's in each case)."""
    x = paddle.to_tensor(np.random.RandomState(3).standard_normal([8, 3, 6, 6]).astype("float32"))
    for kwargs, fast in [({"p": 0.4}, True), ({"p": 0.4, "axis": 1}, False), ({"p": 0.4, "mode": "downscale_in_infer"},
                         False), ({"p": 0.0}, True), ({"p": 1.0}, True)]:
        plain, accel = nn.Dropout(**kwargs), accelerate(nn.Dropout(**kwargs))
        assert (type(accel).__name__ == "FastDropout") == fast, kwargs
        for training in (True, False):
            plain.train() if training else plain.eval()
            accel.train() if training else accel.eval()
            paddle.seed(5)
            want = plain(x).numpy().tobytes()
            paddle.seed(5)
            assert accel(x).numpy().tobytes() == want, (kwargs, training)
