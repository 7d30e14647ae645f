"""Shared helpers: real subprocess runs of the tools on the bundled real MNIST subset (mnist-5k)."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST5K = os.path.join(ROOT, "paddle_lenet", "datasets", "mnist5k")  # the files behind Data.name=MNIST5k
warnings.filterwarnings("ignore", message=".*ccache.*")


def tool(name: str, *args: str, timeout: float = 600, env: dict | None = None, check: bool = False,
         cwd: str = ROOT) -> subprocess.CompletedProcess:
    """Run ``tools/<name>.py`` as users do; returns the finished process (text output)."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", f"{name}.py"), *args], capture_output=True,
                       text=True, timeout=timeout, env=e, cwd=cwd)
    if check and p.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def one_error_line(p: subprocess.CompletedProcess, code: int = 2, *needles: str) -> str:
    """The tool exited ``code`` with exactly one stderr line, no traceback, holding every needle."""
    assert p.returncode == code, (p.returncode, p.stdout[-1500:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def mnist_args(out: str, name: str, config: str = "configs/lenet.yml", epochs: int = 2, *extra: str) -> list[str]:
    return ["-c", os.path.join(ROOT, config), "-o", "Data.name=MNIST5k", "-o", f"Global.output_dir={out}",
            "-o", f"Global.name={name}", "-o", f"Global.epochs={epochs}", "-o", "Global.print_every=10", *extra]


def metrics(out: str, name: str) -> dict[str, Any]:
    with open(os.path.join(out, name, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def read_vdl(logdir: str, tag: str) -> dict[int, float]:
    """All records of ``tag`` across every VisualDL file of a run (a resumed run adds a file)."""
    from visualdl import LogReader

    out: dict[int, float] = {}
    for f in sorted(glob.glob(os.path.join(logdir, "vdlrecords*"))):
        reader = LogReader(file_path=f)
        if tag in reader.get_tags().get("scalar", []):
            for rec in reader.get_data("scalar", tag):
                out[rec.id] = rec.value
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Both notebook models trained 2 epochs on mnist-5k through tools/train.py (shared by tests)."""
    out = str(tmp_path_factory.mktemp("runs"))
    for cfg, name in (("configs/lenet.yml", "lenet"), ("configs/lenet_nopool.yml", "lenet_nopool")):
        tool("train", *mnist_args(out, name, cfg, 2), check=True)
    return out


def start_dashboard(logdir: str) -> tuple[subprocess.Popen, str]:
    """``tools/dashboard.py`` on a free port, once it answers; returns the process (the caller stops it) and the
    app's base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "dashboard.py"), "--logdir", logdir,
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/app"
    for _ in range(120):
        try:
            urllib.request.urlopen(base + "/api/runs", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    return proc, base
