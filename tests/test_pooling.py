"""Seed 003's pooling operators: each checked on a hand-computed 2×2 window, then trained for real."""

from __future__ import annotations

import os

import numpy as np
import paddle
import pytest

from paddle_lenet import ops
from paddle_lenet.accelerate import accelerate, kernels_used
from paddle_lenet.config import load_config
from paddle_lenet.models.pooling import DPPPool, LIPPool, LpPool, MixedPool, SoftPool, StochasticPool, make_pool

from .conftest import MNIST5K, ROOT

WINDOW = [[1.0, 2.0], [3.0, 4.0]]  # one window: max 4, mean 2.5, sum of squares 30


def one(layer: paddle.nn.Layer, window=WINDOW, training: bool = False) -> float:
    layer.train() if training else layer.eval()
    return float(layer(paddle.to_tensor([[window]], dtype="float32")).reshape([-1])[0])


def test_deterministic_operators() -> None:
    assert one(make_pool("max", 1)) == 4.0
    assert one(make_pool("avg", 1)) == 2.5
    assert one(LpPool(p=2)) == pytest.approx(30**0.5, rel=1e-6)  # (1+4+9+16)^(1/2)
    assert one(LpPool(p=1)) == pytest.approx(10.0)  # p = 1: sum pooling
    assert one(LpPool(p=3), [[-1.0, 2.0], [3.0, -4.0]]) == pytest.approx(100 ** (1 / 3), rel=1e-6)  # |x|
    assert one(SoftPool()) == pytest.approx(3.49265273458577, rel=1e-6)  # Σ e^a·a / Σ e^a


def test_lp_gradient_is_finite_on_zero_windows() -> None:
    x = paddle.zeros([1, 1, 2, 2])
    x.stop_gradient = False
    LpPool(p=3)(x).sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


@pytest.mark.parametrize("k", [2, 3])
def test_lp_and_dpp_keep_their_forward_only_for_a_gradient(k: int) -> None:
    """Lp and DPP hand their forward's exp/log results to their backward: an inference call keeps nothing and gives the
    same bits, and a training call's gradient still matches the plain graph."""
    rng = np.random.default_rng(k)
    x = paddle.to_tensor(rng.standard_normal((3, 4, 6 * k, 3 * k)).astype("float32"), stop_gradient=False)
    lam, alpha = (paddle.to_tensor(rng.standard_normal(4).astype("float32"), stop_gradient=False) for _ in range(2))
    kern = ops.kernels()
    for run in (lambda keep: kern.lenet_lp_pool(x, 3.0, k, keep, 1), lambda keep: kern.lenet_dpp(x, lam, alpha, k, keep, 1)):
        kept, bare = run(True), run(False)
        assert kept[0].numpy().tobytes() == bare[0].numpy().tobytes()
        assert all(t.size == 1 for t in bare[1:]) and (k != 2 or kept[1].size == x.size)  # r^p or r^gamma per pixel
    dpp = DPPPool(4, k)
    dpp.lam.set_value(lam.reshape([1, 4, 1, 1, 1])), dpp.alpha.set_value(alpha.reshape([1, 4, 1, 1, 1]))
    for plain, fast in ((LpPool(3.0, k), lambda v: ops.lp_pool(v, 3.0, k)),
                        (dpp, lambda v: ops.dpp_pool(v, dpp.lam, dpp.alpha, k))):
        g = paddle.to_tensor(rng.standard_normal(fast(x).shape).astype("float32"))
        want, got = paddle.grad([plain(x)], [x], [g])[0].numpy(), paddle.grad([fast(x)], [x], [g])[0].numpy()
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_mixed_pooling_train_and_eval() -> None:
    pool = MixedPool()
    assert one(pool) == 3.25  # inference: 0.5·max + 0.5·avg
    paddle.seed(0)
    pool.train()
    out = pool(paddle.to_tensor(np.tile(np.array(WINDOW, "float32"), (1, 1, 50, 50)))).numpy().ravel()
    assert set(np.unique(out)) == {2.5, 4.0} and 0.45 < (out == 4.0).mean() < 0.55


@pytest.mark.parametrize("layer,training", [(MixedPool, True), (MixedPool, False), (StochasticPool, False)])
def test_window_averages_run_on_the_kernel_with_paddles_bits(layer: type, training: bool) -> None:
    """Mixed pooling (training and inference) and stochastic pooling's inference average through the 2×2 average
    kernel, which computes Paddle's ``avg_pool2d`` bit for bit (ties, zeros of both signs, infinities): with the same
    draws they give what they gave when only their max pooling was on a kernel — the same outputs and gradients, so
    earlier runs keep matching (the kernel's revision is LEGACY)."""
    fast, before = accelerate(layer()), layer()
    accelerate(before.max_pool)  # the fast path before: the max kernel, Paddle's average
    assert ops.kernels() is not None and "avg_pool2x2" in kernels_used(fast)
    assert "avg_pool2x2" not in kernels_used(before)
    rng = np.random.RandomState(5)
    a = rng.standard_normal((4, 6, 28, 28)).astype("float32")
    a.flat[::7], a.flat[1::11], a.flat[3::13] = 0.0, -0.0, 1.0  # ties inside windows, signed zeros
    a.flat[::41], a.flat[2::43] = np.inf, -np.inf
    g = paddle.to_tensor(rng.standard_normal((4, 6, 14, 14)).astype("float32"))
    out = []
    for net in (before, fast):
        net.train() if training else net.eval()
        paddle.seed(9)
        x = paddle.to_tensor(a, stop_gradient=False)
        y = net(x)
        (dx,) = paddle.grad([y], [x], [g])
        out.append((y.numpy().tobytes(), dx.numpy().tobytes()))
    assert out[0] == out[1]


def test_stochastic_pooling_train_and_eval() -> None:
    pool = StochasticPool()
    assert one(pool) == pytest.approx(3.0)  # Σ p·a with p = a/10: (1+4+9+16)/10
    paddle.seed(0)
    pool.train()
    out = pool(paddle.to_tensor(np.tile(np.array(WINDOW, "float32"), (1, 1, 60, 60)))).numpy().ravel()
    freq = {v: (out == v).mean() for v in (1.0, 2.0, 3.0, 4.0)}
    for v, f in freq.items():
        assert abs(f - v / 10) < 0.03, freq  # sampled with probability a_i / Σ a
    assert one(StochasticPool(), [[0.0, 0.0], [0.0, 0.0]]) == 0.0


def _np_lip(x: np.ndarray, weight: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """LIP by the authors' definition, in numpy loops: bias-free 3×3 conv → affine instance norm →
    12·sigmoid → e^logit, then weighted means over 3×3 windows, stride 2, padding 1 (valid pixels only)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros_like(x, dtype="float64")
    for i in range(h):
        for j in range(w):
            conv[:, :, i, j] = np.einsum("nkab,okab->no", xp[:, :, i:i + 3, j:j + 3], weight)
    mu = conv.mean(axis=(2, 3), keepdims=True)
    var = conv.var(axis=(2, 3), keepdims=True)
    norm = (conv - mu) / np.sqrt(var + 1e-5) * gamma[None, :, None, None] + beta[None, :, None, None]
    e = np.exp(12.0 / (1.0 + np.exp(-norm)))
    ho, wo = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            r = slice(max(2 * i - 1, 0), min(2 * i + 2, h))
            q = slice(max(2 * j - 1, 0), min(2 * j + 2, w))
            out[:, :, i, j] = (x[:, :, r, q] * e[:, :, r, q]).sum((2, 3)) / e[:, :, r, q].sum((2, 3))
    return out


def test_lip_is_the_authors_simplified_lip() -> None:
    rng = np.random.default_rng(0)
    pool = LIPPool(channels=3)
    assert [list(p.shape) for p in pool.parameters()] == [[3, 3, 3, 3], [3], [3]]  # conv (no bias), norm scale/shift
    assert not pool.conv.weight.numpy().any()  # the authors' init: LIP starts as 3×3 averaging
    x = rng.normal(size=(2, 3, 10, 10)).astype("float32")
    start = pool(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(start, _np_lip(x, np.zeros((3, 3, 3, 3)), np.ones(3), np.zeros(3)), atol=1e-5)
    weight = rng.normal(scale=0.3, size=(3, 3, 3, 3)).astype("float32")
    gamma, beta = rng.uniform(0.5, 1.5, 3).astype("float32"), rng.normal(size=3).astype("float32")
    pool.conv.weight.set_value(weight)
    pool.norm.scale.set_value(gamma)
    pool.norm.bias.set_value(beta)
    got = pool(paddle.to_tensor(x)).numpy()
    assert got.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(got, _np_lip(x, weight, gamma, beta), atol=2e-5)


def _np_dpp(x: np.ndarray, lam: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """DPP symmetric lite (Saeedan et al. 2018, the authors' Torch modules), one 2×2 window at a time."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h // 2, w // 2))
    for b in range(n):
        for k in range(c):
            for i in range(h // 2):
                for j in range(w // 2):
                    win = x[b, k, 2 * i:2 * i + 2, 2 * j:2 * j + 2].astype("float64").ravel()
                    d = (win - win.mean()) ** 2 + 1e-3
                    wt = (d / d.mean()) ** (np.exp(lam[k]) / 2) + np.exp(min(alpha[k], 10.0))
                    out[b, k, i, j] = (wt * win).sum() / wt.sum()
    return out


def test_dpp_is_the_authors_symmetric_lite() -> None:
    rng = np.random.default_rng(1)
    pool = DPPPool(channels=4)
    bound = 1 / np.sqrt(4)
    assert all(np.abs(p.numpy()).max() <= bound for p in pool.parameters())  # U(±1/√C) as the authors' reset()
    x = rng.normal(size=(2, 4, 6, 6)).astype("float32")
    lam, alpha = rng.normal(size=4).astype("float32"), np.array([-1.0, 0.0, 2.0, 12.0], "float32")  # 12: capped at 10
    pool.lam.set_value(lam.reshape(1, 4, 1, 1, 1))
    pool.alpha.set_value(alpha.reshape(1, 4, 1, 1, 1))
    np.testing.assert_allclose(pool(paddle.to_tensor(x)).numpy(), _np_dpp(x, lam, alpha), rtol=1e-5, atol=1e-6)
    assert one(DPPPool(channels=1), [[5.0, 5.0], [5.0, 5.0]]) == pytest.approx(5.0)  # a flat window: its value


def test_stochastic_pooling_on_signed_windows() -> None:
    pool = StochasticPool()
    assert one(pool, [[-3.0, -1.0], [-2.0, -5.0]]) == -1.0  # nothing positive: the window's maximum
    assert one(pool, [[-3.0, 1.0], [3.0, -5.0]]) == pytest.approx(2.5)  # positive parts: (1·1 + 3·3) / 4
    paddle.seed(0)
    pool.train()
    neg = pool(paddle.to_tensor(np.tile(np.array([[-3.0, -1.0], [-2.0, -5.0]], "float32"), (1, 1, 20, 20))))
    assert set(np.unique(neg.numpy())) == {-1.0}  # sampling too: all mass on the maximum
    mixed = pool(paddle.to_tensor(np.tile(np.array([[-3.0, 1.0], [3.0, -5.0]], "float32"), (1, 1, 60, 60)))).numpy()
    assert set(np.unique(mixed)) == {1.0, 3.0} and abs((mixed == 3.0).mean() - 0.75) < 0.03


def test_lenet5_classic_biases_start_as_in_seed_001() -> None:
    from paddle_lenet.models import create_model

    paddle.seed(0)
    net = create_model("LeNet5_classic")
    for layer, fan_in in ((net.conv1, 25), (net.conv2, 150), (net.linear1, 400), (net.linear2, 120), (net.linear3, 84)):
        b = layer.bias.numpy()
        assert np.abs(b).max() <= 1 / np.sqrt(fan_in) + 1e-7 and np.abs(b).max() > 0.3 / np.sqrt(fan_in)


@pytest.mark.parametrize("option", ["avg", "lp", "mixed", "stochastic", "soft", "lip", "dpp", "gap"])
def test_every_option_trains(tmp_path, option: str) -> None:
    from paddle_lenet.engine import train

    # a GAP head discards feature positions and needs more steps than one epoch of 4,000 images
    arch, epochs = ("Arch.head=gap", 3) if option == "gap" else (f"Arch.pool={option}", 1)
    cfg = load_config(f"{ROOT}/configs/lenet.yml", [arch, f"Data.root={MNIST5K}", f"Global.epochs={epochs}", "Global.vdl=false",
                                                   f"Global.output_dir={tmp_path}", "Global.print_every=0"])
    m = train(cfg, quiet=True)
    assert m["acc_top1"] >= 0.7, (option, m["acc_top1"])


def test_mixed_pooling_test_rules() -> None:
    """Arch.mixed_test: the package's expectation rule, or the public implementations' pure max / pure average."""
    import paddle.nn.functional as F

    from paddle_lenet.errors import ConfigError
    from paddle_lenet.runfolder import WEIGHT_KEYS

    x = paddle.randn([2, 3, 8, 8])
    rules = {r: MixedPool(test=r) for r in ("expectation", "max", "avg")}
    for layer in rules.values():
        layer.eval()
    mx, avg = F.max_pool2d(x, 2, 2), F.avg_pool2d(x, 2, 2)
    np.testing.assert_allclose(rules["max"](x).numpy(), mx.numpy())
    np.testing.assert_allclose(rules["avg"](x).numpy(), avg.numpy(), rtol=1e-6)
    np.testing.assert_allclose(rules["expectation"](x).numpy(), (0.5 * mx + 0.5 * avg).numpy(), rtol=1e-6)
    lenet = os.path.join(ROOT, "configs", "lenet.yml")
    assert load_config(lenet, ["Arch.pool=mixed", "Arch.mixed_test=max"])["Arch"]["mixed_test"] == "max"
    with pytest.raises(ConfigError, match="Arch.mixed_test is mixed pooling's inference rule"):
        load_config(lenet, ["Arch.mixed_test=max"])
    assert ("Arch", "mixed_test") not in WEIGHT_KEYS  # the same weights may be scored under another rule
