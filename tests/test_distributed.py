"""Issue 6: data-parallel training with paddle.distributed.launch, 2 CPU processes (gloo)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from .conftest import ROOT, metrics, mnist_args


def test_launch_two_cpu_processes(tmp_path) -> None:
    out = str(tmp_path)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", f"{out}/log",
           os.path.join(ROOT, "tools", "train.py"), *mnist_args(out, "ddp", "configs/lenet.yml", 2)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
    logs = {os.path.basename(f): open(f).read() for f in glob.glob(f"{out}/log/workerlog.*")}
    assert p.returncode == 0, (p.stdout[-2000:], {k: v[-2000:] for k, v in logs.items()})
    m = metrics(out, "ddp")
    assert m["world_size"] == 2
    assert m["steps"] == 2 * 32  # each rank takes half of 4,000 images: 32 batches of 64 per epoch
    assert m["acc_top1"] >= 0.85 and m["test_samples"] == 1000  # eval covers the whole test set
    assert len(glob.glob(f"{out}/ddp/vdl/vdlrecords*")) == 1  # one writer: rank 0
    assert "epoch 2/2" in logs["workerlog.0"] and "epoch 2/2" not in logs["workerlog.1"]
    assert sorted(os.listdir(f"{out}/ddp/checkpoints"))[0].startswith("epoch_1")
    with open(f"{out}/ddp/metrics.json") as f:
        assert json.load(f)["loss"] == m["loss"]
