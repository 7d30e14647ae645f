"""The engine's Adam (its fused kernel called directly) against Paddle's multi-tensor Adam, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from paddle_lenet import _paddle  # noqa: F401
import paddle
import paddle.nn.functional as F

from paddle_lenet import optim
from paddle_lenet.data import load_split
from paddle_lenet.models import create_model

STEPS = 12


def _train(make_opt, steps: int = STEPS) -> tuple[list[np.ndarray], list[np.ndarray], object]:
    data = load_split("MNIST5k", None, "train", limit=64 * steps)
    paddle.seed(7)
    with paddle.utils.unique_name.guard():  # the same parameter names in both runs, so state dicts compare by key
        net = create_model("LeNet")
    opt = make_opt(net.parameters())
    for i in range(steps):
        idx = np.arange(i * 64, (i + 1) * 64)
        x, y = paddle.to_tensor(data.batch(idx)), paddle.to_tensor(data.labels[idx])
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.minimize(loss) if i % 2 == 0 else opt.step()  # hapi calls minimize; both must take the short path
        net.clear_gradients()
    state = opt.state_dict()
    values = [np.asarray(state[k].numpy()) for k in sorted(state) if hasattr(state[k], "numpy")]
    return [p.numpy() for p in net.parameters()], values, opt


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(u.dtype == v.dtype and np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def test_direct_call_is_paddles_multi_tensor_adam_bit_for_bit() -> None:
    ref_p, ref_s, _ = _train(lambda ps: paddle.optimizer.Adam(1e-3, parameters=ps, use_multi_tensor=True))
    p, s, opt = _train(lambda ps: optim.Adam(1e-3, parameters=ps))
    assert opt.short_steps == STEPS - 1  # every step after Paddle's first one built the merged state
    assert len(ref_s) >= 4 * len(ref_p)  # moments and beta powers of every parameter were compared
    assert _same(p, ref_p) and _same(s, ref_s)
    # and it is not trivially equal: plain per-parameter Adam rounds differently
    plain_p, _, _ = _train(lambda ps: paddle.optimizer.Adam(1e-3, parameters=ps, use_multi_tensor=False))
    assert not _same(plain_p, ref_p)


@pytest.mark.parametrize("case", ["weight_decay", "scheduler"])
def test_what_the_short_path_does_not_cover_goes_through_paddle(case: str) -> None:
    def kwargs() -> dict:
        if case == "weight_decay":
            return {"learning_rate": 1e-3, "weight_decay": 1e-3}
        return {"learning_rate": paddle.optimizer.lr.MultiStepDecay(1e-3, [3], 0.1)}

    ref_p, ref_s, _ = _train(lambda ps: paddle.optimizer.Adam(parameters=ps, use_multi_tensor=True, **kwargs()), 6)
    p, s, opt = _train(lambda ps: optim.Adam(parameters=ps, **kwargs()), 6)
    assert opt.short_steps == 0
    assert _same(p, ref_p) and _same(s, ref_s)
