"""Issue 3: one-line errors with exit 2, determinism, atomic checkpoints and exact resume."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .conftest import MNIST5K, ROOT, metrics, mnist_args, read_vdl, tool


def assert_user_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("override,needle", [
    ("Global.epochz=1", "did you mean 'Global.epochs'"),
    ("Global.epochs=ten", "Global.epochs must be int"),
    ("Arch.name=LeNet9", "registered models: LeNet, LeNet_nopool"),
    ("Data.name=SVHN", "Data.name='SVHN' is not valid"),
    ("Global.epochs", "malformed override"),
    ("Arch.name=All_CNN_C", "built for 3×32×32 input"),
])
def test_config_errors_exit_2_and_write_nothing(tmp_path, override: str, needle: str) -> None:
    out = tmp_path / "out"
    assert_user_error(tool("train", *mnist_args(str(out), "x"), "-o", override), needle)
    assert not out.exists()


def test_missing_and_broken_config_file(tmp_path) -> None:
    assert_user_error(tool("train", "-c", str(tmp_path / "none.yml")), "not found")
    bad = tmp_path / "bad.yml"
    bad.write_text("Global: {epochs: 1\n")
    assert_user_error(tool("train", "-c", str(bad)), "not valid YAML")


def _corrupt(folder, how: str) -> None:
    img = folder / "t10k-images-idx3-ubyte.gz"
    lab = folder / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(img.read_bytes())
    if how == "missing":
        img.unlink()
    elif how == "truncated":
        img.write_bytes(img.read_bytes()[:5000])
    elif how == "not_gzip":
        img.write_bytes(b"this is not a gzip file" * 100)
    elif how == "magic":
        img.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))
    elif how == "count":
        labels = gzip.decompress(lab.read_bytes())
        lab.write_bytes(gzip.compress(labels[:4] + (900).to_bytes(4, "big") + labels[8:908]))


@pytest.mark.parametrize("how,needle", [
    ("missing", "t10k-images-idx3-ubyte.gz' is missing"),
    ("truncated", "is truncated"),
    ("not_gzip", "is not a valid gzip file"),
    ("magic", "magic number is not 2051"),
    ("count", "has 1000 images but"),
])
def test_data_errors(tmp_path, how: str, needle: str) -> None:
    data = tmp_path / "data"
    shutil.copytree(MNIST5K, data)
    _corrupt(data, how)
    out = tmp_path / "out"
    args = mnist_args(str(out), "x") + ["-o", "Data.name=MNIST", "-o", f"Data.root={data}"]
    assert_user_error(tool("train", *args), needle)
    assert not out.exists()


def test_missing_root_and_offline_download(tmp_path) -> None:
    assert_user_error(tool("train", *mnist_args(str(tmp_path), "x"), "-o", "Data.name=MNIST", "-o", f"Data.root={tmp_path}/nope"),
                      "is not a folder")
    t = time.time()
    p = tool("train", "-c", os.path.join(ROOT, "configs/lenet.yml"), "-o", f"Global.output_dir={tmp_path}/o",
             env={"HOME": str(tmp_path)}, timeout=120)  # empty paddle cache: it must try to download
    assert_user_error(p, "could not download MNIST", "-o Data.root=", "-o Data.name=MNIST5k")
    assert time.time() - t < 60


def _train_and_kill(args: list[str], when: str, sig: int) -> int:
    """Start a run, send ``sig`` once its output shows ``when``; returns the exit code."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    for line in proc.stdout:
        if when in line:
            proc.send_signal(sig)
            break
    proc.communicate(timeout=300)
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, list[str]]:
    out = str(tmp_path_factory.mktemp("trust"))
    args = ["-o", "Global.epochs=3"]
    tool("train", *mnist_args(out, "ref", "configs/lenet_nopool.yml", 3), check=True)
    return out, args


def test_same_seed_same_numbers_other_seed_differs(reference) -> None:
    out, _ = reference
    tool("train", *mnist_args(out, "again", "configs/lenet_nopool.yml", 3), check=True)
    tool("train", *mnist_args(out, "seed1", "configs/lenet_nopool.yml", 3, "-o", "Global.seed=1"), check=True)
    ref, again, other = metrics(out, "ref"), metrics(out, "again"), metrics(out, "seed1")
    keys = ("loss", "acc_top1", "acc_top2")
    assert [ref[k] for k in keys] == [again[k] for k in keys]
    assert ref["loss"] != other["loss"]


def test_sigkill_mid_epoch_then_resume_is_exact(reference) -> None:
    out, _ = reference
    args = mnist_args(out, "killed", "configs/lenet_nopool.yml", 3)
    assert _train_and_kill(args, "epoch 2/3 step 30", signal.SIGKILL) == -signal.SIGKILL
    ck = os.listdir(os.path.join(out, "killed", "checkpoints"))
    assert "epoch_1.pdstate" in ck and "epoch_2.pdstate" not in ck and not os.path.exists(
        os.path.join(out, "killed", "metrics.json"))
    p = tool("train", *args, "-o", "Global.resume=true", check=True)
    assert "resuming" in p.stdout and "after epoch 1" in p.stdout
    ref, got = metrics(out, "ref"), metrics(out, "killed")
    assert (got["loss"], got["acc_top1"], got["acc_top2"], got["steps"]) == (
        ref["loss"], ref["acc_top1"], ref["acc_top2"], ref["steps"])
    steps = read_vdl(os.path.join(out, "killed", "vdl"), "train/loss")
    assert sorted(steps) == list(range(1, 3 * 63 + 1))  # steps continue, no restart at 0
    assert steps == read_vdl(os.path.join(out, "ref", "vdl"), "train/loss")


def test_sigint_checkpoints_and_resumes_exactly(reference) -> None:
    out, _ = reference
    args = mnist_args(out, "int", "configs/lenet_nopool.yml", 3)
    rc = _train_and_kill(args, "epoch 1/3 step 20", signal.SIGINT)
    assert rc == 130
    ck = os.listdir(os.path.join(out, "int", "checkpoints"))
    assert any(c.startswith("epoch_0_step_") and c.endswith(".pdstate") for c in ck), ck
    tool("train", *args, "-o", "Global.resume=true", check=True)
    ref, got = metrics(out, "ref"), metrics(out, "int")
    assert (got["loss"], got["acc_top1"], got["acc_top2"]) == (ref["loss"], ref["acc_top1"], ref["acc_top2"])
    assert got["history"] == ref["history"]  # per-epoch train_loss included: the running sums were checkpointed
    assert not [c for c in os.listdir(os.path.join(out, "int", "checkpoints")) if "_step_" in c]


def test_finished_run_is_never_overwritten(reference) -> None:
    out, _ = reference
    path = os.path.join(out, "ref", "metrics.json")
    before = (os.path.getmtime(path), open(path).read())
    assert_user_error(tool("train", *mnist_args(out, "ref", "configs/lenet_nopool.yml", 3)),
                      "already holds a run", "Global.resume=true", "Global.overwrite=true")
    assert (os.path.getmtime(path), open(path).read()) == before
    assert_user_error(tool("train", *mnist_args(out, "ref", "configs/lenet_nopool.yml", 3, "-o", "Global.resume=true",
                                                "-o", "Optimizer.learning_rate=0.01")), "cannot resume")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    out = str(tmp_path)
    p = tool("train", *mnist_args(out, "nan", "configs/lenet.yml", 3, "-o", "Optimizer.learning_rate=1e12",
                                  "-o", "Optimizer.name=SGD"))
    assert p.returncode == 3, p.stderr[-2000:]
    assert "loss became" in p.stderr and "step" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(os.path.join(out, "nan", "metrics.json"))


def test_overwrite_replaces_the_run(tmp_path) -> None:
    out = str(tmp_path)
    tool("train", *mnist_args(out, "ow", "configs/lenet.yml", 2), check=True)
    tool("train", *mnist_args(out, "ow", "configs/lenet.yml", 1, "-o", "Global.overwrite=true"), check=True)
    assert metrics(out, "ow")["epochs"] == 1
    ck = sorted(os.listdir(os.path.join(out, "ow", "checkpoints")))
    assert not [c for c in ck if c.startswith("epoch_2")] and "epoch_1.pdparams" in ck
    assert sorted(read_vdl(os.path.join(out, "ow", "vdl"), "train/loss")) == list(range(1, 64))


def test_download_checks_md5_and_leaves_nothing_partial(tmp_path) -> None:
    """The download path against a real HTTP server on loopback (no internet needed)."""
    import functools
    import hashlib
    import http.server
    import threading

    from paddle_lenet.data import _download
    from paddle_lenet.errors import DataError

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=MNIST5K)
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        name = "t10k-labels-idx1-ubyte.gz"
        url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
        md5 = hashlib.md5(open(os.path.join(MNIST5K, name), "rb").read()).hexdigest()
        _download(url, md5, str(tmp_path / "ok" / name), "MNIST")
        assert (tmp_path / "ok" / name).read_bytes() == open(os.path.join(MNIST5K, name), "rb").read()
        with pytest.raises(DataError, match="corrupt"):
            _download(url, "0" * 32, str(tmp_path / "bad" / name), "MNIST")
        assert os.listdir(tmp_path / "bad") == []
        with pytest.raises(DataError, match="could not download MNIST.*Data.root"):
            _download(url + ".missing", None, str(tmp_path / "404" / name), "MNIST")
    finally:
        server.shutdown()
