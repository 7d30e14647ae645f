"""The one training path: ``paddle.Model(net)`` → ``prepare`` → ``fit`` (one epoch at a time) → ``evaluate``.

``tools/train.py``, ``tools/eval.py``, the study, the benchmark and the exporter all build an
:class:`Experiment` from a resolved config, so a model trained here is the model measured there.

:func:`train` adds what makes a run trustworthy: a run folder that is never silently overwritten,
atomic checkpoints holding everything needed to continue (weights, optimizer, RNG, data position),
exact resume, a clean stop on SIGINT/SIGTERM or a non-finite loss, VisualDL logs and ``metrics.json``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import signal
import sys
import time
import warnings
from typing import Any

import numpy as np
from . import _paddle  # noqa: F401  (paddle without its import-time warnings)
import paddle
from paddle import _C_ops

from . import checkpoint as ckpt
from . import ops, optim
from .accelerate import accelerate, accelerated_layers, kernels_used
from .analysis import class_names, per_class, predict
from .config import dump, run_dir
from .data import DATASETS, ArrayData, ArrayLoader, EpochBatchSampler, fingerprint, load_split
from .errors import ConfigError, TrainingStopped, UserError
from .files import makedirs, write_json, write_text
from .flops import count_flops
from .models import arch_revision, count_params, count_trainable, create_model, get_entry
from .runfolder import RunFolder, check_identity, identity


# --------------------------------------------------------------------------- setup
def select_device(choice: str) -> str:
    """``auto`` → GPU when this paddle build has CUDA and a GPU is visible, else CPU."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if choice == "gpu" and not has_gpu:
        raise ConfigError("Global.device=gpu but no GPU is usable (CPU-only paddle build or no visible GPU); "
                          "install paddlepaddle-gpu or use -o Global.device=auto")
    device = "gpu" if choice == "gpu" or (choice == "auto" and has_gpu) else "cpu"
    paddle.set_device(device)
    return device


def check_launcher_env() -> None:
    """Refuse rank variables without the launcher: a stray PADDLE_TRAINER_ID=1 would make this process a
    non-writing rank of a job that does not exist (a run that trains and records nothing)."""
    rank, n = os.environ.get("PADDLE_TRAINER_ID"), os.environ.get("PADDLE_TRAINERS_NUM")
    if rank is None and n is None:
        return
    try:
        r, w = int(rank or 0), int(n or 1)
    except ValueError:
        raise ConfigError(f"PADDLE_TRAINER_ID={rank!r} / PADDLE_TRAINERS_NUM={n!r} are not integers; unset them "
                          f"(they are set by python -m paddle.distributed.launch)") from None
    launched = bool(os.environ.get("PADDLE_TRAINER_ENDPOINTS"))
    if (w > 1 or r > 0) and not launched or not 0 <= r < max(w, 1):
        raise ConfigError(f"PADDLE_TRAINER_ID={rank} / PADDLE_TRAINERS_NUM={n} are set, but this process was not "
                          f"started by paddle.distributed.launch; unset them, or start data-parallel training with "
                          f"python -m paddle.distributed.launch --nproc_per_node N tools/train.py -c CONFIG")


def pin_threads(n: int) -> None:
    """Fix the CPU math thread count: a different count changes the last bits of the results."""
    setter = getattr(paddle.base.core, "set_num_threads", None)
    if setter is not None:
        setter(n)


def seed_everything(seed: int) -> None:
    """Paddle's generator drives every random number of a run (init, dropout, stochastic layers; the data
    order has its own, :class:`EpochBatchSampler`). numpy's global generator is the host program's: untouched."""
    paddle.seed(seed)


class MeanLoss(paddle.metric.Metric):
    """Sample-weighted mean cross-entropy over an evaluation pass.

    hapi reports the *last batch's* loss as ``loss`` (the notebook's 1.48e-05 is one batch); this
    metric is what ``metrics.json`` calls ``loss``. Computed in float64 numpy from the logits.

    hapi runs a model's metrics in training too, where nothing reads this one (a training epoch's loss is
    the mean of hapi's per-batch losses, :class:`StepCallback`): with ``net`` given, batches seen while it is
    in training mode are skipped — 40 µs of a 2.3 ms LeNet step.
    """

    def __init__(self, net: paddle.nn.Layer | None = None) -> None:
        super().__init__()
        self.net = net
        self.reset()

    def name(self) -> str:
        return "mean_loss"

    def compute(self, pred: paddle.Tensor, label: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        return pred, label

    def update(self, pred: np.ndarray, label: np.ndarray) -> float:
        if self.net is not None and self.net.training:
            return float("nan")
        z = pred.astype("float64")
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        losses = -np.take_along_axis(logp, label.reshape(-1, 1).astype("int64"), axis=1)
        self.total += float(losses.sum())
        self.count += len(losses)
        return float(losses.mean())

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def accumulate(self) -> float:
        return self.total / max(self.count, 1)


class CrossEntropyLoss(paddle.nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss()`` (mean over hard labels): the two ops its function ends in, without the three it
    computes first and never reads for these arguments (``valid_label``: a compare, a cast and a multiply; ~30 µs of
    a 2.3 ms LeNet step) — the same ops on the same tensors, so the same loss and gradients. Anything else
    (static graphs, soft or 1-D labels, an empty batch) takes ``nn.CrossEntropyLoss``'s own path."""

    def forward(self, input: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        if (paddle.in_dynamic_mode() and len(input.shape) == 2 and input.shape[0] > 0
                and label.shape == [input.shape[0], 1] and label.dtype == paddle.int64):
            _, out = _C_ops.cross_entropy_with_softmax(input, label, False, True, True, -100, -1)
            return _C_ops.mean_all(out)
        return super().forward(input, label)


def topk_correct(pred: np.ndarray, label: np.ndarray, maxk: int) -> np.ndarray | None:
    """hapi's ``Accuracy.compute`` in numpy: ``correct[n, r]`` is 1 where sample n's label is its r-th logit in
    ``argsort(descending=True)``'s order (r < maxk), else 0 — or None where numpy cannot give that order for sure.

    The label's place is the number of classes with a larger logit. That count is the sort's answer whenever no
    other class of the row ties the label's logit and no logit is NaN; otherwise the order is the sort algorithm's
    (among equals; NaN against numbers), so the caller takes Paddle's own sort.
    hapi's version is six Paddle ops a batch (70 µs of a 2.3 ms LeNet step); this is a few numpy ones.
    """
    if pred.ndim != 2 or pred.dtype.kind != "f" or label.dtype.kind not in "iu" or label.size != len(pred):
        return None
    n, classes = pred.shape
    lab = label.reshape(-1)
    if n == 0 or lab.min() < 0 or lab.max() >= classes or not math.isfinite(pred.sum()):
        return None  # NaN's place in the sort (and an overflowing sum's logits) are Paddle's to say
    v = pred[np.arange(n), lab][:, None]
    if np.count_nonzero(pred == v) != n:  # each row's label ties only with itself
        return None
    rank = np.count_nonzero(pred > v, axis=1)
    correct = (rank[:, None] == np.arange(min(maxk, classes))).astype(np.float32)
    return correct


class Accuracy(paddle.metric.Accuracy):
    """hapi's Accuracy, the same numbers from numpy (:func:`topk_correct`), keeping the last batch's values.

    hapi's step logs show the running mean since the epoch started (it jumps at every epoch start); the
    per-step curves in VisualDL are the accuracy of *that* batch, read from :attr:`last`.
    """

    def compute(self, pred: paddle.Tensor, label: paddle.Tensor, *args: Any) -> Any:
        return pred, label  # hapi hands them to update as numpy arrays

    def update(self, pred: Any, label: Any = None, *args: Any) -> Any:
        if label is None:  # hapi's own use: a correct-mask from paddle.metric.Accuracy.compute
            correct = pred
        else:
            pred, label = np.asarray(pred), np.asarray(label)
            correct = topk_correct(pred, label, self.maxk)
            if correct is None:
                correct = paddle.metric.Accuracy.compute(self, paddle.to_tensor(pred), paddle.to_tensor(label))
        out = super().update(correct)
        self.last = out if isinstance(out, list) else [out]
        return out


# --------------------------------------------------------------------------- experiment
class Experiment:
    """Model, optimizer and data of one config, wired through ``paddle.Model``."""

    def __init__(self, cfg: dict[str, Any], load_train: bool = True, load_test: bool = True) -> None:
        self.cfg = cfg
        g, a, d = cfg["Global"], cfg["Arch"], cfg["Data"]
        self.info = DATASETS[d["name"]]
        entry = get_entry(a["name"])
        if entry.input_shape != self.info.shape:
            raise ConfigError(
                f"Arch.name={a['name']} is built for {'×'.join(map(str, entry.input_shape))} input but "
                f"Data.name={d['name']} gives {'×'.join(map(str, self.info.shape))}; pick a matching dataset")
        self.device = select_device(g["device"])
        if g["fast"] and self.device == "cpu":
            ops.use_mkl_avx2()  # before the process's first matmul, or MKL keeps the path it took then
        pin_threads(g["threads"])
        check_launcher_env()
        env = paddle.distributed.ParallelEnv()
        self.rank, self.world_size = env.rank, env.world_size
        # data first: a missing or damaged file fails in seconds, before the kernel build
        self.train_data: ArrayData | None = (
            load_split(d["name"], d["root"], "train", d["train_limit"]) if load_train else None)
        self.test_data = load_split(d["name"], d["root"], "test") if load_test else None
        if self.train_data is not None and d["train_limit"] and d["train_limit"] > len(self.train_data):
            raise ConfigError(f"Data.train_limit={d['train_limit']} is more than the {len(self.train_data):,} training "
                              f"images in the files; use at most {len(self.train_data)}")
        labels = int(self.test_data.labels.max()) + 1 if self.test_data is not None else 0
        if self.num_classes < labels:
            raise ConfigError(f"Arch.num_classes={self.num_classes} but the data has labels up to {labels - 1}; "
                              f"leave Arch.num_classes null")
        # data-parallel ranks on one CPU share its cores; whether the kernels are used is Global.fast's accelerate pass
        ops.configure(threads=g["kernel_threads"] or max(1, ops.cpu_cores() // self.world_size))
        if g["fast"] and self.device == "cpu":
            ops.kernels()  # compile/load now: never inside a timed epoch
        seed_everything(g["seed"])
        self.net = self.build_net()
        self.sampler: EpochBatchSampler | None = None
        if self.train_data is not None:
            self.sampler = EpochBatchSampler(len(self.train_data), d["batch_size"], d["shuffle"], g["seed"],
                                             self.rank, self.world_size)
        self.model = self.build_model()

    @property
    def num_classes(self) -> int:
        return self.cfg["Arch"]["num_classes"] or self.info.num_classes

    def build_net(self) -> paddle.nn.Layer:
        a = self.cfg["Arch"]
        kwargs = {k: v for k, v in a.items() if k != "name"}
        kwargs["num_classes"] = self.num_classes
        # unique_name.guard: parameter and optimizer-state names must not depend on what was
        # built before in this process, or a resumed optimizer state would not match.
        with paddle.utils.unique_name.guard():
            net = create_model(a["name"], **kwargs)
        # the one place the fast path is switched on; in static graphs (export) the layers run their plain forward
        return accelerate(net) if self.cfg["Global"]["fast"] else net

    def build_optimizer(self, steps_per_epoch: int) -> paddle.optimizer.Optimizer:
        o = self.cfg["Optimizer"]
        lr: Any = o["learning_rate"]
        if o["milestones"]:  # epochs → steps; hapi's LRScheduler callback steps it every batch
            lr = paddle.optimizer.lr.MultiStepDecay(lr, [m * steps_per_epoch for m in o["milestones"]], o["gamma"])
        params = self.net.parameters()
        decay = o["weight_decay"] or None
        if o["name"] == "Adam":
            if self.cfg["Global"]["fast"]:  # Paddle's multi-tensor Adam, its kernel called directly (the same bits)
                return optim.Adam(lr, parameters=params, weight_decay=decay)
            return paddle.optimizer.Adam(lr, parameters=params, weight_decay=decay, use_multi_tensor=False)
        if o["name"] == "Momentum":
            return paddle.optimizer.Momentum(lr, momentum=o["momentum"], parameters=params, weight_decay=decay)
        return paddle.optimizer.SGD(lr, parameters=params, weight_decay=decay)

    def build_model(self) -> paddle.Model:
        c, h, w = self.info.shape
        model = paddle.Model(self.net, inputs=[paddle.static.InputSpec([None, c, h, w], "float32", "image")],
                             labels=[paddle.static.InputSpec([None, 1], "int64", "label")])
        steps = self.sampler.batches_per_epoch() if self.sampler else 1
        with paddle.utils.unique_name.guard():
            opt = self.build_optimizer(steps)
        self.accuracy = Accuracy(topk=tuple(self.cfg["Metric"]["topk"]))
        model.prepare(opt, CrossEntropyLoss(), [self.accuracy, MeanLoss(self.net)])
        return model

    def train_loader(self) -> ArrayLoader:
        assert self.train_data is not None and self.sampler is not None
        return ArrayLoader(self.train_data, self.sampler, self.cfg["Data"]["num_workers"])

    def test_loader(self, data: ArrayData | None = None, transform: Any = None) -> ArrayLoader:
        # every rank evaluates the whole test set: metrics are global without any reduction
        data = data or self.test_data
        bs = self.cfg["Data"]["eval_batch_size"] or self.cfg["Data"]["batch_size"]
        return ArrayLoader(data, EpochBatchSampler(len(data), bs, shuffle=False), transform=transform)

    def evaluate(self, data: ArrayData | None = None, transform: Any = None) -> dict[str, float]:
        """Test-set metrics: ``loss`` (mean CE), ``acc_topK`` for every K of ``Metric.topk``."""
        logs = self.model.evaluate(self.test_loader(data, transform), verbose=0)
        out = {"loss": float(logs["mean_loss"])}
        for k in self.cfg["Metric"]["topk"]:
            out[f"acc_top{k}"] = float(logs[f"acc_top{k}"])
        return out

    def arithmetic(self) -> dict[str, Any]:
        """Which code computes the run's numbers: the package's kernels (their source revision) or Paddle's ops.

        Recorded in every checkpoint and ``metrics.json``: the two give the same function but not the same last
        bits, so a resumed run or a study must not mix them unknowingly.
        """
        return {"kernels": _kernel_revision(self.net, self.cfg["Global"]["fast"], self.device),
                "fast": self.cfg["Global"]["fast"],
                "isa": ops.isa(), "blas": ops.blas(), "paddle": paddle.__version__}

    def load_weights(self, path: str, own: bool = True) -> str:
        """Put a checkpoint's weights into the model after checking it is this config's run; returns how it was
        checked ("recorded run" or "unchecked: no record")."""
        weights, state = ckpt.load_params(path, self.net, own=own)
        if state is not None:
            check_identity(state["identity"], self.cfg, arch_revision(self.cfg["Arch"]), f"checkpoint '{path}'")
        self.net.set_state_dict(weights)
        return "identity checked against the run's config" if state is not None else "unchecked: no record"

    def param_count(self) -> int:
        return count_params(self.net)

    def flops(self) -> int:
        return count_flops(self.net, self.info.shape)

    def test_fingerprint(self) -> str:
        return fingerprint(self.test_data)


@functools.cache
def code_digest() -> str:
    """The package's source (every .py and .cc under paddle_lenet/), hashed: the code a run's time was measured on. A
    speed-up that keeps every bit changes no kernel revision but does change this, so a study compares train times
    only between runs of one code (:func:`timing`)."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for dirpath, dirnames, files in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(files):
            if f.endswith((".py", ".cc")):
                path = os.path.join(dirpath, f)
                h.update(os.path.relpath(path, pkg).encode() + b"\0")
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()[:12]


def timing() -> dict[str, Any]:
    """Where and on what a run's ``train_seconds`` were measured: the CPU, its core count and the package's code.
    Times of runs with different contexts are not a cost ranking (the report says so, :mod:`paddle_lenet.report`)."""
    return {"cpu": ops.cpu_model(), "cores": os.cpu_count(), "code": code_digest()}


def _kernel_revision(net: paddle.nn.Layer, fast: bool, device: str) -> str | None:
    """The arithmetic revision of the kernels ``net`` computes with (None: Paddle's own ops)."""
    if fast and device == "cpu" and ops.kernels() is not None and accelerated_layers(net):
        return ops.revision(kernels_used(net))
    return None


def _accelerated_net(cfg: dict[str, Any]) -> paddle.nn.Layer:
    a = cfg["Arch"]
    kwargs = {k: v for k, v in a.items() if k != "name"}
    kwargs["num_classes"] = a["num_classes"] or 10  # the classes do not change which kernels compute the layers
    with paddle.utils.unique_name.guard():
        return accelerate(create_model(a["name"], **kwargs))


def model_kernels(cfg: dict[str, Any]) -> list[str]:
    """The kernels (names of ``ops.REVISIONS``) that compute ``cfg``'s model on the fast path."""
    return kernels_used(_accelerated_net(cfg))


def planned_kernels(cfg: dict[str, Any], device: str) -> str | None:
    """What a run of ``cfg`` would record as its kernels' revision on ``device``, without data or training: a study
    compares it with a committed record's before counting that record as its run."""
    return _kernel_revision(_accelerated_net(cfg), cfg["Global"]["fast"], device)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# --------------------------------------------------------------------------- callbacks
class _Interrupt(Exception):
    def __init__(self, signame: str) -> None:
        self.signame = signame


class _NonFinite(Exception):
    def __init__(self, value: float, step: int) -> None:
        self.value, self.step = value, step


class StepCallback(paddle.callbacks.Callback):
    """Per-step bookkeeping inside ``fit``: progress, VisualDL, non-finite loss, stop requests."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        r = self.run
        logs = logs or {}
        loss = float(logs["loss"][0])
        r.step_in_epoch += 1
        r.global_step += 1
        if not math.isfinite(loss):
            raise _NonFinite(loss, r.step_in_epoch)
        r.loss_sum += loss
        r.loss_n += 1
        batch = int(logs.get("batch_size", 0)) or r.cfg["Data"]["batch_size"]
        r.acc_sum += float(r.exp.accuracy.last[0]) * batch  # this batch's top-k[0] accuracy, in training mode
        r.acc_n += batch
        if r.writer is not None:  # the values of this batch, not hapi's running means
            r.writer.add_scalar("train/loss", loss, r.global_step)
            for k, acc in zip(r.topk, r.exp.accuracy.last, strict=True):
                r.writer.add_scalar(f"train/acc_top{k}", float(acc), r.global_step)
        pe = r.cfg["Global"]["print_every"]
        if pe and r.step_in_epoch % pe == 0 and r.progress:
            rate = r.images_this_epoch() / max(time.time() - r.epoch_t0, 1e-9)
            left = (r.steps_per_epoch * (r.epochs - r.epoch) - r.step_in_epoch) * r.cfg["Data"]["batch_size"]
            eta = left * r.exp.world_size / max(rate, 1e-9) if rate else 0.0
            print(f"epoch {r.epoch + 1}/{r.epochs} step {r.step_in_epoch}/{r.steps_per_epoch} | epoch so far: "
                  f"loss {r.loss_sum / r.loss_n:.4f} acc_top{r.topk[0]} {float(logs[f'acc_top{r.topk[0]}']):.4f} | "
                  f"{rate:,.0f} img/s | training left ~{_duration(eta)}", flush=True)
        if r.stop_signal:
            raise _Interrupt(r.stop_signal)


# --------------------------------------------------------------------------- a run
class Run:
    """State of one training run in its folder; see :func:`train`."""

    def __init__(self, cfg: dict[str, Any], exp: Experiment, folder: RunFolder) -> None:
        self.cfg, self.exp, self.folder = cfg, exp, folder
        self.dir = folder.dir
        self.ckpt_dir = folder.ckpt_dir
        self.epochs = cfg["Global"]["epochs"]
        self.topk = cfg["Metric"]["topk"]
        self.is_main = exp.rank == 0
        self.steps_per_epoch = exp.sampler.batches_per_epoch() if exp.sampler else 0
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0
        self.global_step = 0
        self.train_seconds = 0.0
        self.stop_signal: str | None = None
        self.writer: ScalarLog | None = None
        self.loss_sum, self.loss_n = 0.0, 0
        self.acc_sum, self.acc_n = 0.0, 0
        self.epoch_t0 = time.time()
        self.epoch_skip = 0
        self.history: list[dict[str, float]] = []  # eval metrics per evaluated epoch (learning curves)
        self.progress = self.is_main  # print progress lines (see train's ``progress``)

    def images_this_epoch(self) -> int:
        return (self.step_in_epoch - self.epoch_skip) * self.cfg["Data"]["batch_size"] * self.exp.world_size

    # ---- state that goes into a checkpoint
    def state(self) -> dict[str, Any]:
        """Plain JSON (see :mod:`paddle_lenet.checkpoint`): the run's identity and where it stands."""
        return {"identity": identity(self.cfg, arch_revision(self.cfg["Arch"]), self.exp.arithmetic()),
                "epoch": self.epoch, "step": self.step_in_epoch, "global_step": self.global_step,
                "train_seconds": self.train_seconds, "steps_per_epoch": self.steps_per_epoch,
                "seed": self.cfg["Global"]["seed"], "history": self.history,
                "rng": ckpt.encode_rng(paddle.get_rng_state()),
                "loss_sum": self.loss_sum, "loss_n": self.loss_n, "acc_sum": self.acc_sum, "acc_n": self.acc_n}

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.step_in_epoch = state["epoch"], state["step"]
        self.global_step, self.train_seconds = state["global_step"], state["train_seconds"]
        self.history = state["history"]
        # the epoch's running train loss, so a mid-epoch resume records the same history[].train_loss
        self.loss_sum, self.loss_n = state["loss_sum"], state["loss_n"]
        self.acc_sum, self.acc_n = state["acc_sum"], state["acc_n"]
        paddle.set_rng_state(ckpt.decode_rng(state["rng"]))

    def save(self) -> str:
        if not self.is_main:
            return ""
        makedirs(self.ckpt_dir)
        tag = f"epoch_{self.epoch}" if self.step_in_epoch == 0 else f"epoch_{self.epoch}_step_{self.step_in_epoch}"
        ckpt.save(self.ckpt_dir, tag, self.exp.net.state_dict(), self.exp.model._optimizer.state_dict(), self.state())
        return tag


def _handle_signals(run: Run) -> dict[int, Any]:
    """First SIGINT/SIGTERM: finish the current step, checkpoint, exit. A second one: stop now."""

    def handler(signum: int, frame: Any) -> None:
        if run.stop_signal:  # checkpoints are atomic: stopping mid-write leaves the previous one intact
            print(f"stopped at once by a second signal; resume from {ckpt.latest_tag(run.ckpt_dir) or 'the start'} "
                  f"with -o Global.resume=true", file=sys.stderr, flush=True)
            os._exit(130)
        run.stop_signal = signal.Signals(signum).name
        print(f"\n{run.stop_signal} received: stopping after this step and writing a checkpoint "
              f"(send it again to stop at once)", flush=True)

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            old[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread (e.g. a study worker thread)
            pass
    return old


# short data set names for the dashboard, whose run list cuts names after ~20 characters
_DATA_TAG = {"MNIST": "MNIST", "MNIST5k": "M5k", "FashionMNIST": "FMNIST", "Cifar10": "C10", "Cifar100": "C100"}
# VisualDL's HParams table shows nothing for names with dots: its keys, and the config key each stands for
HPARAM_KEYS = {"model": "Arch.name", "pool": "Arch.pool", "pool_p": "Arch.pool_p", "head": "Arch.head",
               "optimizer": "Optimizer.name", "lr": "Optimizer.learning_rate", "weight_decay": "Optimizer.weight_decay",
               "seed": "Global.seed", "epochs": "Global.epochs", "data": "Data.name", "batch": "Data.batch_size"}


def _visualdl_writer_class() -> Any:
    """VisualDL's ``LogWriter``. ``import visualdl`` writes its config under ``~/.visualdl``; with a read-only home
    that fails, and a run must not: then visualdl is imported with HOME pointing at a temporary folder for the
    duration of the import (visualdl keeps that path for its own config; nothing else of the process changes)."""
    try:
        from visualdl import LogWriter

        return LogWriter
    except OSError:
        import tempfile

        for name in [m for m in sys.modules if m == "visualdl" or m.startswith("visualdl.")]:
            del sys.modules[name]
        home = os.environ.get("HOME")
        os.environ["HOME"] = tempfile.mkdtemp(prefix="paddle_lenet-visualdl-")
        try:
            from visualdl import LogWriter
        finally:
            if home is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = home
        return LogWriter


def _open_writer(run: Run) -> Any:
    """VisualDL writer named so runs can be told apart in the dashboard's short run list: ``<name>·<data>`` for a
    run, ``<label>·<data>·s<seed>`` for a study's; HParams under dot-free names (:data:`HPARAM_KEYS`)."""
    LogWriter = _visualdl_writer_class()

    cfg = run.cfg
    parts = os.path.normpath(run.dir).split(os.sep)
    data = _DATA_TAG.get(cfg["Data"]["name"], cfg["Data"]["name"])
    # a study run is <output>/<study>/runs/<label>/seed_<s>
    study = len(parts) >= 4 and parts[-3] == "runs"
    name = f"{parts[-2]}·{data}·s{cfg['Global']['seed']}" if study else f"{parts[-1]}·{data}"
    writer = LogWriter(logdir=run.folder.vdl_dir, display_name=name)
    hparams = {}
    for short, key in HPARAM_KEYS.items():
        section, k = key.split(".")
        v = cfg[section][k]
        if v is None:
            v = "default"
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            hparams[short] = v
    writer.add_hparams(hparams, ["eval/loss"] + [f"eval/acc_top{k}" for k in cfg["Metric"]["topk"]])
    return ScalarLog(writer)


class ScalarLog:
    """A VisualDL ``LogWriter`` whose scalars reach its file in batches: the same records, in the same order.

    VisualDL hands each record to a writer thread, which opens the log file, appends the record and closes it: about
    60 µs of a core per scalar, three scalars a training step (2–3% of LeNet's step on one core), and in a study the
    thread's wake-ups land on the core the other worker trains on. Here a scalar is built and framed by VisualDL's own
    code (``scalar``, ``RecordWriter``) into memory and appended in one write at least every ``flush_seconds``, at
    :meth:`flush` (the engine flushes at each epoch's end) and at :meth:`close`. What a process killed without
    warning loses is the last seconds of scalars; a stop by signal closes the writer, so nothing.
    """

    def __init__(self, writer: Any, flush_seconds: float = 5.0) -> None:
        from visualdl.component.base_component import scalar  # visualdl is imported (see _visualdl_writer_class)
        from visualdl.writer.record_writer import RecordWriter

        self.writer, self.flush_seconds, self._scalar = writer, flush_seconds, scalar
        self._pending = io.BytesIO()
        self._framer = RecordWriter(self._pending)
        self._last = time.monotonic()
        self._failed = False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        record = self._scalar(tag=tag, value=value, step=step, walltime=round(time.time() * 1000))
        self._framer.write(record.SerializeToString())
        if time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        data = self._pending.getvalue()
        if not data:
            return
        self._pending.seek(0)
        self._pending.truncate()
        self.writer.flush()  # VisualDL's queue drained: its thread is not appending while this does
        try:
            with open(self.writer.file_name, "ab") as f:
                f.write(data)
        except OSError as e:  # as VisualDL's own writer does: the run goes on, its curve has a gap, said once
            if not self._failed:
                print(f"warning: VisualDL log {self.writer.file_name} not written ({e.strerror or e}); training "
                      f"continues without these curve points", file=sys.stderr, flush=True)
            self._failed = True

    def close(self) -> None:
        self.flush()
        self.writer.close()


def train(cfg: dict[str, Any], quiet: bool = False, prefix: str = "", progress: bool | None = None) -> dict[str, Any]:
    """Train, evaluate and record one run; returns the contents of ``metrics.json``.

    ``quiet``: no resolved config and no closing JSON line; ``progress`` (default: not ``quiet``): the per-step
    and per-epoch lines, each starting with ``prefix``. Errors are raised (:class:`UserError`, :class:`TrainingStopped`).

    Order matters for trust: the config is already validated; the run folder is checked (read-only), then
    model, data and kernels are built — any of these failing leaves no trace — and only then is the folder
    created, locked against a second process, and written. Resumes from the newest readable checkpoint
    with ``Global.resume``; the resumed run's ``metrics.json`` (history included) is identical to an
    uninterrupted run's (same seed, same thread count, CPU).
    """
    check_launcher_env()
    folder = RunFolder(cfg)
    if int(os.environ.get("PADDLE_TRAINER_ID", "0")) == 0:
        folder.check()  # fail fast, before data, model and kernels are built
    exp = Experiment(cfg)
    is_main = exp.rank == 0
    if not is_main:  # rank 0 alone checks and writes the folder; the others follow its checkpoints
        return _train(cfg, exp, folder, ckpt.load_latest(folder.ckpt_dir) if cfg["Global"]["resume"] else None,
                      quiet, prefix, progress)
    folder.check()
    created = not os.path.exists(folder.dir)
    folder.lock()
    try:
        folder.check()  # again, now that we own it: another process may have written meanwhile
        if cfg["Global"]["overwrite"] or not folder.holds_run():
            folder.clear()  # also what a run stopped before its first checkpoint left (config.yml, empty logs)
        resume_state = ckpt.load_latest(folder.ckpt_dir) if cfg["Global"]["resume"] else None
        if resume_state is not None and os.path.exists(folder.metrics_path) \
                and resume_state[2]["epoch"] < cfg["Global"]["epochs"]:
            os.remove(folder.metrics_path)  # extending a finished run: its old metrics no longer describe it
        try:
            makedirs(folder.ckpt_dir)
            write_text(folder.config_path, dump(cfg))
            return _train(cfg, exp, folder, resume_state, quiet, prefix, progress)
        except (UserError, OSError):
            if created and ckpt.latest_tag(folder.ckpt_dir) is None:
                folder.remove_if_empty()  # nothing trained yet: leave no half-made run behind
            raise
    finally:
        folder.release()


def _train(cfg: dict[str, Any], exp: Experiment, folder: RunFolder, resume_state: Any, quiet: bool,
           prefix: str, progress: bool | None) -> dict[str, Any]:
    run = Run(cfg, exp, folder)
    run.progress = (not quiet if progress is None else progress) and run.is_main
    d = run.dir
    if not quiet and run.is_main:
        print(dump(cfg), end="", flush=True)
    if resume_state is not None:
        net_state, opt_state, state = resume_state
        check_identity(state["identity"], cfg, arch_revision(cfg["Arch"]), f"cannot resume '{d}': its checkpoint",
                       arithmetic=exp.arithmetic())
        want = exp.net.state_dict()
        if any(k not in net_state or list(net_state[k].shape) != list(want[k].shape) for k in want):
            raise ConfigError(f"cannot resume '{d}': its checkpoint holds another network than Arch now builds; "
                              f"start it again with -o Global.overwrite=true")
        exp.net.set_state_dict(net_state)
        exp.model._optimizer.set_state_dict(opt_state)
        run.restore(state)
        if run.progress:
            print(f"resuming {d} after epoch {run.epoch}" + (f", step {run.step_in_epoch}" if run.step_in_epoch else ""),
                  flush=True)
    old_handlers = _handle_signals(run)
    if cfg["Global"]["vdl"] and run.is_main:
        run.writer = _open_writer(run)
    if run.progress:
        print(f"{prefix}{cfg['Arch']['name']}: {exp.param_count():,} parameters | {exp.info.description} "
              f"{len(exp.train_data):,} train / {len(exp.test_data):,} test | device {exp.device}", flush=True)
    callbacks = [StepCallback(run)]
    eval_logs: dict[str, float] = {}
    try:
        while run.epoch < run.epochs:
            run.epoch_skip = run.step_in_epoch
            exp.sampler.set_epoch(run.epoch, skip=run.step_in_epoch)
            if run.step_in_epoch == 0:
                run.loss_sum, run.loss_n = 0.0, 0
                run.acc_sum, run.acc_n = 0.0, 0
            run.epoch_t0 = time.time()
            try:
                if run.stop_signal:  # a signal before the first step
                    raise _Interrupt(run.stop_signal)
                with warnings.catch_warnings():  # every BatchNorm layer warns this in training: true, nothing to act on
                    warnings.filterwarnings("ignore", message=".*we now always track global mean and variance.*")
                    exp.model.fit(exp.train_loader(), epochs=1, verbose=0, callbacks=callbacks)
            except _Interrupt as e:
                run.train_seconds += time.time() - run.epoch_t0
                tag = run.save()
                raise TrainingStopped(
                    f"{e.signame} at epoch {run.epoch + 1} step {run.step_in_epoch}; checkpoint '{tag}' written to "
                    f"{run.ckpt_dir}; continue with the same command plus -o Global.resume=true", 130) from None
            except _NonFinite as e:
                last = ckpt.latest_tag(run.ckpt_dir)
                raise TrainingStopped(
                    f"loss became {e.value} at epoch {run.epoch + 1} step {e.step} (global step {run.global_step}); "
                    f"stopped without saving this epoch; last good checkpoint: {last or 'none'}; "
                    f"try a lower Optimizer.learning_rate", 3) from None
            run.train_seconds += time.time() - run.epoch_t0
            run.epoch += 1
            run.step_in_epoch = 0
            train_loss = run.loss_sum / max(run.loss_n, 1)
            line = (f"epoch {run.epoch}/{run.epochs} | train loss {train_loss:.4f} | "
                    f"{time.time() - run.epoch_t0:.1f}s")
            if run.epoch % cfg["Global"]["eval_every"] == 0 or run.epoch == run.epochs:
                eval_logs = exp.evaluate()
                # train_acc: the epoch's running accuracy over its batches in training mode (dropout on, weights
                # moving), as training curves usually show it; the test metrics are of the weights at the epoch's end
                run.history.append({"epoch": run.epoch, "train_loss": train_loss,
                                    f"train_acc_top{run.topk[0]}": run.acc_sum / max(run.acc_n, 1), **eval_logs})
                if run.writer is not None:
                    for k, v in eval_logs.items():
                        run.writer.add_scalar(f"eval/{k}", v, run.epoch)
                line += " | eval " + " ".join(f"{k} {v:.4f}" for k, v in eval_logs.items())
            run.save()
            if run.writer is not None:  # the log as current as the checkpoint
                run.writer.flush()
            if run.progress:
                print(prefix + line, flush=True)
            if run.stop_signal:
                raise TrainingStopped(
                    f"{run.stop_signal} after epoch {run.epoch}; checkpoint 'epoch_{run.epoch}' written; "
                    f"continue with the same command plus -o Global.resume=true", 130)
        if not eval_logs:  # resumed a run whose epochs were all done: evaluate its weights
            eval_logs = exp.evaluate()
        metrics = {
            "model": cfg["Arch"]["name"], "dataset": cfg["Data"]["name"], "params": exp.param_count(),
            "trainable_params": count_trainable(exp.net)[0], "buffers": count_trainable(exp.net)[1],
            "arch_revision": arch_revision(cfg["Arch"]), "arithmetic": exp.arithmetic(),
            "flops": exp.flops(), "epochs": run.epochs, "seed": cfg["Global"]["seed"], **eval_logs,
            "train_seconds": round(run.train_seconds, 3), "timing": timing(), "steps": run.global_step,
            "train_samples": len(exp.train_data), "test_samples": len(exp.test_data),
            "test_fingerprint": exp.test_fingerprint(), "device": exp.device,
            "world_size": exp.world_size, "paddle": paddle.__version__, "history": run.history,
        }
        if run.is_main:
            ckpt.save_final(run.ckpt_dir, f"epoch_{run.epoch}")
            write_json(folder.metrics_path, metrics)
    finally:
        if run.writer is not None:
            run.writer.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if run.is_main and not quiet:
        import json

        print(f"run written to {run.dir}; next: `python tools/eval.py -c {run.dir} --plots {run.dir}/plots`, "
              f"`python tools/export.py -c {run.dir} --out export/{os.path.basename(run.dir)}`, "
              f"`python tools/dashboard.py --logdir {os.path.dirname(run.dir) or '.'}`", flush=True)
        print(json.dumps({k: metrics[k] for k in ("model", "loss", "acc_top1", "acc_top2", "train_seconds")
                          if k in metrics}), flush=True)
    return metrics


def evaluate_checkpoint(cfg: dict[str, Any], run_metrics: dict[str, Any] | None = None,
                        other_data: bool = False) -> dict[str, Any]:
    """Metrics of a run's weights (``Global.checkpoint``, default the run's ``final``) on its test set.

    ``run_metrics`` (the run's ``metrics.json``) lets the check refuse a test set other than the run's own,
    unless ``other_data`` says that is the point.
    """
    from .runfolder import check_same_data

    path = cfg["Global"]["checkpoint"] or os.path.join(run_dir(cfg), "checkpoints", "final.pdparams")
    exp = Experiment(cfg, load_train=False)
    check_same_data(cfg, run_metrics, exp.test_fingerprint(), other_data)
    checked = exp.load_weights(path, own=not cfg["Global"]["checkpoint"])
    out = {"model": cfg["Arch"]["name"], "dataset": cfg["Data"]["name"], "checkpoint": path, "identity": checked}
    out.update(exp.evaluate())
    out["test_samples"] = len(exp.test_data)
    out.update(per_class(predict(exp.net, exp.test_data), exp.test_data.labels, class_names(exp.test_data)))
    return out


def shift_accuracy(cfg: dict[str, Any], shifts: list[int]) -> dict[str, float]:
    """Top-1 test accuracy with images shifted by k pixels, mean over the four directions (zero fill).

    Measures the translation invariance that pooling is said to buy (seed 000's claim).
    """
    return measure_run(cfg, shifts)[0]


def measure_run(cfg: dict[str, Any], shifts: list[int]) -> tuple[dict[str, float], dict[str, Any]]:
    """What a study records of a finished run beside its metrics: accuracy under shifts (see
    :func:`shift_accuracy`) and per-class accuracy with the confusion matrix."""
    from .data import shift_images

    exp = Experiment(cfg, load_train=False)
    exp.load_weights(os.path.join(run_dir(cfg), "checkpoints", "final.pdparams"))
    classes = per_class(predict(exp.net, exp.test_data), exp.test_data.labels, class_names(exp.test_data))
    out = {}
    for k in shifts:
        dirs = ("up", "down", "left", "right") if k else ("up",)
        accs = [exp.evaluate(transform=lambda x, k=k, d=d: shift_images(x, k, d))["acc_top1"] for d in dirs]
        out[str(k)] = float(np.mean(accs))
    return out, classes
