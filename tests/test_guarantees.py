"""The README's "Guarantees", each as a real subprocess test: one owner per run folder, honest resume,
damaged checkpoints, overwrite that only touches the package's files, signals from the first instant, a full
disk, eval/export that read the run, predict with bad files, benchmark step counting, the dashboard."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from .conftest import MNIST5K, ROOT, metrics, mnist_args, one_error_line, read_vdl, start_dashboard, tool


@pytest.fixture(scope="module")
def run2(tmp_path_factory) -> str:
    """LeNet, 2 epochs on MNIST5k, finished."""
    out = str(tmp_path_factory.mktemp("g"))
    tool("train", *mnist_args(out, "r", "configs/lenet.yml", 2), check=True)
    return out


def test_second_process_into_a_run_folder_is_refused(tmp_path) -> None:
    args = [sys.executable, os.path.join(ROOT, "tools", "train.py"), *mnist_args(str(tmp_path), "x", "configs/lenet.yml", 3)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in first.stdout:
        if "epoch 1/3 step" in line:
            first.send_signal(signal.SIGSTOP)  # frozen mid-run, holding the folder
            break
    try:
        p = tool("train", *mnist_args(str(tmp_path), "x", "configs/lenet.yml", 3), "-o", "Global.overwrite=true")
    finally:
        first.send_signal(signal.SIGCONT)
    one_error_line(p, 2, "is in use by PID", str(first.pid))
    first.stdout.read()
    assert first.wait(timeout=300) == 0
    m = metrics(str(tmp_path), "x")
    cfg = open(os.path.join(tmp_path, "x", "config.yml")).read()
    assert m["epochs"] == 3 and "overwrite: false" in cfg  # the first run's files, untouched by the second


def test_resume_cannot_shrink_a_run_but_can_extend_it(run2, tmp_path) -> None:
    shutil.copytree(os.path.join(run2, "r"), tmp_path / "r")
    one_error_line(tool("train", *mnist_args(str(tmp_path), "r", "configs/lenet.yml", 1), "-o", "Global.resume=true"),
                   2, "already trained 2 epochs")
    assert metrics(str(tmp_path), "r")["epochs"] == 2
    tool("train", *mnist_args(str(tmp_path), "r", "configs/lenet.yml", 3), "-o", "Global.resume=true", check=True)
    ext = metrics(str(tmp_path), "r")
    tool("train", *mnist_args(str(tmp_path), "fresh", "configs/lenet.yml", 3), check=True)
    fresh = metrics(str(tmp_path), "fresh")
    assert ext["epochs"] == 3 and ext["steps"] == fresh["steps"]
    assert (ext["loss"], ext["acc_top1"], ext["history"]) == (fresh["loss"], fresh["acc_top1"], fresh["history"])


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(run2, tmp_path) -> None:
    shutil.copytree(os.path.join(run2, "r"), tmp_path / "r")
    os.remove(tmp_path / "r" / "metrics.json")
    p = tmp_path / "r" / "checkpoints" / "epoch_2.pdparams"
    p.write_bytes(p.read_bytes()[:1000])  # truncated by a disk error
    r = tool("train", *mnist_args(str(tmp_path), "r", "configs/lenet.yml", 2), "-o", "Global.resume=true", check=True)
    assert "checkpoint 'epoch_2'" in r.stderr and "falling back to 'epoch_1'" in r.stderr and "Traceback" not in r.stderr
    assert metrics(str(tmp_path), "r")["acc_top1"] == metrics(run2, "r")["acc_top1"]  # epoch 2 re-trained exactly


def test_eval_of_a_damaged_final_checkpoint_is_one_line(run2, tmp_path) -> None:
    shutil.copytree(os.path.join(run2, "r"), tmp_path / "r")
    (tmp_path / "r" / "checkpoints" / "final.pdparams").write_bytes(b"\x80garbage")
    one_error_line(tool("eval", "-c", str(tmp_path / "r")), 2, "cannot be used")


def test_overwrite_removes_only_the_packages_files(run2, tmp_path) -> None:
    shutil.copytree(os.path.join(run2, "r"), tmp_path / "r")
    mine = [tmp_path / "r" / "notes.txt", tmp_path / "r" / "checkpoints" / "my_model.pdparams",
            tmp_path / "r" / "vdl" / "keep.me"]
    for f in mine:
        f.write_text("user data")
    tool("train", *mnist_args(str(tmp_path), "r", "configs/lenet.yml", 1), "-o", "Global.overwrite=true", check=True)
    assert all(f.read_text() == "user data" for f in mine)
    assert metrics(str(tmp_path), "r")["epochs"] == 1
    assert not (tmp_path / "r" / "checkpoints" / "epoch_2.pdparams").exists()


def test_failed_start_leaves_nothing_and_the_corrected_command_runs(tmp_path) -> None:
    p = tool("train", *mnist_args(str(tmp_path), "x", "configs/lenet.yml", 1), "-o", "Arch.name=LeNet5_classic",
             "-o", "Arch.head=gap")
    one_error_line(p, 2, "no option Arch.head")
    assert not (tmp_path / "x").exists()
    tool("train", *mnist_args(str(tmp_path), "x", "configs/lenet.yml", 1), check=True)


@pytest.mark.parametrize("delay", [0.0, 1.0])
def test_signal_at_start_up_exits_130_in_one_line(tmp_path, delay: float) -> None:
    """SIGINT while paddle is being imported (0.0) and a moment later: exit 130, one line, nothing left behind.

    Six epochs: with faster kernels one epoch of MNIST5k ended within the second, and the test skipped."""
    args = [sys.executable, os.path.join(ROOT, "tools", "train.py"), *mnist_args(str(tmp_path), "x", "configs/lenet.yml", 6)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # the tool's code runs before paddle is imported: wait for paddle's library
        try:
            if "libpaddle" in open(f"/proc/{proc.pid}/maps").read():
                break
        except OSError:
            break
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "SIGINT" in err
    assert not os.path.exists(os.path.join(tmp_path, "x", "metrics.json"))
    # the same command continues (from a checkpoint if training had begun, else from the start)
    tool("train", *mnist_args(str(tmp_path), "x", "configs/lenet.yml", 6), "-o", "Global.resume=true", check=True)


@contextlib.contextmanager
def small_tmpfs(folder, options: str):
    """A real file system with ``options`` (``size=1m``: nearly full; ``ro``: read-only) mounted at ``folder``."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield str(folder)
    finally:
        subprocess.run(["umount", str(folder)])


def test_full_disk_is_one_line_and_leaves_no_tmp(tmp_path) -> None:
    with small_tmpfs(tmp_path / "small", "size=1m") as mnt:
        one_error_line(tool("train", *mnist_args(mnt, "x", "configs/lenet.yml", 1)), 2, "No space left on device",
                       "free some space")
        left = [os.path.join(d, f) for d, _, fs in os.walk(mnt) for f in fs if ".tmp" in f]
        assert not left, left


def test_read_only_file_system_is_one_line(tmp_path) -> None:
    with small_tmpfs(tmp_path / "ro", "ro,size=1m") as mnt:
        one_error_line(tool("train", *mnist_args(mnt, "x", "configs/lenet.yml", 1)), 2, "Read-only file system",
                       "choose a writable -o Global.output_dir")


def test_ctrl_c_during_the_kernel_build_then_a_clean_rebuild(tmp_path) -> None:
    """SIGINT while the kernels compile: exit 130, no traceback; the next run builds them and trains."""
    env = dict(os.environ, PADDLE_EXTENSION_DIR=str(tmp_path / "ext"), PYTHONUNBUFFERED="1")
    args = [sys.executable, os.path.join(ROOT, "tools", "train.py"), *mnist_args(str(tmp_path), "x", "configs/lenet.yml", 1)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if "compiling the fast CPU kernels" in line:
            time.sleep(2)  # the compiler is running now
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().splitlines()[-1].startswith("stopped: SIGINT")
    # the compiler (paddle's loader runs it in a shell, a setup script and g++) stops with the process: left running,
    # it went on writing the cache while the next process built there too, and replaced the library under its stamp
    def builders() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                if str(tmp_path / "ext") in cmd:
                    found.append(cmd[:200])
        return found
    deadline = time.time() + 10
    while builders() and time.time() < deadline:
        time.sleep(0.1)
    assert not builders(), builders()
    p = tool("train", *mnist_args(str(tmp_path), "x", "configs/lenet.yml", 1), "-o", "Global.resume=true",
             env={"PADDLE_EXTENSION_DIR": env["PADDLE_EXTENSION_DIR"]}, check=True)
    assert "unavailable" not in p.stderr  # the kernels were built, not given up on
    assert metrics(str(tmp_path), "x")["acc_top1"] > 0.8
    # later processes load the built library without paddle's loader (it rewrites its setup script each time it
    # runs, and runs a child Python: ~3 s a process); a stamp that does not match sends them through the loader
    (folder,) = [f for f in (tmp_path / "ext").iterdir() if f.is_dir()]
    (setup,) = (tmp_path / "ext").glob("*_setup.py")
    probe = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from paddle_lenet import ops; "
             "print(ops.kernels() is not None)", ROOT]
    before = setup.stat().st_mtime_ns
    for stamp in (None, "{}"):
        if stamp is not None:
            (folder / "paddle_lenet_built.json").write_text(stamp)
        p = subprocess.run(probe, capture_output=True, text=True, env=env, timeout=120)
        assert p.stdout.split()[-1] == "True", p.stderr[-2000:]
        assert (setup.stat().st_mtime_ns == before) == (stamp is None)
    assert json.loads((folder / "paddle_lenet_built.json").read_text())["size"] > 0  # the loader stamped it again


def test_eval_and_export_read_the_run(run2, tmp_path) -> None:
    """Trained on a copy of the MNIST files via Data.root: eval/export need no override; other data is refused."""
    data = tmp_path / "mnist"
    shutil.copytree(MNIST5K, data)
    out = str(tmp_path / "o")
    tool("train", "-c", os.path.join(ROOT, "configs/lenet.yml"), "-o", "Data.name=MNIST", "-o", f"Data.root={data}",
         "-o", f"Global.output_dir={out}", "-o", "Global.name=m", "-o", "Global.epochs=1", check=True)
    run = os.path.join(out, "m")
    ev = json.loads(tool("eval", "-c", run, check=True).stdout.strip().splitlines()[-1])
    assert ev["acc_top1"] == metrics(out, "m")["acc_top1"]
    # the same file names with other content (here: every test image mirrored) are another test set
    other = tmp_path / "other"
    shutil.copytree(MNIST5K, other)
    f = other / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    imgs = np.frombuffer(bytes(raw[16:]), np.uint8).reshape(-1, 28, 28)[:, :, ::-1]
    f.write_bytes(gzip.compress(bytes(raw[:16]) + imgs.tobytes()))
    one_error_line(tool("eval", "-c", run, "-o", f"Data.root={other}"), 2, "not the test set", "--other-data")
    one_error_line(tool("eval", "-c", run, "-o", "Data.name=MNIST5k", "-o", "Data.root=null"), 2, "trained on MNIST")
    ok = json.loads(tool("eval", "-c", run, "-o", f"Data.root={other}", "--other-data", check=True).stdout.splitlines()[-1])
    assert ok["acc_top1"] < ev["acc_top1"]
    shutil.rmtree(data)  # export needs no data: it verifies on random images then
    rep = json.loads(tool("export", "-c", run, "--out", str(tmp_path / "exp"), check=True).stdout.splitlines()[-1])
    assert "random images" in rep["verified_on"] and rep["paddle_inference_max_abs_diff"] < 1e-4


def test_predict_reports_bad_files_and_keeps_the_good(run2, tmp_path) -> None:
    exp = str(tmp_path / "exp")
    tool("export", "-c", os.path.join(run2, "r"), "--out", exp, check=True)
    from paddle_lenet.data import load_split

    data = load_split("MNIST5k", None, "test")
    good = [str(tmp_path / f"d{i}.png") for i in range(3)]
    for i, path in enumerate(good):
        Image.fromarray((data.images[i, 0] * 255).astype(np.uint8)).save(path)
    # the same digit with an alpha channel: white ink on a transparent background over... black ink on white
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = (data.images[0, 0] * 255).astype(np.uint8)  # black strokes, transparent elsewhere
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    p = tool("predict", "--model-dir", exp, good[0], str(bad), good[1], good[2], "--json")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    (err,) = p.stderr.strip().splitlines()
    assert "broken.png" in err and err.startswith("error: cannot read image")
    rows = [json.loads(line) for line in p.stdout.strip().splitlines()]
    assert [r["file"] for r in rows] == good
    assert [r["top1"] for r in rows] == [int(v) for v in data.labels[:3, 0]]
    inv = json.loads(tool("predict", "--model-dir", exp, str(tmp_path / "alpha.png"), "--invert", "--json",
                          check=True).stdout.splitlines()[0])
    assert inv["top1"] == int(data.labels[0, 0])  # composited over white, then inverted: the digit again


def test_benchmark_counts_steps_across_epochs(tmp_path) -> None:
    # MNIST5k with train_limit 640 has 10 batches of 64 per epoch: 25 steps span three epochs
    p = tool("benchmark", "-c", os.path.join(ROOT, "configs/lenet.yml"), "-o", "Data.name=MNIST5k",
             "-o", "Data.train_limit=640", "--steps", "25", "--warmup", "0", "--pairs", "1", "--json", check=True)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["steps"] == 25 and 0 < r["train_images_per_second"] < 200_000


def test_benchmark_ratios_come_from_adjacent_blocks() -> None:
    """--all's ratio to LeNet is the median of per-pair ratios of blocks that alternate with a LeNet bench (this host
    drifts by ±20% over minutes); every baseline block runs the steps it is asked for."""
    from paddle_lenet.bench import PaddleBench, benchmark
    from paddle_lenet.config import load_config

    over = ["Data.name=MNIST5k", "Data.train_limit=640", "Global.vdl=False"]
    base = PaddleBench(load_config(os.path.join(ROOT, "configs/lenet.yml"), over))
    r = benchmark(load_config(os.path.join(ROOT, "configs/lenet.yml"), over + ["Arch.pool=avg"]), steps=12, warmup=0,
                  pairs=3, reference=None, torch_threads=None, baseline=base)
    assert len(r["baseline_ratios"]) == 3 and all(0.05 < x < 20 for x in r["baseline_ratios"])
    assert r["vs_baseline"] == pytest.approx(sorted(r["baseline_ratios"])[1], abs=1e-3)  # the median of the three
    assert base.epoch == 6  # 3 blocks of 12 steps, each from a fresh epoch of 10 batches into the next one


def test_vdl_train_curves_are_per_batch(run2) -> None:
    acc = read_vdl(os.path.join(run2, "r", "vdl"), "train/acc_top1")
    # a batch of 64 (the last one: 32) has accuracies k/64 (k/32); hapi's running mean would not be
    assert all(abs(v * 64 - round(v * 64)) < 1e-4 for v in acc.values())
    assert len(acc) == 126 and min(acc.values()) < 0.5 < max(acc.values())


def test_dashboard_serves_every_locale_with_the_logged_values(run2) -> None:
    proc, base = start_dashboard(run2)
    try:

        def get(path: str, lang: str | None = None) -> tuple[int, bytes]:
            req = urllib.request.Request(base + path, headers={"Accept-Language": lang} if lang else {})
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()

        for lang in (None, "de-DE,de;q=0.9", "zh-CN", "fr"):
            assert get("/scalar", lang)[0] == 200
        status, body = get("/api/runs")
        assert status == 200 and json.loads(body)["data"] == ["r·M5k"]  # the run's name and data set, not r/vdl
        status, body = get("/api/scalar/list?run=" + urllib.parse.quote("r·M5k") + "&tag=eval/acc_top1")
        got = [round(v, 6) for _, _, v in json.loads(body)["data"]]
        assert got == [round(h["acc_top1"], 6) for h in metrics(run2, "r")["history"]]
        status, body = get("/api/hparams/list")
        hp = json.loads(body)["data"][0]["hparams"]
        assert status == 200 and hp["model"] == "LeNet" and hp["seed"] == 0 and hp["lr"] == 0.001  # names without dots
        assert not [k for k in hp if "." in k]  # VisualDL's table shows nothing for dotted names
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr.read()
