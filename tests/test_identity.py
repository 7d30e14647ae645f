"""Runs carry their identity, files from elsewhere cannot run code, the library leaves its host alone (issue 18)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from paddle_lenet import checkpoint as ckpt
from paddle_lenet.config import POOLS, load_config, parse_override

from .conftest import MNIST5K, ROOT, mnist_args, one_error_line, tool


@pytest.fixture(scope="module")
def seeds01(tmp_path_factory) -> str:
    """LeNet on mnist-5k, 1 epoch, seeds 0 and 1 (two runs whose checkpoints have the same shapes)."""
    out = str(tmp_path_factory.mktemp("ids"))
    for seed in (0, 1):
        tool("train", *mnist_args(out, f"s{seed}", "configs/lenet.yml", 1), "-o", f"Global.seed={seed}",
             "-o", "Data.train_limit=512", check=True)
    return out


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # what a crafted pickle does: call os.system on load
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_weights_file_runs_nothing(seeds01, tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(pickle.dumps({"conv1.weight": _Exploit(str(marker))}))
    with pytest.raises(pickle.UnpicklingError, match="refused to load posix.system|refused to load os.system"):
        ckpt.safe_load(str(evil))
    p = tool("eval", "-c", os.path.join(seeds01, "s0"), "-o", f"Global.checkpoint={evil}")
    one_error_line(p, 2, "cannot be used", "refused to load")
    run = tmp_path / "r"
    shutil.copytree(os.path.join(seeds01, "s0"), run)
    shutil.copy(evil, run / "checkpoints" / "final.pdparams")
    one_error_line(tool("eval", "-c", str(run)), 2, "not the file its checkpoint recorded")
    (run / "checkpoints" / "epoch_1.pdstate").write_bytes(pickle.dumps(_Exploit(str(marker))))  # an old pickled state
    os.remove(run / "metrics.json")
    p = tool("train", *mnist_args(str(tmp_path), "r", "configs/lenet.yml", 1), "-o", "Data.train_limit=512",
             "-o", "Global.resume=true")
    one_error_line(p, 2, "no checkpoint", "is usable")
    assert not marker.exists()


def test_a_checkpoint_of_another_run_or_an_edited_config_is_refused_by_name(seeds01, tmp_path) -> None:
    run = tmp_path / "r"
    shutil.copytree(os.path.join(seeds01, "s0"), run)
    for ext in (".pdparams", ".pdopt", ".pdstate"):  # seed 1's whole checkpoint in seed 0's place
        shutil.copy(os.path.join(seeds01, "s1", "checkpoints", "final" + ext), run / "checkpoints" / ("final" + ext))
    for t in ("eval", "export"):
        extra = ["--out", str(tmp_path / "exp")] if t == "export" else []
        one_error_line(tool(t, "-c", str(run), *extra), 2, "Global.seed=1", "the run's config says 0")
    run2 = tmp_path / "r2"
    shutil.copytree(os.path.join(seeds01, "s0"), run2)
    cfg = (run2 / "config.yml").read_text()
    (run2 / "config.yml").write_text(cfg.replace("learning_rate: 0.001", "learning_rate: 0.01"))
    one_error_line(tool("eval", "-c", str(run2)), 2, "Optimizer.learning_rate=0.001", "0.01")
    os.remove(run2 / "config.yml")
    one_error_line(tool("eval", "-c", str(run2)), 2, "without config.yml")


def test_non_finite_weights_are_refused(seeds01, tmp_path) -> None:
    run = tmp_path / "r"
    shutil.copytree(os.path.join(seeds01, "s0"), run)
    base = str(run / "checkpoints" / "final")
    weights = ckpt.safe_load(base + ".pdparams")
    weights["conv1.weight"] = np.full_like(weights["conv1.weight"], np.nan)
    paddle.save(weights, base + ".pdparams")
    state = json.load(open(base + ".pdstate"))
    state["sha256"]["pdparams"] = ckpt.sha256(base + ".pdparams")  # a consistent record of NaN weights
    json.dump(state, open(base + ".pdstate", "w"))
    one_error_line(tool("eval", "-c", str(run)), 2, "non-finite weights", "conv1.weight")
    one_error_line(tool("export", "-c", str(run), "--out", str(tmp_path / "e")), 2, "non-finite weights")
    assert not (tmp_path / "e").exists()


def test_arithmetic_is_recorded_and_never_mixed_on_resume(seeds01, tmp_path) -> None:
    m = json.load(open(os.path.join(seeds01, "s0", "metrics.json")))
    assert m["arithmetic"]["kernels"] and m["arithmetic"]["fast"] is True and m["arithmetic"]["isa"]
    # the BLAS path recorded is the one a fresh process takes after the engine's MKL request: the run asked in time
    fresh = subprocess.run([sys.executable, "-c", "from paddle_lenet import ops; ops.use_mkl_avx2(); print(ops.blas())"],
                           capture_output=True, text=True, cwd=ROOT, env={k: v for k, v in os.environ.items()
                                                                          if k != "MKL_DEBUG_CPU_TYPE"})
    assert m["arithmetic"]["blas"] == fresh.stdout.split()[-1]
    run = tmp_path / "r"
    shutil.copytree(os.path.join(seeds01, "s0"), run)
    args = mnist_args(str(tmp_path), "r", "configs/lenet.yml", 2) + ["-o", "Data.train_limit=512", "-o", "Global.resume=true"]
    one_error_line(tool("train", *args, env={"PADDLE_LENET_NO_KERNELS": "1"}), 2, "Paddle's own ops", "equals neither")
    one_error_line(tool("train", *args, "-o", "Global.eval_every=2"), 2, "Global.eval_every")


def test_every_pooling_operator_exports_and_predicts(tmp_path) -> None:
    """The accelerated model traced by paddle.jit.save runs its plain graph: standard ops Paddle Inference runs."""
    from paddle_lenet.engine import Experiment
    from paddle_lenet.export import make_predictor, run_predictor

    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    for pool, extra in [(p, []) for p in POOLS] + [("lp", ["Arch.pool_p=64"])]:
        exp = Experiment(load_config(os.path.join(ROOT, "configs", "lenet.yml"),
                                     ["Data.name=MNIST5k", f"Arch.pool={pool}", *extra]), load_train=False, load_test=False)
        exp.net.eval()
        d = str(tmp_path / f"{pool}{len(extra)}")
        paddle.jit.save(exp.net, d + "/model", input_spec=[paddle.static.InputSpec([None, 1, 28, 28], "float32")])
        with paddle.no_grad():
            ref = exp.net(paddle.to_tensor(x)).numpy()
        out = run_predictor(make_predictor(d), x)
        assert np.isfinite(out).all() and np.abs(out - ref).max() < 1e-4, pool


def test_overrides_keep_text_as_typed() -> None:
    assert parse_override("Data.root=/data/mnist #fashion") == ("Data", "root", "/data/mnist #fashion")
    assert parse_override("Global.output_dir=/runs #2") == ("Global", "output_dir", "/runs #2")
    assert parse_override("Data.root=null") == ("Data", "root", None)
    from paddle_lenet.errors import ConfigError

    with pytest.raises(ConfigError, match="comment"):
        parse_override("Global.epochs=3 #4")


def test_digits_recorded_as_garments_are_refused(tmp_path) -> None:
    p = tool("train", "-c", os.path.join(ROOT, "configs", "lenet.yml"), "-o", "Data.name=FashionMNIST",
             "-o", f"Data.root={MNIST5K}", "-o", f"Global.output_dir={tmp_path}")
    one_error_line(p, 2, "look like MNIST", "Data.name=MNIST")
    assert not os.listdir(tmp_path)


LIBRARY_SCRIPT = textwrap.dedent("""
    import os, signal, sys, json
    import numpy as np
    hits = []
    def mine(signum, frame):
        hits.append(signum)
    signal.signal(signal.SIGINT, mine)
    signal.signal(signal.SIGTERM, mine)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    import paddle_lenet, paddle_lenet.engine, paddle_lenet.study
    assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine, "import changed them"
    cfg = paddle_lenet.load_config(sys.argv[1], sys.argv[2:])
    metrics = paddle_lenet.train(cfg, quiet=True)
    run = paddle_lenet.load_run(os.path.join(cfg["Global"]["output_dir"], cfg["Global"]["name"]))
    assert paddle_lenet.evaluate(run)["acc_top1"] == metrics["acc_top1"], "the loaded run is not the trained one"
    assert np.random.random() == before, "the host's numpy generator was reseeded"
    assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine, "train kept its own"
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    print(json.dumps({"hits": hits, "acc": metrics["acc_top1"]}))
""")


def test_the_library_leaves_its_host_alone(tmp_path) -> None:
    script = tmp_path / "host.py"
    script.write_text(LIBRARY_SCRIPT)
    p = subprocess.run([sys.executable, str(script), os.path.join(ROOT, "configs", "lenet.yml"), "Data.name=MNIST5k",
                        "Global.epochs=1", "Data.train_limit=256", f"Global.output_dir={tmp_path}", "Global.vdl=false"],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(p.stdout.strip().splitlines()) == 1, p.stdout[-2000:]  # quiet=True printed nothing
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["hits"] == [signal.SIGINT, signal.SIGTERM] and 0 < out["acc"] <= 1


def test_environment_that_used_to_break_tools(seeds01, tmp_path) -> None:
    """A read-only $HOME (VisualDL's ~/.visualdl), stray rank variables, a C locale, PYTHONWARNINGS=error."""
    blocker = tmp_path / "afile"
    blocker.write_text("a file where a folder would be")
    home = blocker / "home"  # nothing can be created below it, not even by root (the tests may run as root)
    args = mnist_args(str(tmp_path), "ro", "configs/lenet.yml", 1) + ["-o", "Data.train_limit=256"]
    p = tool("train", *args, env={"HOME": str(home), "PYTHONWARNINGS": "error", "LC_ALL": "C", "LANG": "C"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert os.listdir(tmp_path / "ro" / "vdl")
    one_error_line(tool("train", *args, "-o", "Global.name=rank", env={"PADDLE_TRAINER_ID": "1"}), 2,
                   "not started by paddle.distributed.launch")
    one_error_line(tool("eval", "-c", os.path.join(seeds01, "s0"), env={"PADDLE_TRAINERS_NUM": "x"}), 2,
                   "not integers")


def test_dashboard_refuses_names_busy_ports_and_garbage_logs_at_once(seeds01, tmp_path) -> None:
    import socket

    from paddle_lenet.dashboard import check_logs

    assert check_logs(seeds01) == 2  # the real logs of two runs pass
    (tmp_path / "vdl").mkdir()
    (tmp_path / "vdl" / "vdlrecords.1.log").write_bytes(b"\xff" * 64)  # claims 2^64 - 1 bytes
    one_error_line(tool("dashboard", "--logdir", str(tmp_path), "--port", "8093", timeout=60), 2, "not a whole VisualDL log")
    os.remove(tmp_path / "vdl" / "vdlrecords.1.log")
    one_error_line(tool("dashboard", "--logdir", str(tmp_path), "--host", "no.such.host", timeout=60), 2,
                   "not an IP address")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        one_error_line(tool("dashboard", "--logdir", str(tmp_path), "--port", str(port), timeout=60), 2,
                       "Address already in use")


def test_a_closed_output_pipe_does_not_stop_the_run(tmp_path) -> None:
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), *mnist_args(str(tmp_path), "p", "configs/lenet.yml", 1),
           "-o", "Data.train_limit=640"]
    p = subprocess.run(" ".join(f"'{c}'" for c in cmd) + " | head -1", shell=True, capture_output=True, text=True,
                       timeout=600)
    assert p.stdout.count("\n") == 1
    assert json.load(open(tmp_path / "p" / "metrics.json"))["epochs"] == 1  # trained to the end


def test_a_failed_export_check_keeps_the_previous_export(seeds01, tmp_path) -> None:
    from paddle_lenet import export
    from paddle_lenet.errors import TrainingStopped
    from paddle_lenet.runfolder import resolve_run_config

    cfg, _ = resolve_run_config(os.path.join(seeds01, "s0"), [])
    out = tmp_path / "exp"
    export.export_run(cfg, str(out))
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    tolerance = export.TOLERANCE
    export.TOLERANCE = -1.0  # every check fails
    try:
        with pytest.raises(TrainingStopped, match="previous export in the folder, if any, is unchanged"):
            export.export_run(cfg, str(out))
    finally:
        export.TOLERANCE = tolerance
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    assert not [f for f in os.listdir(tmp_path) if ".partial-" in f]  # no staging folder left behind


@pytest.mark.parametrize("name", ["eval", "export", "predict", "study"])
def test_sigterm_in_the_first_seconds_is_one_line_and_130(seeds01, tmp_path, name) -> None:
    import time

    args = {"eval": ["-c", os.path.join(seeds01, "s0")],
            "export": ["-c", os.path.join(seeds01, "s0"), "--out", str(tmp_path / "e")],
            "predict": ["--model-dir", str(tmp_path / "none"), str(tmp_path / "x.png")],
            "study": ["-c", os.path.join(ROOT, "configs", "study", "pooling_vs_stride.yml"), "-o", "Data.name=MNIST5k",
                      "-o", f"Global.output_dir={tmp_path}"]}[name]
    for delay in (0.6, 1.5):  # during paddle's import (its C-level handlers would kill the process silently, −15)
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", f"{name}.py"), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        if proc.returncode in (0, 2):  # it finished before the signal (a fast machine): nothing to check
            continue
        assert proc.returncode == 130, (delay, proc.returncode, err[-2000:])
        assert len(err.strip().splitlines()) == 1 and "SIGTERM" in err


def test_no_thread_can_take_a_signal_to_paddles_handlers_and_a_decided_exit_keeps_its_code() -> None:
    """The two ways the timing test above once saw −15 with no line, made deterministic.

    1. numpy's BLAS threads (started at numpy's import, before paddle's) took a SIGTERM that the main thread held
       back during paddle's import, and paddle's import-time C handler killed the process: after a tool's start and
       paddle's import, every thread but the main one holds SIGINT and SIGTERM back.
    2. Once the exit code is decided, a signal taken by a thread started later (the main thread holds them back) must
       not change it (nor, after shutdown restored SIG_DFL, kill the process with −15)."""
    script = textwrap.dedent("""
        import os, signal, sys, threading, time
        sys.path.insert(0, sys.argv[1])
        from paddle_lenet import cli
        cli.install_signal_handlers()
        import paddle_lenet.engine  # numpy, then paddle
        main, tasks = str(threading.get_native_id()), os.listdir("/proc/self/task")
        assert len(tasks) > 1, tasks  # OpenBLAS's thread at least: the check below is not vacuous
        for t in tasks:
            status = open(f"/proc/self/task/{t}/status").read()
            blocked = int(next(x for x in status.splitlines() if x.startswith("SigBlk:")).split()[1], 16)
            assert t == main or (blocked >> (signal.SIGTERM - 1)) & (blocked >> (signal.SIGINT - 1)) & 1, t
        threading.Thread(target=time.sleep, args=(0.5,)).start()  # a thread that holds nothing back
        def main_(argv):
            cli._hold_signals()  # what run() does once main() has returned
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            print("decided")
            return 0
        cli.run(main_)
    """)
    # paddle's import sets OMP_NUM_THREADS=1 in this (pytest's) process, which would leave OpenBLAS one thread, the
    # main one; a user's shell has two BLAS threads on two cores
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    p = subprocess.run([sys.executable, "-c", script, ROOT], capture_output=True, text=True, timeout=120,
                       env=dict(env, OPENBLAS_NUM_THREADS="2"))
    assert (p.returncode, p.stdout.strip()) == (0, "decided"), p.stderr[-2000:]
