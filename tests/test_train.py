"""Issue 2 end to end: both notebook models trained by tools/train.py on real MNIST (mnist-5k)."""

from __future__ import annotations

import json
import os

import yaml

from .conftest import ROOT, metrics, mnist_args, read_vdl, tool


def test_both_models_learn(trained: str) -> None:
    for name, model, params in (("lenet", "LeNet", 61706), ("lenet_nopool", "LeNet_nopool", 66346)):
        m = metrics(trained, name)
        assert m["model"] == model and m["params"] == params and m["epochs"] == 2 and m["dataset"] == "MNIST5k"
        assert m["acc_top1"] >= 0.90, m
        assert m["acc_top2"] >= m["acc_top1"] and 0 < m["loss"] < 0.5 and m["train_seconds"] > 0
        assert m["test_samples"] == 1000 and m["train_samples"] == 4000 and m["steps"] == 2 * 63


def test_run_folder_layout(trained: str) -> None:
    run = os.path.join(trained, "lenet")
    files = set(os.listdir(os.path.join(run, "checkpoints")))
    for tag in ("epoch_1", "epoch_2", "final"):
        assert {f"{tag}.pdparams", f"{tag}.pdopt"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    with open(os.path.join(run, "config.yml"), encoding="utf-8") as f:
        saved = yaml.safe_load(f)
    assert saved["Global"]["epochs"] == 2 and saved["Arch"]["name"] == "LeNet" and "Study" not in saved


def test_visualdl_logs_read_back(trained: str) -> None:
    logdir = os.path.join(trained, "lenet_nopool", "vdl")
    loss = read_vdl(logdir, "train/loss")
    assert sorted(loss) == list(range(1, 127))  # every step of both epochs
    acc = read_vdl(logdir, "eval/acc_top1")
    assert sorted(acc) == [1, 2]
    m = metrics(trained, "lenet_nopool")
    assert abs(acc[2] - m["acc_top1"]) < 1e-6
    assert abs(read_vdl(logdir, "eval/loss")[2] - m["loss"]) < 1e-5
    assert set(read_vdl(logdir, "eval/acc_top2")) == {1, 2} and read_vdl(logdir, "train/acc_top1")


def test_eval_reproduces_metrics(trained: str) -> None:
    p = tool("eval", *mnist_args(trained, "lenet"), check=True)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    m = metrics(trained, "lenet")
    assert (got["loss"], got["acc_top1"], got["acc_top2"]) == (m["loss"], m["acc_top1"], m["acc_top2"])
    ckpt = os.path.join(trained, "lenet", "checkpoints", "epoch_1.pdparams")
    first = json.loads(tool("eval", *mnist_args(trained, "lenet"), "-o", f"Global.checkpoint={ckpt}",
                            check=True).stdout.strip().splitlines()[-1])
    assert first["checkpoint"] == ckpt and first["acc_top1"] != m["acc_top1"]


def test_count_params_tool() -> None:
    got = json.loads(tool("count_params", "--json", check=True).stdout.strip().splitlines()[-1])
    assert got["LeNet"] == {"params": 61706, "trainable": 61706, "buffers": 0, "flops": 833040} and len(got) >= 17
    assert got["LeNet_nopool"]["params"] == 66346 and got["LeNet_nopool"]["flops"] == 1822992
    # paddle lists BatchNorm's running mean/variance among parameters; seed 002's model trains 52,174
    assert (got["LeNet_BN"]["params"], got["LeNet_BN"]["trainable"], got["LeNet_BN"]["buffers"]) == (52446, 52174, 272)
    one = tool("count_params", "-c", os.path.join(ROOT, "configs/lenet_nopool.yml"), "--json", check=True)
    assert json.loads(one.stdout.strip().splitlines()[-1])["LeNet_nopool"]["trainable"] == 66346
    table = tool("count_params", check=True).stdout
    assert "61,706" in table and "833,040" in table  # params and forward FLOPs


def test_show_samples_png(tmp_path) -> None:
    out = tmp_path / "samples.png"
    from .conftest import MNIST5K

    tool("show_samples", "-c", os.path.join(ROOT, "configs/lenet.yml"), "-o", f"Data.root={MNIST5K}",
         "--out", str(out), "--n", "8", check=True)
    import matplotlib.image as mpimg

    img = mpimg.imread(str(out))
    assert img.shape[0] > 100 and img.shape[1] > 400 and img.std() > 0.05


def test_scalar_log_writes_what_visualdl_writes(tmp_path) -> None:
    """The engine's batched scalars read back as VisualDL's own writer's do: every record, in order, after the
    LogWriter's own records, and the pending ones are on disk after a flush and at close."""
    import glob

    from visualdl import LogReader, LogWriter

    from paddle_lenet.engine import ScalarLog

    def records(logdir: str) -> dict:
        reader = LogReader(file_path=glob.glob(os.path.join(logdir, "vdlrecords*"))[0])
        tags = reader.get_tags()
        return {t: [(r.id, r.value) for r in reader.get_data("scalar", t)] for t in tags.get("scalar", [])}

    values = [(s, 0.1 * s, 1.0 / (s + 1)) for s in range(1, 301)]
    plain = LogWriter(logdir=str(tmp_path / "plain"))
    log = ScalarLog(LogWriter(logdir=str(tmp_path / "batched")), flush_seconds=3600)
    for w in (plain, log.writer):  # what _open_writer writes before the scalars
        w.add_hparams({"lr": 0.1}, ["eval/loss"])
    for s, loss, acc in values:
        for w in (plain, log):
            w.add_scalar("train/loss", loss, s)
            w.add_scalar("train/acc_top1", acc, s)
    assert records(str(tmp_path / "batched")) == {}  # nothing flushed yet (an hour's interval)
    log.flush()
    assert len(records(str(tmp_path / "batched"))["train/loss"]) == 300
    log.add_scalar("eval/loss", 0.25, 1)
    plain.add_scalar("eval/loss", 0.25, 1)
    log.close()
    plain.close()
    got, want = records(str(tmp_path / "batched")), records(str(tmp_path / "plain"))
    assert got == want and len(got["train/acc_top1"]) == 300 and got["eval/loss"] == [(1, 0.25)]
    assert LogReader(file_path=glob.glob(str(tmp_path / "batched" / "vdlrecords*"))[0]).get_tags().get("hyper_parameters")


def test_scalar_log_survives_an_unwritable_log(tmp_path, capsys) -> None:
    """A log file that cannot be appended to (here: replaced by a folder) costs curve points, said once, not the run."""
    from visualdl import LogWriter

    from paddle_lenet.engine import ScalarLog

    log = ScalarLog(LogWriter(logdir=str(tmp_path)), flush_seconds=0)  # every scalar flushed at once
    log.writer.flush()  # VisualDL's first record (the run's name) on disk
    path = log.writer.file_name
    os.remove(path)
    os.mkdir(path)
    for step in range(3):
        log.add_scalar("train/loss", 0.5, step)
    err = capsys.readouterr().err
    assert err.count("not written") == 1 and path in err
    log.close()
