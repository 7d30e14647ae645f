"""Adam's update without Paddle's per-step Python bookkeeping: the same fused kernel, the same bits.

Why: with ``use_multi_tensor=True`` Paddle's ``minimize`` runs one ``merged_adam_`` kernel a step, but first walks
program guards, a ``LayerHelper``, gradient-clip and regularization hooks and one learning-rate lookup per
parameter — 0.4–0.8 ms of Python a step on a 2.5 GHz Zen 3 core (LeNet's whole step is ~10 ms there), for a kernel
that takes a fraction of that. Once Paddle's own first step has built the merged state, :class:`Adam` calls that
kernel directly with the same lists, so parameters, moments and beta powers get exactly the values Paddle's path
gives (``tests/test_optim.py``). Everything the short path does not cover (weight decay, gradient clipping, a
learning-rate scheduler, per-parameter learning rates, AMP's ``found_inf``, a parameter without a gradient) goes
through Paddle's path, every step.
"""

from __future__ import annotations

from typing import Any

from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
from paddle import _C_ops

_FP32 = "FP32_DenseTensor"


class Adam(paddle.optimizer.Adam):
    """``paddle.optimizer.Adam(..., use_multi_tensor=True)`` with a direct call of its kernel where that is all a step
    is. Named ``Adam`` on purpose: Paddle takes its multi-tensor path only for classes of that name (and Momentum)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["use_multi_tensor"] = True
        super().__init__(*args, **kwargs)
        self.short_steps = 0  # steps that took the direct call (tests read it)

    def _short_path(self) -> list[paddle.Tensor] | None:
        """The merged parameter list, where a step is just the fused kernel over it; else None."""
        if not paddle.in_dynamic_mode() or not self._param_dict[_FP32]:
            return None
        params = self._param_dict[_FP32][0]
        if (not params or self._param_dict["FP16_DenseTensor"][0] or self._grad_clip is not None
                or not isinstance(self._beta1, float) or not isinstance(self._beta2, float)
                or self.regularization is not None or not isinstance(self._learning_rate, float) or self._amsgrad
                or self._multi_precision or self._get_auxiliary_var("found_inf") is not None
                or len(params) != sum(not p.stop_gradient for p in self._parameter_list)):
            return None
        for p in params:
            attr = getattr(p, "optimize_attr", None)
            if attr and attr.get("learning_rate", 1.0) != 1.0:
                return None
        return params

    def _direct(self) -> list[tuple[paddle.Tensor, paddle.Tensor]] | None:
        params = self._short_path()
        if params is None:
            return None
        grads = [p._grad_ivar() for p in params]
        if any(g is None for g in grads):
            return None
        lr = self._global_learning_rate()
        with paddle.no_grad():
            _C_ops.merged_adam_(params, grads, [lr] * len(params), self._moment1_dict[_FP32][0],
                                self._moment2_dict[_FP32][0], None, self._beta1_pow_acc_dict[_FP32][0],
                                self._beta2_pow_acc_dict[_FP32][0], None, self._beta1, self._beta2, self._epsilon,
                                False, False, False)
        self.short_steps += 1
        return list(zip(params, grads, strict=True))

    def minimize(self, loss: Any, startup_program: Any = None, parameters: Any = None, no_grad_set: Any = None) -> Any:
        if parameters is None and no_grad_set is None:
            done = self._direct()
            if done is not None:
                return None, done
        return super().minimize(loss, startup_program, parameters, no_grad_set)

    def step(self) -> None:
        if self._direct() is None:
            super().step()
