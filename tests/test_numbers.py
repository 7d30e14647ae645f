"""Numbers that must be right: FLOPs against an independent analytic count on every model and every path,
lp pooling at every p, the training metrics against hapi's, permutation tests of any size, MDE and TOST against
statsmodels."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_lenet.config import POOLS, load_config
from paddle_lenet.engine import Accuracy, CrossEntropyLoss, Experiment, MeanLoss, topk_correct
from paddle_lenet.models import get_entry, list_models
from paddle_lenet.models.pooling import LpPool
from paddle_lenet.stats import mde, permutation, tost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- FLOPs, counted by hand
# The rule (paddle_lenet/flops.py): 2·out_elements·in_channels·kh·kw per convolution (LIP's logit convs and the
# GAP head's conv included), 2·out·in per linear layer; pooling, activations, norms and bias adds not counted.
def conv(out_c: int, out_hw: int, in_c: int, k: int) -> int:
    return 2 * out_c * out_hw * out_hw * in_c * k * k


FC = 2 * (400 * 120 + 120 * 84 + 84 * 10)  # 400 → 120 → 84 → 10
GAP = conv(120, 5, 16, 3) + 2 * 120 * 10  # 3×3 conv to 120 maps on 5×5, then 120 → 10


def lenet_flops(pool: str, head: str) -> int:
    lip = conv(6, 28, 6, 3) + conv(16, 10, 16, 3) if pool == "lip" else 0  # logit convs at each pool's input
    return conv(6, 28, 1, 5) + conv(16, 10, 6, 5) + lip + (GAP if head == "gap" else FC)


def nopool_flops(head: str) -> int:  # 28 → (28−5)/2+1 = 12 → 12 → (12−3)/2+1 = 5
    return conv(6, 28, 1, 5) + conv(16, 12, 6, 5) + conv(16, 12, 16, 3) + conv(16, 5, 16, 3) + (GAP if head == "gap" else FC)


def lenet_bn_flops(pool: str, strided: bool) -> int:
    if strided:  # 28 → 14 → 7 → 3
        return conv(6, 14, 1, 5) + conv(16, 7, 6, 5) + conv(120, 3, 16, 5) + 2 * 120 * 10
    lip = conv(6, 28, 6, 3) + conv(16, 14, 16, 3) if pool == "lip" else 0
    return conv(6, 28, 1, 5) + conv(16, 14, 6, 5) + conv(120, 3, 16, 5) + 2 * 120 * 10 + lip


def allcnn_flops(model: str, variant: str) -> int:
    """Springenberg et al.'s Tables 1–2 on 3×32×32, re-derived: same-padded convs, 3×3/2 pools (pad 1)."""
    stages = {"A": [[(5, 96)], [(5, 192)]], "B": [[(5, 96), (1, 96)], [(5, 192), (1, 192)]],
              "C": [[(3, 96), (3, 96)], [(3, 192), (3, 192)]]}[model]
    h, cin, total = 32, 3, 0
    for stage in stages:
        for i, (k, cout) in enumerate(stage):
            stride = 2 if variant == "strided" and i == len(stage) - 1 else 1
            h = (h + 2 * (k // 2) - k) // stride + 1
            total += conv(cout, h, cin, k)
            cin = cout
        if variant == "convpool":
            total += conv(cin, h, cin, 3)
        h = (h + 2 - 3) // 2 + 1 if variant != "strided" else h
        if variant == "allcnn":
            total += conv(cin, h, cin, 3)
    h -= 2  # the unpadded 3×3 conv
    return total + conv(192, h, cin, 3) + conv(192, h, 192, 1) + conv(10, h, 192, 1)


def expected_flops(name: str, arch: dict) -> int:
    pool, head = arch.get("pool") or None, arch.get("head") or "fc"
    if name == "LeNet":
        return lenet_flops(pool or "max", head)
    if name == "LeNet_nopool":
        return nopool_flops(head)
    if name == "LeNet5_classic":
        return lenet_flops(pool or "avg", "fc")
    if name in ("LeNet_BN", "LeNet_BN_strided"):
        return lenet_bn_flops(pool or "max", name.endswith("strided"))
    for prefix, variant in (("Model", "base"), ("Strided_CNN_", "strided"), ("ConvPool_CNN_", "convpool"),
                            ("All_CNN_", "allcnn")):
        if name.startswith(prefix):
            return allcnn_flops(name[len(prefix):], variant)
    raise AssertionError(name)


CONFIGS = ([("LeNet", {"pool": p, "head": h}) for p in POOLS for h in ("fc", "gap")]
           + [("LeNet_nopool", {"head": h}) for h in ("fc", "gap")]
           + [("LeNet5_classic", {"pool": p}) for p in POOLS] + [("LeNet_BN", {"pool": p}) for p in POOLS]
           + [(n, {}) for n in list_models() if not n.startswith("LeNet")] + [("LeNet_BN_strided", {})])


def test_lip_numbers_from_the_issue() -> None:
    assert lenet_flops("lip", "fc") - lenet_flops("max", "fc") == 968_832
    assert lenet_flops("max", "fc") == 833_040 and nopool_flops("fc") == 1_822_992


@pytest.mark.parametrize("fast", [True, False], ids=["accelerated", "plain"])
def test_flops_of_every_model_equal_the_analytic_count(fast: bool) -> None:
    """What a run's metrics.json records (Experiment.flops, on the model the run trains) for every model and
    every Arch.pool × Arch.head of the LeNet family, with the fast path on and off."""
    for name, arch in CONFIGS:
        data = "MNIST5k" if get_entry(name).input_shape == (1, 28, 28) else "Cifar10"
        overrides = [f"Arch.name={name}", f"Data.name={data}", f"Global.fast={str(fast).lower()}"]
        overrides += [f"Arch.{k}={v}" for k, v in arch.items()]
        exp = Experiment(load_config(os.path.join(ROOT, "configs", "lenet.yml"), overrides), load_train=False,
                         load_test=False)
        assert exp.flops() == expected_flops(name, arch), (name, arch, fast)


def test_count_params_tool_and_a_trained_run_agree(tmp_path) -> None:
    """The tool, a real run's metrics.json and the hand count agree (LIP: the case that was published wrong)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    over = ["-o", "Arch.pool=lip", "-o", "Data.name=MNIST5k", "-o", "Data.train_limit=64", "-o", "Global.epochs=1",
            "-o", f"Global.output_dir={tmp_path}", "-o", "Global.name=lip", "-o", "Global.vdl=false"]
    cfg = os.path.join(ROOT, "configs", "lenet.yml")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", cfg, *over], check=True,
                   capture_output=True, env=env, timeout=600)
    metrics = json.load(open(tmp_path / "lip" / "metrics.json"))
    for target in (cfg, str(tmp_path / "lip")):  # a config and the run folder
        out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "count_params.py"), "-c", target, "--json",
                              *(over if target == cfg else [])], check=True, capture_output=True, text=True, env=env,
                             timeout=300)
        tool = json.loads(out.stdout.strip().splitlines()[-1])["LeNet"]
        assert tool["flops"] == metrics["flops"] == lenet_flops("lip", "fc") == 1_801_872
        assert tool["params"] == metrics["params"]


# --------------------------------------------------------------------------- lp pooling
@pytest.mark.parametrize("p", [1, 2, 3, 8, 32, 64])
def test_lp_equals_paddle_on_nonnegative_inputs(p: int) -> None:
    rng = np.random.default_rng(p)
    x = rng.uniform(0.4, 1.5, (4, 3, 10, 10)).astype("float32")  # where Paddle's own x^p neither under- nor overflows
    ours = LpPool(p)(paddle.to_tensor(x)).numpy()
    ref = F.lp_pool2d(paddle.to_tensor(x), float(p), 2, 2).numpy()
    assert np.max(np.abs(ours - ref) / ref) <= 1e-5
    # and against float64 on small values, where float32 x^p itself underflows: no floor under the result
    small = rng.uniform(0.0, 0.3, (2, 2, 6, 6))
    w = small.reshape(2, 2, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 3, 3, 4)
    m = w.max(-1)
    want = m * ((w / m[..., None]) ** p).sum(-1) ** (1 / p)
    got = LpPool(p)(paddle.to_tensor(small.astype("float32"))).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_lp_no_floor_and_finite_gradients_at_zero_windows() -> None:
    x = np.zeros((1, 1, 4, 4), "float32")
    x[0, 0, :2, :2] = [[0.3, 0.1], [0.05, 0.0]]
    for p in (32.0, 64.0):
        t = paddle.to_tensor(x, stop_gradient=False)
        y = LpPool(p)(t)
        assert float(y[0, 0, 0, 0]) == pytest.approx(0.3, rel=1e-6)  # was 0.42 at p = 32, 0.65 at 64
        assert float(y[0, 0, 1, 1]) == 0.0  # an all-zero window
        y.sum().backward()
        g = t.grad.numpy()
        assert np.isfinite(g).all() and (g[0, 0, 2:, 2:] == 0).all()


# --------------------------------------------------------------------------- training metrics
def _logits(rng: np.random.Generator, kind: str, n: int, c: int) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal((n, c)).astype("float32")
    if kind == "ties":  # few distinct values: the label's logit shared by other classes in most rows
        return rng.integers(-2, 3, (n, c)).astype("float32")
    if kind == "nan":
        x = rng.standard_normal((n, c)).astype("float32")
        x[rng.random((n, c)) < 0.1] = np.nan
        return x
    return rng.choice(np.array([0.0, -0.0, np.inf, -np.inf, 1.0, 3e38], "float32"), (n, c))  # signed zeros, ±inf


@pytest.mark.parametrize("kind", ["normal", "ties", "nan", "special"])
def test_accuracy_equals_hapis_on_any_logits(kind: str) -> None:
    """Our Accuracy ranks in numpy; hapi's sorts with Paddle. Fed the same batches through hapi's protocol (compute,
    then update with numpy arrays), every batch's value and the running mean must be the same numbers."""
    rng = np.random.default_rng(len(kind))
    for topk in [(1,), (1, 2), (3, 1, 5), (12,)]:
        ours, ref = Accuracy(topk=topk), paddle.metric.Accuracy(topk=topk)
        for _ in range(12):
            n, c = int(rng.integers(1, 70)), int(rng.choice([2, 10, 11, 20]))
            pred, label = paddle.to_tensor(_logits(rng, kind, n, c)), paddle.to_tensor(rng.integers(0, c, (n, 1)))
            got = ours.update(*[t.numpy() for t in ours.compute(pred, label)])
            want = ref.update(ref.compute(pred, label).numpy())
            assert got == want and ours.last == (want if isinstance(want, list) else [want])
        assert ours.accumulate() == ref.accumulate() and ours.total == ref.total and ours.count == ref.count


def test_accuracy_ranks_in_numpy_and_defers_ties_to_paddles_sort() -> None:
    rng = np.random.default_rng(1)
    pred, label = rng.standard_normal((64, 10)).astype("float32"), rng.integers(0, 10, (64, 1))
    correct = topk_correct(pred, label, 2)
    order = np.argsort(-pred, axis=1)[:, :2]
    assert correct is not None and (correct == (order == label)).all()  # the numpy path is taken on real logits
    tied = pred.copy()
    tied[0, (label[0, 0] + 1) % 10] = tied[0, label[0, 0]]  # one other class equal to the label's logit
    assert topk_correct(tied, label, 2) is None
    nan = pred.copy()
    nan[5, 3] = np.nan
    assert topk_correct(nan, label, 2) is None
    assert topk_correct(pred, label + 10, 2) is None and topk_correct(pred, label - 10, 1) is None


@pytest.mark.parametrize("n", [1, 64, 37])
def test_training_loss_is_paddles_cross_entropy_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 10)).astype("float32") * 4
    label = rng.integers(0, 10, (n, 1))
    results = []
    for loss_fn in (CrossEntropyLoss(), paddle.nn.CrossEntropyLoss()):
        xt = paddle.to_tensor(x, stop_gradient=False)
        loss = loss_fn(xt, paddle.to_tensor(label))
        loss.backward()
        results.append((loss.shape, loss.numpy().tobytes(), xt.grad.numpy().tobytes()))
    assert results[0] == results[1]
    flat = paddle.to_tensor(label[:, 0])  # 1-D labels: Paddle's own path, the same value
    assert CrossEntropyLoss()(paddle.to_tensor(x), flat).item() == paddle.nn.CrossEntropyLoss()(paddle.to_tensor(x), flat).item()


def test_mean_loss_counts_evaluation_batches_only() -> None:
    net = paddle.nn.Linear(3, 4)
    m = MeanLoss(net)
    rng = np.random.default_rng(2)
    pred, label = rng.standard_normal((8, 4)).astype("float32") * 5, rng.integers(0, 4, (8, 1))
    net.train()
    assert math.isnan(m.update(pred, label)) and m.count == 0  # nothing reads a training pass's value
    net.eval()
    z = pred.astype("float64")
    want = np.log(np.exp(z).sum(1)) - z[np.arange(8), label[:, 0]]
    assert m.update(pred, label) == pytest.approx(want.mean(), rel=1e-12) and m.count == 8
    assert m.accumulate() == pytest.approx(want.mean(), rel=1e-12)
    assert MeanLoss().update(pred, label) == pytest.approx(want.mean(), rel=1e-12)  # no net: every batch counts


# --------------------------------------------------------------------------- statistics
def test_permutation_exact_small_and_fast_large() -> None:
    from scipy.stats import permutation_test

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.90, 0.004, 6), rng.normal(0.902, 0.004, 6)
    ours = permutation(a, b)
    ref = permutation_test((a, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
                           n_resamples=np.inf).pvalue
    assert ours["method"] == "exact" and ours["p"] == pytest.approx(ref, abs=1e-12)
    assert permutation([1, 2], [3, 4])["p"] == pytest.approx(2 / 6)  # ties in the pooled values: exact count
    t0 = time.perf_counter()
    big = permutation(rng.normal(0.90, 0.004, 30), rng.normal(0.90, 0.004, 30))
    assert time.perf_counter() - t0 < 30  # enumerating C(60, 30) would never finish
    assert big["method"].startswith("Monte Carlo") and big["resamples"] == 100_000 and 0 < big["p"] <= 1
    assert permutation(range(30), range(30))["p"] == pytest.approx(1.0)  # identical samples: every relabelling ties


def test_mde_and_tost_equal_statsmodels() -> None:
    statsmodels = pytest.importorskip("statsmodels", reason="pip install statsmodels (in the [test] extra)")
    from statsmodels.stats.power import TTestIndPower
    from statsmodels.stats.weightstats import ttost_ind

    assert statsmodels
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 8)
    a, b = 0.9 + 0.004 * (base - base.mean()) / base.std(ddof=1), 0.899 + 0.004 * (base - base.mean()) / base.std(ddof=1)
    d = TTestIndPower().solve_power(nobs1=8, ratio=1.0, alpha=0.05, power=0.8, alternative="two-sided")
    assert mde(a, b) == pytest.approx(d * 0.004, rel=1e-6)  # equal spreads: Welch's se equals the pooled one
    a, b = rng.normal(0.9, 0.004, 10), rng.normal(0.901, 0.006, 7)
    for margin in (0.002, 0.005, 0.01):
        ref = ttost_ind(a, b, -margin, margin, usevar="unequal")[0]
        assert tost(a, b, margin) == pytest.approx(ref, rel=1e-9)
    assert math.isnan(mde([0.9], [0.8])) and math.isnan(tost([0.9], [0.8], 0.01))
