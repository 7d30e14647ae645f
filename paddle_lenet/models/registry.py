"""timm-style model registry: a new architecture is one decorated function.

Configs, ``count_params``, the study and export all name models through :func:`create_model`,
so the same string means the same network everywhere.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from .. import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., paddle.nn.Layer]
    input_shape: tuple[int, int, int]  # C, H, W the architecture is built for
    source: str  # which seed document it comes from


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(input_shape: tuple[int, int, int] = (1, 28, 28), source: str = "",
                   name: str | None = None) -> Callable:
    """Decorator: register a factory under its function name (or ``name``, when a class owns it)."""

    def wrap(fn: Callable[..., paddle.nn.Layer]) -> Callable[..., paddle.nn.Layer]:
        key = name or fn.__name__
        _REGISTRY[key] = ModelEntry(key, fn, tuple(input_shape), source)
        return fn

    return wrap


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}' (Arch.name); registered models: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def model_kwargs(name: str) -> set[str]:
    return set(inspect.signature(get_entry(name).fn).parameters)


def create_model(name: str, **kwargs: Any) -> paddle.nn.Layer:
    """Build a registered model; ``None`` kwargs mean "the model's own default"."""
    entry = get_entry(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    accepted = model_kwargs(name)
    for k in kwargs:
        if k not in accepted:
            raise ConfigError(
                f"model '{name}' has no option Arch.{k}; its options: {', '.join(sorted(accepted)) or 'none'}"
            )
    return entry.fn(**kwargs)


def count_params(model: paddle.nn.Layer) -> int:
    """Parameter count exactly as the notebook prints it: sum of ``numel()`` over ``parameters()``.

    Paddle's ``parameters()`` includes BatchNorm's running mean and variance (not trained); see
    :func:`count_trainable` for the count a paper would state.
    """
    return int(sum(int(p.numel()) for p in model.parameters()))


def count_trainable(model: paddle.nn.Layer) -> tuple[int, int]:
    """``(trainable, buffers)``: values the optimizer updates, and running statistics it does not."""
    params = list(model.parameters())
    trainable = sum(int(p.numel()) for p in params if not p.stop_gradient)
    return int(trainable), int(sum(int(p.numel()) for p in params) - trainable)


# Version of each model's definition, for the same reason as ``pooling.REVISIONS``.
MODEL_REVISIONS = {"LeNet5_classic": 2}  # 2: biases initialised as in seed 001


def arch_revision(arch: dict[str, Any]) -> int:
    """Revision of the network a config's ``Arch`` section builds; recorded in every run's metrics."""
    from .pooling import REVISIONS

    return max(MODEL_REVISIONS.get(arch["name"], 1), REVISIONS.get(arch.get("pool") or "", 1))
