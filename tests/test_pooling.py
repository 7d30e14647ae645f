"""Seed 003's pooling operators: each checked on a hand-computed 2×2 window, then trained for real."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddle_lenet.config import load_config
from paddle_lenet.models.pooling import (DPPPool, LIPPool, LpPool, MixedPool, SoftPool, StochasticPool, make_pool,
                                         windows)

from .conftest import MNIST5K, ROOT

WINDOW = [[1.0, 2.0], [3.0, 4.0]]  # one window: max 4, mean 2.5, sum of squares 30


def one(layer: paddle.nn.Layer, window=WINDOW, training: bool = False) -> float:
    layer.train() if training else layer.eval()
    return float(layer(paddle.to_tensor([[window]], dtype="float32")).reshape([-1])[0])


def test_windows_layout() -> None:
    x = paddle.arange(16, dtype="float32").reshape([1, 1, 4, 4])
    w = windows(x).numpy()
    assert w.shape == (1, 1, 2, 2, 4)
    assert w[0, 0, 0, 1].tolist() == [2, 3, 6, 7]  # top-right window, row-major


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


def test_mixed_pooling_train_and_eval() -> None:
    pool = MixedPool()
    assert one(pool) == 3.25  # inference: 0.5·max + 0.5·avg
    paddle.seed(0)
    pool.train()
    out = pool(paddle.to_tensor(np.tile(np.array(WINDOW, "float32"), (1, 1, 50, 50)))).numpy().ravel()
    assert set(np.unique(out)) == {2.5, 4.0} and 0.45 < (out == 4.0).mean() < 0.55


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


def test_lip_weights() -> None:
    pool = LIPPool(channels=1)
    w = np.zeros([1, 1, 3, 3], "float32")
    w[0, 0, 1, 1] = 1.0  # logit = 12·sigmoid(x): weight exp(12σ(x_i))
    pool.logit.weight.set_value(w)
    pool.logit.bias.set_value(np.zeros([1], "float32"))
    assert one(pool) == pytest.approx(3.2952171683945277, rel=1e-5)
    pool.logit.weight.set_value(np.zeros_like(w))  # constant logits: plain average
    assert one(pool) == pytest.approx(2.5, rel=1e-6)


def test_dpp_weights() -> None:
    # α = λ = softplus(0) = ln 2, x̃ = window mean 2.5: w = ln2 + ((x − 2.5)² + ε²)^(ln2/2)
    assert one(DPPPool(channels=1), [[0.0, 1.0], [2.0, 7.0]]) == pytest.approx(3.1091318453096397, rel=1e-5)
    assert one(DPPPool(channels=1), [[5.0, 5.0], [5.0, 5.0]]) == pytest.approx(5.0)


@pytest.mark.parametrize("option", ["avg", "lp", "mixed", "stochastic", "soft", "lip", "dpp", "gap"])
def test_every_option_trains(tmp_path, option: str) -> None:
    from paddle_lenet.engine import train

    # a GAP head discards feature positions and needs more steps than one epoch of 4,000 images
    arch, epochs = ("Arch.head=gap", 3) if option == "gap" else (f"Arch.pool={option}", 1)
    cfg = load_config(f"{ROOT}/configs/lenet.yml", [arch, f"Data.root={MNIST5K}", f"Global.epochs={epochs}", "Global.vdl=false",
                                                   f"Global.output_dir={tmp_path}", "Global.print_every=0"])
    m = train(cfg, quiet=True)
    assert m["acc_top1"] >= 0.7, (option, m["acc_top1"])
