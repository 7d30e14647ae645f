"""Architectures: shapes, the contract's parameter counts, the notebook's quirks, the exact fast path."""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_lenet.accelerate import accelerate, accelerated_layers
from paddle_lenet.errors import ConfigError
from paddle_lenet.models import count_params, create_model, get_entry, list_models

EXPECTED = {
    "LeNet": 61706, "LeNet_nopool": 66346, "LeNet5_classic": 61706,
    "All_CNN_C": 1369738, "ConvPool_CNN_C": 1369738, "ModelC": 954730, "Strided_CNN_C": 954730,
}


@pytest.mark.parametrize("name", list_models())
def test_forward_shape(name: str) -> None:
    net = create_model(name)
    net.eval()
    x = paddle.rand([3, *get_entry(name).input_shape])
    assert net(x).shape == [3, 10]


@pytest.mark.parametrize("name,count", EXPECTED.items())
def test_param_counts(name: str, count: int) -> None:
    assert count_params(create_model(name)) == count


def test_family_pairs_have_equal_counts() -> None:
    assert count_params(create_model("LeNet_BN")) == count_params(create_model("LeNet_BN_strided"))
    for m in "ABC":
        assert count_params(create_model(f"Model{m}")) == count_params(create_model(f"Strided_CNN_{m}"))
        assert count_params(create_model(f"All_CNN_{m}")) == count_params(create_model(f"ConvPool_CNN_{m}"))
    assert count_params(create_model("All_CNN_C", num_classes=100)) == 1369738 + 90 * (192 + 1)


def test_lenet_is_the_notebook_graph() -> None:
    """The quirks: ReLU twice around pool1, none between conv2 and pool2."""
    paddle.seed(1)
    net = create_model("LeNet")
    x = paddle.randn([4, 1, 28, 28])
    h = F.relu(F.max_pool2d(F.relu(net.conv1(x)), 2, 2))
    h = F.max_pool2d(net.conv2(h), 2, 2).flatten(1)
    ref = net.linear3(F.relu(net.linear2(F.relu(net.linear1(h)))))
    np.testing.assert_allclose(net(x).numpy(), ref.numpy(), rtol=0, atol=0)
    conv2_out = net.conv2(F.relu(F.max_pool2d(F.relu(net.conv1(x)), 2, 2)))
    assert float(conv2_out.min()) < 0  # pool2 sees signed values: there really is no ReLU


def test_lenet_nopool_has_no_relu_after_conv4() -> None:
    paddle.seed(2)
    net = create_model("LeNet_nopool")
    x = paddle.randn([4, 1, 28, 28])
    h = F.relu(net.conv3(F.relu(net.conv2(F.relu(net.conv1(x))))))
    h = net.conv4(h)
    assert h.shape == [4, 16, 5, 5] and float(h.min()) < 0
    ref = net.linear3(F.relu(net.linear2(F.relu(net.linear1(h.flatten(1))))))
    np.testing.assert_allclose(net(x).numpy(), ref.numpy(), rtol=0, atol=0)


FAST_FAMILY = [("LeNet", {}), ("LeNet_nopool", {})] + [("LeNet", {"pool": p}) for p in
               ("avg", "lp", "mixed", "stochastic", "soft", "lip", "dpp")] + [
    ("LeNet", {"head": "gap"}), ("LeNet_nopool", {"head": "gap"}), ("LeNet5_classic", {}), ("LeNet_BN", {}),
    ("LeNet_BN_strided", {})]


@pytest.mark.parametrize("name,kw", FAST_FAMILY, ids=[f"{n}-{'-'.join(map(str, k.values())) or 'default'}"
                                                      for n, k in FAST_FAMILY])
def test_fast_path_is_exact(name: str, kw: dict) -> None:
    """Outputs and every gradient of the fast model match the plain graph; parameters are shared.

    Every LeNet-family configuration runs its convolutions through the package's kernels after ``accelerate``;
    random layers (dropout, mixed/stochastic pooling) draw the same numbers in both, since the kernels draw none.
    """
    paddle.seed(3)
    plain = create_model(name, **kw)
    fast = accelerate(create_model(name, **kw))
    assert accelerated_layers(fast) and not accelerated_layers(plain)
    assert all("conv" not in n or n in accelerated_layers(fast) for n, layer in fast.named_sublayers()
               if isinstance(layer, paddle.nn.Conv2D))  # every convolution on the kernels
    fast.set_state_dict(plain.state_dict())
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = paddle.randn([16, 1, 28, 28])
    y = paddle.randint(0, 10, [16, 1])
    outs, grads = [], []
    for net in (plain, fast):
        paddle.seed(11)
        out = net(x)
        F.cross_entropy(out, y).backward()
        outs.append(out.numpy())
        grads.append({n: p.grad.numpy() for n, p in net.named_parameters() if p.grad is not None})
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    assert set(grads[1]) == set(grads[0]) and grads[0]
    for n in grads[0]:  # float rounding, relative to the gradient's scale (LIP's zero-started conv sees large ones)
        scale = max(1.0, float(np.abs(grads[0][n]).max()))
        np.testing.assert_allclose(grads[1][n], grads[0][n], atol=1e-5 * scale, rtol=1e-5, err_msg=n)


def test_unknown_model_lists_registered() -> None:
    with pytest.raises(ConfigError, match="LeNet9.*registered models: LeNet, LeNet_nopool"):
        create_model("LeNet9")
    with pytest.raises(ConfigError, match="no option Arch.pool"):
        create_model("All_CNN_C", pool="avg")
