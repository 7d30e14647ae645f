"""Throughput of the package's own training path (``Experiment`` + ``paddle.Model.fit``), and a
PyTorch eager reference for the notebook models, timed alternately so both see the same machine.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import numpy as np

from . import ops
from .engine import Experiment


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _StepCounter:
    """Counts the steps and images ``fit`` really trained on."""

    def __new__(cls) -> Any:
        import paddle

        class Counter(paddle.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.steps = self.images = 0

            def on_train_batch_begin(self, step: int, logs: dict | None = None) -> None:
                self.steps += 1

            def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
                self.images += int(logs.get("batch_size", 0)) if logs else 0

        return Counter()


class PaddleBench:
    """Times ``fit`` over ``steps`` batches of the real training loader, exactly as train.py runs it."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.exp = Experiment(cfg)
        self.batch = cfg["Data"]["batch_size"]
        self.epoch = 0

    def batches(self, steps: int) -> Any:
        """Exactly ``steps`` batches of the real loader, running on into the next epochs as needed.

        ``fit`` stops at the end of its loader: with more steps than one epoch has, timing ``steps`` while
        only one epoch ran would overstate the rate (N steps divided by the time of fewer).
        """
        bench = self

        class Cycle:
            def __len__(self) -> int:
                return steps

            def __iter__(self) -> Any:
                n = 0
                while True:
                    bench.exp.sampler.set_epoch(bench.epoch)
                    bench.epoch += 1
                    for x, y in bench.exp.train_loader():
                        if n == steps:
                            return
                        n += 1
                        yield x, y

        return Cycle()

    def train(self, steps: int) -> float:
        """Images per second over exactly ``steps`` optimizer steps (counted, not assumed)."""
        counter = _StepCounter()
        loader = self.batches(steps)
        t = time.perf_counter()
        self.exp.model.fit(loader, epochs=1, verbose=0, callbacks=[counter])
        elapsed = time.perf_counter() - t
        if counter.steps != steps:
            raise RuntimeError(f"benchmark ran {counter.steps} steps, not {steps}")
        return counter.images / elapsed

    def evaluate(self) -> float:
        t = time.perf_counter()
        self.exp.evaluate()
        return len(self.exp.test_data) / (time.perf_counter() - t)


def torch_model(name: str, num_classes: int = 10) -> Any:
    """PyTorch twins of the notebook family's graphs (quirks included), for the speed yardstick only."""
    import torch.nn as tnn

    if name == "LeNet":
        return tnn.Sequential(tnn.Conv2d(1, 6, 5, 1, 2), tnn.ReLU(), tnn.MaxPool2d(2, 2), tnn.ReLU(),
                              tnn.Conv2d(6, 16, 5), tnn.MaxPool2d(2, 2), tnn.Flatten(), tnn.Linear(400, 120),
                              tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, num_classes))
    if name == "LeNet_nopool":
        return tnn.Sequential(tnn.Conv2d(1, 6, 5, 1, 2), tnn.ReLU(), tnn.Conv2d(6, 16, 5, 2), tnn.ReLU(),
                              tnn.Conv2d(16, 16, 3, 1, 1), tnn.ReLU(), tnn.Conv2d(16, 16, 3, 2), tnn.Flatten(),
                              tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, num_classes))
    if name == "LeNet5_classic":
        return tnn.Sequential(tnn.Conv2d(1, 6, 5, 1, 2), tnn.Sigmoid(), tnn.AvgPool2d(2, 2), tnn.Conv2d(6, 16, 5),
                              tnn.Sigmoid(), tnn.AvgPool2d(2, 2), tnn.Flatten(), tnn.Linear(400, 120), tnn.Sigmoid(),
                              tnn.Linear(120, 84), tnn.Sigmoid(), tnn.Linear(84, num_classes))
    if name in ("LeNet_BN", "LeNet_BN_strided"):
        s = 2 if name.endswith("strided") else 1
        pool = (lambda: tnn.Identity()) if s == 2 else (lambda: tnn.MaxPool2d(2, 2))
        return tnn.Sequential(tnn.Conv2d(1, 6, 5, s, 2), tnn.ReLU(), pool(), tnn.Dropout(0.4),
                              tnn.Conv2d(6, 16, 5, s, 2), tnn.BatchNorm2d(16), tnn.ReLU(), pool(),
                              tnn.Conv2d(16, 120, 5), tnn.BatchNorm2d(120), tnn.ReLU(), tnn.AdaptiveAvgPool2d(1),
                              tnn.Flatten(), tnn.Linear(120, num_classes))
    raise ValueError(f"--reference torch has no twin of {name}")


TORCH_MODELS = ("LeNet", "LeNet_nopool", "LeNet5_classic", "LeNet_BN", "LeNet_BN_strided")


class TorchBench:
    """The same model, optimizer, batch and arrays in PyTorch eager or ``torch.compile`` (inductor), as a speed
    yardstick — never a dependency."""

    def __init__(self, cfg: dict[str, Any], data: Any, threads: int | None, compiled: bool = False) -> None:
        import torch
        import torch.nn.functional as tf

        self.torch, self.tf = torch, tf
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(cfg["Global"]["seed"])
        net = torch_model(cfg["Arch"]["name"])
        o = cfg["Optimizer"]
        if o["name"] == "Adam":
            self.opt = torch.optim.Adam(net.parameters(), lr=o["learning_rate"])
        elif o["name"] == "Momentum":
            self.opt = torch.optim.SGD(net.parameters(), lr=o["learning_rate"], momentum=o["momentum"])
        else:
            self.opt = torch.optim.SGD(net.parameters(), lr=o["learning_rate"])
        self.net = torch.compile(net) if compiled else net
        self.x, self.y = torch.from_numpy(data.images), torch.from_numpy(data.labels[:, 0])
        self.batch = cfg["Data"]["batch_size"]
        self.rng = np.random.default_rng(0)

    def train(self, steps: int) -> float:
        n = len(self.y)
        per_epoch = -(-n // self.batch)
        perm = self.torch.from_numpy(np.concatenate([self.rng.permutation(n) for _ in range(-(-steps // per_epoch))]))
        t = time.perf_counter()
        for i in range(steps):
            e, b = divmod(i, per_epoch)
            idx = perm[e * n + b * self.batch : e * n + min((b + 1) * self.batch, n)]
            loss = self.tf.cross_entropy(self.net(self.x[idx]), self.y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            loss.item()  # hapi also reads the loss every step
        return steps * self.batch / (time.perf_counter() - t)


def benchmark(cfg: dict[str, Any], steps: int, warmup: int, pairs: int, reference: str | None,
              torch_threads: int | None, baseline: PaddleBench | None = None) -> dict[str, Any]:
    """Rates of ``cfg``'s training path, its evaluation, and (``reference``) PyTorch's in alternating blocks.

    ``baseline``: another configuration's bench, timed in a block after each of ours; ``vs_baseline`` is the median
    of the per-pair rate ratios. This host's speed drifts by ±20% over minutes, so a ratio of two rates measured
    minutes apart (one configuration after the other) is mostly drift; adjacent blocks see the same machine.
    """
    ours = PaddleBench(cfg)
    if warmup:
        ours.train(warmup)
    result: dict[str, Any] = {"model": cfg["Arch"]["name"], "dataset": cfg["Data"]["name"],
                              "batch_size": cfg["Data"]["batch_size"], "steps": steps, "pairs": pairs,
                              "fast": cfg["Global"]["fast"], "threads": cfg["Global"]["threads"], "device": ours.exp.device}
    ref = None
    if reference in ("torch", "torch-compile"):
        ref = TorchBench(cfg, ours.exp.train_data, torch_threads, compiled=reference == "torch-compile")
        if warmup:
            ref.train(warmup)
        result["torch_threads"] = ref.torch.get_num_threads()
        result["torch"] = ref.torch.__version__ + (" (torch.compile)" if reference == "torch-compile" else " (eager)")
    ours_ips, ref_ips, ratios, base_ratios = [], [], [], []
    for _ in range(pairs):
        ours_ips.append(ours.train(steps))
        if ref is not None:
            ref_ips.append(ref.train(steps))
            ratios.append(ours_ips[-1] / ref_ips[-1])
        if baseline is not None:
            base_ratios.append(ours_ips[-1] / baseline.train(steps))
    result["train_images_per_second"] = statistics.median(ours_ips)
    if baseline is not None:
        result["vs_baseline"] = statistics.median(base_ratios)
        result["baseline_ratios"] = [round(r, 3) for r in base_ratios]
    ours.evaluate()
    result["eval_images_per_second"] = statistics.median([ours.evaluate() for _ in range(3)])
    if ref is not None:
        result["torch_train_images_per_second"] = statistics.median(ref_ips)
        result["ratio_vs_torch"] = statistics.median(ratios)
        result["ratios"] = [round(r, 3) for r in ratios]
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["isa"] = ops.isa()
    result["train_gflops"] = round(3 * ours.exp.flops() * result["train_images_per_second"] / 1e9, 2)  # fwd + 2× bwd
    return result


FAMILY = [("LeNet", {}), ("LeNet_nopool", {})] + [(f"LeNet pool={p}", {"pool": p}) for p in
          ("avg", "lp", "mixed", "stochastic", "soft", "lip", "dpp")] + [
    ("LeNet head=gap", {"head": "gap"}), ("LeNet5_classic", {}), ("LeNet_BN", {}), ("LeNet_BN_strided", {})]


def benchmark_family(cfg: dict[str, Any], steps: int, warmup: int, pairs: int, reference: str | None,
                     torch_threads: int | None) -> list[dict[str, Any]]:
    """:func:`benchmark` for every LeNet-family configuration, one after the other, same data and settings.

    The torch reference runs only for the notebook's models (it has no other operators). ``vs_lenet``: each
    configuration's blocks alternate with blocks of max-pool LeNet (kept built), and the ratio is the median of the
    adjacent pairs' — not the quotient of two rates measured minutes apart.
    """
    import copy

    def config(label: str, arch: dict[str, str]) -> dict[str, Any]:
        c = copy.deepcopy(cfg)
        c["Arch"].update(name=label.split(" ")[0], pool=arch.get("pool"), head=arch.get("head"), pool_p=None)
        return c

    lenet = PaddleBench(config(*FAMILY[0]))
    if warmup:
        lenet.train(warmup)
    rows = []
    for label, arch in FAMILY:
        name = label.split(" ")[0]
        ref = reference if name in TORCH_MODELS and "pool" not in arch and "head" not in arch else None
        r = benchmark(config(label, arch), steps, warmup, pairs, ref, torch_threads, baseline=lenet)
        r["label"] = label
        r["vs_lenet"] = r.pop("vs_baseline")
        r["vs_lenet_ratios"] = r.pop("baseline_ratios")
        rows.append(r)
        print(f"{label}: {r['train_images_per_second']:,.0f} img/s, {r['vs_lenet']:.2f}x LeNet", flush=True)
    return rows
