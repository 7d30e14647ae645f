"""paddle_lenet: pooling layers vs stride-2 convolutions, as a reproducible PaddlePaddle package.

From Python (a script or a notebook) — the same code paths as ``tools/``, raising exceptions instead of exiting,
and leaving the host program's signal handlers and random generators alone::

    import paddle_lenet as pl

    cfg = pl.load_config("configs/lenet.yml", ["Data.name=MNIST5k", "Global.epochs=2"])
    metrics = pl.train(cfg, quiet=True)          # writes output/lenet/, returns its metrics.json
    run = pl.load_run("output/lenet")            # recorded config + metrics + the trained model (final weights)
    pl.evaluate(run)                             # test-set metrics of those weights
    run.net                                      # a paddle.nn.Layer, in eval mode

Importing this module is cheap: paddle is imported by the first function that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__version__ = "0.1.0"

__all__ = ["LoadedRun", "evaluate", "load_config", "load_run", "train", "list_models", "create_model"]


def load_config(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A YAML config with ``Section.key=value`` overrides, validated against the schema (``ConfigError`` if not)."""
    from .config import load_config as _load

    return _load(path, overrides or [])


def train(cfg: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
    """Train, evaluate and record one run (its folder: ``Global.output_dir``/``Global.name``); returns its metrics.

    ``quiet=True`` prints nothing. Ctrl-C stops at the next step with a checkpoint and raises
    :class:`paddle_lenet.errors.TrainingStopped`; the caller's own handlers are back when this returns or raises.
    """
    from .engine import train as _train

    return _train(cfg, quiet=quiet)


@dataclass
class LoadedRun:
    """A finished run: its recorded config and metrics, and its model with the checked final weights."""

    folder: str
    cfg: dict[str, Any]
    metrics: dict[str, Any] | None
    experiment: Any

    @property
    def net(self) -> Any:
        return self.experiment.net


def load_run(folder: str, overrides: list[str] | None = None, load_test: bool = True) -> LoadedRun:
    """Open a run folder: its ``config.yml`` (plus ``overrides``, e.g. ``["Data.root=..."]``), ``metrics.json`` and
    its model with the ``final`` weights, verified against the run's identity (``RunFolderError`` if they are not
    this run's). ``load_test``: also load the test split (for :func:`evaluate`)."""
    import os

    from .engine import Experiment
    from .runfolder import resolve_run_config

    cfg, metrics = resolve_run_config(folder, overrides or [])
    exp = Experiment(cfg, load_train=False, load_test=load_test)
    exp.load_weights(cfg["Global"]["checkpoint"] or os.path.join(folder, "checkpoints", "final.pdparams"),
                     own=not cfg["Global"]["checkpoint"])
    exp.net.eval()
    return LoadedRun(folder, cfg, metrics, exp)


def evaluate(run: LoadedRun | str) -> dict[str, float]:
    """Test-set metrics (``loss``, ``acc_topK``) of a loaded run (or a run folder)."""
    if isinstance(run, str):
        run = load_run(run)
    return run.experiment.evaluate()


def list_models() -> list[str]:
    from .models import list_models as _list

    return _list()


def create_model(name: str, **kwargs: Any) -> Any:
    """A registered architecture (the plain graph; ``paddle_lenet.accelerate.accelerate`` puts it on the kernels)."""
    from .models import create_model as _create

    return _create(name, **kwargs)
