"""Model zoo. Importing this package registers every architecture (LeNet family first)."""

from . import lenet  # noqa: F401  (registration side effects)
from . import allcnn  # noqa: F401
from .registry import (arch_revision, count_params, count_trainable, create_model, get_entry, list_models,
                       model_kwargs, register_model)

__all__ = ["arch_revision", "count_params", "count_trainable", "create_model", "get_entry", "list_models",
           "model_kwargs", "register_model"]
