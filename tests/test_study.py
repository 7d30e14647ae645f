"""Issue 4: statistics on known inputs, and a 2-model × 2-seed × 1-epoch study on mnist-5k end to end."""

from __future__ import annotations

import glob
import json
import os

import pytest

from paddle_lenet.config import load_config
from paddle_lenet.errors import ConfigError
from paddle_lenet.stats import in_words, mean_std, permutation_p, welch  # noqa: F401
from paddle_lenet.study import load_study

from .conftest import ROOT, read_vdl, tool

STUDY = os.path.join(ROOT, "configs", "study", "pooling_vs_stride.yml")


def test_welch_on_known_inputs() -> None:
    # means 0.981 vs 0.984, both sample variances 2.5e-6, n = 5: se = 1e-3, t = -3, df = 8
    w = welch([0.981, 0.979, 0.983, 0.980, 0.982], [0.984, 0.983, 0.986, 0.982, 0.985])
    assert w["diff"] == pytest.approx(-0.003, abs=1e-12)
    assert w["t"] == pytest.approx(-3.0, rel=1e-9) and w["df"] == pytest.approx(8.0, rel=1e-9)
    assert w["p_value"] == pytest.approx(0.017071681233779765, rel=1e-6)
    assert w["ci95"] == pytest.approx([-0.003 - 2.306004135 * 1e-3, -0.003 + 2.306004135 * 1e-3], rel=1e-6)
    u = welch([1, 2, 3, 4], [2, 4, 6, 9])  # unequal variances: Welch-Satterthwaite df
    assert u["df"] == pytest.approx(4.0836357498523075, rel=1e-9) and u["p_value"] == pytest.approx(0.1647020796, rel=1e-6)
    assert in_words(0.017) == "significant at 5%" and in_words(0.2) == "not significant at 5%"


def test_permutation_and_spread() -> None:
    assert permutation_p([1, 2], [3, 4]) == pytest.approx(2 / 6)  # only the observed split and its mirror
    assert permutation_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_std([5.0]) == (5.0, 0.0)


def test_every_shipped_config_validates() -> None:
    for folder, _, files in os.walk(os.path.join(ROOT, "configs")):
        for f in files:
            path = os.path.join(folder, f)
            if "study" in folder:
                base, jobs = load_study(path, [])
                st = base["Study"]
                assert len(jobs) == len(st["models"]) * len(st["seeds"]) >= 3, path  # ≥ 3 seeds: a spread to report
            else:
                load_config(path)


def test_runs_are_ordered_seed_major() -> None:
    """A study stopped early (or one shard of it) has every model on its first seeds, not some models on all."""
    cfg, jobs = load_study(os.path.join(ROOT, "configs", "study", "pooling_zoo.yml"), ["Study.seeds=[4, 1]"])
    labels = [m["label"] for m in cfg["Study"]["models"]]
    assert [(j["seed"], j["label"]) for j in jobs] == [(s, label) for s in (4, 1) for label in labels]


def test_bad_study_config() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        load_study(STUDY, ["Study.models=[{label: a}, {label: a}]"])
    with pytest.raises(ConfigError, match="registered models"):
        load_study(STUDY, ["Study.models=[{label: a, overrides: {Arch.name: Nope}}]"])
    with pytest.raises(ConfigError, match="must be a pair of two different model labels"):
        load_study(STUDY, ["Study.compare=[[LeNet, X]]"])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[str, str]:
    out = str(tmp_path_factory.mktemp("study"))
    p = tool("study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.epochs=1", "-o", "Study.seeds=2",
             "-o", "Study.workers=2", "-o", f"Global.output_dir={out}", check=True)
    return os.path.join(out, "pooling_vs_stride"), p.stdout


def test_study_outputs_agree(study) -> None:
    root, _ = study
    s = json.load(open(os.path.join(root, "summary.json")))
    assert set(s["models"]) == {"LeNet", "LeNet_nopool"}
    for label, m in s["models"].items():
        runs = [json.load(open(os.path.join(root, "runs", label, f"seed_{i}", "metrics.json"))) for i in (0, 1)]
        assert m["runs"] == 2 and m["params"] == runs[0]["params"] and m["flops"] > 0
        assert m["acc_top1_mean"] == pytest.approx(sum(r["acc_top1"] for r in runs) / 2)
        assert runs[0]["acc_top1"] != runs[1]["acc_top1"] or runs[0]["loss"] != runs[1]["loss"]  # seeds differ
        assert m["acc_top1_mean"] >= 0.7 and m["acc_top2_mean"] >= m["acc_top1_mean"]
        assert set(m["shift_acc"]) == {"0", "1", "2", "3", "4"}
        assert m["shift_acc"]["0"] == pytest.approx(m["acc_top1_mean"]) and m["shift_acc"]["4"] < m["shift_acc"]["0"]
        assert read_vdl(os.path.join(root, "runs", label, "seed_0", "vdl"), "eval/acc_top1")
    (c,) = s["comparisons"]
    assert (c["a"], c["b"]) == ("LeNet", "LeNet_nopool") and c["ci95"][0] <= c["diff"] <= c["ci95"][1]
    assert 0 <= c["p_value"] <= 1 and c["test"] == "Welch's t"
    report = open(os.path.join(root, "report.md")).read()
    assert "| LeNet | LeNet | 61,706 | 0.83 M | 2 |" in report and "LeNet − LeNet_nopool" in report
    assert ("inconclusive (could only detect ≥" in report or "| different |" in report) and "MDE (pts)" in report
    assert "MNIST5k (a 5,000-digit subset" in report and "4,000 train / 1,000 test" in report
    assert "1 epoch per run" in report and not os.path.exists(os.path.join(root, "curves.png"))  # 1 epoch: no curve
    for fig in ("forest.png", "acc_vs_cost.png", "shift.png", "per_class.png"):
        assert os.path.getsize(os.path.join(root, fig)) > 5000 and f"![{fig}]({fig})" in report
    # the per-class figure shows the table's numbers: every class's mean over seeds, per model
    for label, m in s["models"].items():
        assert set(m["per_class"]) == {str(d) for d in range(10)} and all(0 <= v[0] <= 1 for v in m["per_class"].values())
        per_seed = [json.load(open(os.path.join(root, "runs", label, f"seed_{i}", "classes.json"))) for i in (0, 1)]
        for name, (mean, _) in m["per_class"].items():
            assert mean == pytest.approx(sum(r["per_class_accuracy"][name] for r in per_seed) / 2)


def test_study_rerun_skips_finished_runs(study) -> None:
    root, _ = study
    out = os.path.dirname(root)
    first = json.load(open(os.path.join(root, "summary.json")))
    p = tool("study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.epochs=1", "-o", "Study.seeds=2",
             "-o", f"Global.output_dir={out}", check=True)
    assert p.stdout.count("skipped (done)") == 4
    again = json.load(open(os.path.join(root, "summary.json")))
    assert again["models"] == first["models"]
    assert again["wall_seconds"] >= first["wall_seconds"]  # wall time accumulates over sessions of one study


def test_interrupted_study_stops_workers_and_continues(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, os.path.join(ROOT, "tools", "study.py"), "-c", STUDY, "-o", "Data.name=MNIST5k",
            "-o", "Global.epochs=2", "-o", "Study.seeds=2", "-o", "Study.workers=2", "-o", f"Global.output_dir={tmp_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    workers: list[int] = []
    for line in proc.stdout:
        if "epoch 1/2" in line:
            rows = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout.splitlines()
            workers = [int(r.split()[0]) for r in rows if r.split()[1] == str(proc.pid) and "paddle_lenet.jobs" in r]
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    # one line: the workers, stopped by the study, stop quietly (their stderr is the study's)
    assert len(err.strip().splitlines()) == 1, err[-2000:]
    assert err.startswith("stopped: SIGTERM: study interrupted") and "Traceback" not in err
    assert len(workers) == 2
    time.sleep(1)
    for pid in workers:  # no orphaned workers left training
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    p = tool("study", *args[2:], check=True)
    assert p.stdout.count("[") >= 4 and os.path.exists(os.path.join(tmp_path, "pooling_vs_stride", "summary.json"))


def _study_workers(pid: int) -> list[int]:
    import subprocess

    rows = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout.splitlines()
    return [int(r.split()[0]) for r in rows if r.split()[1] == str(pid) and "paddle_lenet.jobs" in r]


@pytest.mark.parametrize("target", ["study", "one worker"])
def test_a_study_stopped_as_its_workers_start_says_one_line(tmp_path, target) -> None:
    """SIGTERM the moment both workers exist (they are still importing paddle): to the study, exit 130; to one worker
    alone, the study names that run as stopped or killed by the signal, exit 1 — one stderr line either way, no orphans."""
    import signal
    import subprocess
    import sys
    import time

    args = [sys.executable, os.path.join(ROOT, "tools", "study.py"), "-c", STUDY, "-o", "Data.name=MNIST5k",
            "-o", "Global.epochs=1", "-o", "Study.seeds=1", "-o", "Study.workers=2", "-o", f"Global.output_dir={tmp_path}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    deadline = time.time() + 120
    while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        workers = _study_workers(proc.pid)
    assert len(workers) == 2, "the study did not start two workers"
    os.kill(proc.pid if target == "study" else workers[0], signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    if target == "study":
        assert proc.returncode == 130 and err.startswith("stopped: SIGTERM: study interrupted"), err
    else:
        assert proc.returncode == 1 and ("was stopped by a signal (exit 130)" in err or "was killed by SIGTERM" in err), err
    time.sleep(1)
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_holm_matches_hand_computation() -> None:
    from paddle_lenet.stats import holm

    # sorted p: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06; NaN stays out of the family;
    # [0.9, 0.8]: 0.8·2 = 1.6 caps at 1, and 0.9 may not fall below it
    got = holm([0.01, 0.04, 0.03, float("nan"), 0.005])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06]) and got[4] == pytest.approx(0.02) and got[3] != got[3]
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0]) and holm([0.6, 0.7, 0.01]) == pytest.approx([1.0, 1.0, 0.03])


def test_gpu_slots_give_each_worker_its_device() -> None:
    from paddle_lenet.study import gpu_slots

    assert gpu_slots(0, 1, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]  # default: one worker per GPU
    assert gpu_slots(0, 2, ["3", "5"]) == ["3", "3", "5", "5"]  # Study.workers_per_gpu, CUDA_VISIBLE_DEVICES ids kept
    assert gpu_slots(3, 2, ["0", "1"]) == ["0", "0", "1"]  # Study.workers caps it
    assert gpu_slots(2, 1, []) == [None, None]  # CPU: slots without a device


def test_stale_runs_are_never_reported_as_the_study(study) -> None:
    root, _ = study
    out = os.path.dirname(root)
    args = ["-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Study.seeds=2", "-o", f"Global.output_dir={out}"]
    before = open(os.path.join(root, "summary.json")).read()
    p = tool("study", *args, "-o", "Global.epochs=2")
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "Global.epochs was 1, the study asks 2" in p.stderr
    p = tool("study", *args, "-o", "Global.epochs=1", "-o", "Data.train_limit=1000")
    assert p.returncode == 2 and "Data.train_limit was None, the study asks 1000" in p.stderr
    assert open(os.path.join(root, "summary.json")).read() == before  # nothing rewritten


def test_shards_in_parallel_then_report_equal_the_whole_study(study, tmp_path) -> None:
    import subprocess
    import sys

    root, _ = study
    args = ["-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.epochs=1", "-o", "Study.seeds=2",
            "-o", "Study.workers=1", "-o", f"Global.output_dir={tmp_path}"]
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "study.py"), *args, "--shard", f"{k}/2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        assert "--report" in out and not os.path.exists(os.path.join(tmp_path, "pooling_vs_stride", "summary.json"))
    partial = tool("study", *args, "--report", check=True)
    assert "missing" not in partial.stdout
    whole = json.load(open(os.path.join(root, "summary.json")))
    sharded = json.load(open(os.path.join(tmp_path, "pooling_vs_stride", "summary.json")))
    for label in whole["models"]:
        for key in ("acc_top1_runs", "acc_top1_mean", "loss_mean", "shift_acc", "params", "seeds"):
            assert sharded["models"][label][key] == whole["models"][label][key], (label, key)
    assert sharded["comparisons"][0]["p_value"] == whole["comparisons"][0]["p_value"]
    # a report while a run is missing says so, in the report and on stdout
    import shutil

    shutil.rmtree(os.path.join(tmp_path, "pooling_vs_stride", "runs", "LeNet", "seed_1"))
    shutil.rmtree(os.path.join(tmp_path, "pooling_vs_stride", "records", "LeNet", "seed_1"))  # and its record
    p = tool("study", *args, "--report", check=True)
    assert "1 of 4 runs are missing" in p.stdout and "LeNet/seed_1" in p.stdout
    report = open(os.path.join(tmp_path, "pooling_vs_stride", "report.md")).read()
    assert "**Incomplete:** 1 run(s) missing: LeNet/seed_1" in report


def test_a_run_of_an_older_operator_definition_is_stale(tmp_path) -> None:
    """A finished run recorded with an earlier revision of its operator is not this study's number."""
    from paddle_lenet.config import dump
    from paddle_lenet.study import job_state, load_study

    study = tmp_path / "s.yml"
    study.write_text(f"Global: {{epochs: 1, output_dir: {tmp_path}}}\nData: {{name: MNIST5k}}\n"
                     "Study: {seeds: 1, models: [{label: lip, overrides: {Arch.pool: lip}}]}\n")
    _, (job,) = load_study(str(study), [])
    folder = os.path.join(job["cfg"]["Global"]["output_dir"], job["cfg"]["Global"]["name"])
    os.makedirs(folder)
    open(os.path.join(folder, "config.yml"), "w").write(dump(job["cfg"]))
    json.dump({"shift": 1}, open(os.path.join(folder, "shift.json"), "w"))
    json.dump({"0": 0.9, "1": 0.8, "2": 0.7, "3": 0.6, "4": 0.5}, open(os.path.join(folder, "shift.json"), "w"))
    json.dump({"per_class_accuracy": {}}, open(os.path.join(folder, "classes.json"), "w"))
    json.dump({"acc_top1": 0.9}, open(os.path.join(folder, "metrics.json"), "w"))  # no revision: the first one
    assert job_state(job, [0, 1, 2, 3, 4]).startswith("stale: it was trained with revision 1")
    json.dump({"acc_top1": 0.9, "arch_revision": 2}, open(os.path.join(folder, "metrics.json"), "w"))
    assert job_state(job, [0, 1, 2, 3, 4]) == "done"
    # computed by a LIP kernel since revised: not this study's run on this machine either (the study re-runs it
    # with Global.overwrite=true); the kernels this machine would use make it count again
    from paddle_lenet.engine import planned_kernels

    old = {"acc_top1": 0.9, "arch_revision": 2, "arithmetic": {"kernels": "e21a994dce6a+soft_window.2"}}
    json.dump(old, open(os.path.join(folder, "metrics.json"), "w"))
    now = planned_kernels(job["cfg"], "cpu")
    assert "+lip_logit." in now and "+lip_window." in now and "soft_window" not in now  # LIP's own kernels
    assert job_state(job, [0, 1, 2, 3, 4], data={"device": "cpu"}) == (
        f"stale: it was computed with kernels e21a994dce6a+soft_window.2, this machine computes with kernels {now}")
    old["arithmetic"]["kernels"] = now
    json.dump(old, open(os.path.join(folder, "metrics.json"), "w"))
    assert job_state(job, [0, 1, 2, 3, 4], data={"device": "cpu"}) == "done"


def test_records_travel_merge_and_report_on_a_fresh_machine(study, tmp_path) -> None:
    """Two shards on "machines" with no shared folder, their records copied together, reported where no run folder
    exists: the same summary as the unsharded study. A record of another config is refused by name, a damaged one
    in one line, and a grown study trains only the new seed."""
    import shutil

    import subprocess
    import sys

    root, _ = study
    args = ["-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.epochs=1", "-o", "Study.workers=1"]
    shards = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "study.py"), *args, "-o", "Study.seeds=2",
                                "-o", f"Global.output_dir={tmp_path / f'm{k}'}", "--shard", f"{k}/2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    for p in shards:  # two machines at once, each with its own folder
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    merged = tmp_path / "records"
    for k in (0, 1):
        shutil.copytree(tmp_path / f"m{k}" / "pooling_vs_stride" / "records", merged, dirs_exist_ok=True)
    assert sorted(os.listdir(merged / "LeNet")) == ["seed_0", "seed_1"]
    assert sorted(os.listdir(merged / "LeNet" / "seed_0")) == ["classes.json", "config.yml", "metrics.json", "shift.json"]
    fresh = ["-o", f"Global.output_dir={tmp_path / 'fresh'}", "-o", f"Study.records={merged}"]
    tool("study", *args, "-o", "Study.seeds=2", *fresh, "--report", check=True)
    whole = json.load(open(os.path.join(root, "summary.json")))
    merged_summary = json.load(open(tmp_path / "fresh" / "pooling_vs_stride" / "summary.json"))
    for key in ("seeds", "dataset", "epochs", "train_samples", "test_samples"):
        assert merged_summary[key] == whole[key], key
    for label in whole["models"]:
        for key in ("acc_top1_runs", "acc_top1_mean", "loss_mean", "shift_acc", "params", "flops", "seeds"):
            assert merged_summary["models"][label][key] == whole["models"][label][key], (label, key)
    for key in ("diff", "ci95", "p_value", "permutation_p", "mde", "p_equivalence", "verdict"):
        assert merged_summary["comparisons"][0][key] == whole["comparisons"][0][key], key
    # another config's record is refused by name; a damaged one in one line
    cfg_path = merged / "LeNet" / "seed_0" / "config.yml"
    good = cfg_path.read_text()
    cfg_path.write_text(good.replace("learning_rate: 0.001", "learning_rate: 0.002"))
    p = tool("study", *args, "-o", "Study.seeds=2", *fresh, "--report")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "LeNet seed 0" in p.stderr and "Optimizer.learning_rate=0.002" in p.stderr
    cfg_path.write_text(good)
    (merged / "LeNet_nopool" / "seed_1" / "metrics.json").write_text("[1, 2")
    p = tool("study", *args, "-o", "Study.seeds=2", *fresh, "--report")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "metrics.json" in p.stderr
    shutil.copy(tmp_path / "m1" / "pooling_vs_stride" / "records" / "LeNet_nopool" / "seed_1" / "metrics.json",
                merged / "LeNet_nopool" / "seed_1" / "metrics.json")
    # continue on the fresh machine with one more seed: only seed 2 trains
    p = tool("study", *args, "-o", "Study.seeds=3", *fresh, check=True)
    assert p.stdout.count("skipped (done)") == 4 and sorted(os.listdir(merged / "LeNet")) == ["seed_0", "seed_1", "seed_2"]
    grown = json.load(open(tmp_path / "fresh" / "pooling_vs_stride" / "summary.json"))
    assert grown["models"]["LeNet"]["acc_top1_runs"][:2] == whole["models"]["LeNet"]["acc_top1_runs"]
    c = grown["comparisons"][0]
    assert {"mde", "p_equivalence", "p_equivalence_holm", "verdict"} <= set(c) and c["mde"] > 0


def test_each_kernel_has_its_own_arithmetic_revision() -> None:
    """A kernel whose bits changed makes only the runs of models that use it stale: the committed records of the
    notebook's two models (conv2d + max-pool kernels) still count after DPP's kernel was revised."""
    from paddle_lenet import ops
    from paddle_lenet.engine import model_kernels, planned_kernels
    from paddle_lenet.study import _one_arithmetic

    lenet = load_config(os.path.join(ROOT, "configs", "lenet.yml"), [])
    dpp = load_config(os.path.join(ROOT, "configs", "lenet.yml"), ["Arch.pool=dpp"])
    nopool = load_config(os.path.join(ROOT, "configs", "lenet_nopool.yml"), [])
    assert model_kernels(lenet) == ["conv2d", "max_pool2x2"] and model_kernels(nopool) == ["conv2d"]
    assert model_kernels(dpp) == ["conv2d", "dpp"]
    legacy = ops.LEGACY
    for model in ("LeNet", "LeNet_nopool"):
        with open(os.path.join(ROOT, "docs", "results", "pooling_vs_stride_power", "runs", model, "seed_0",
                               "metrics.json")) as f:
            recorded = json.load(f)["arithmetic"]["kernels"]
        assert recorded == legacy == planned_kernels(nopool if model == "LeNet_nopool" else lenet, "cpu")
    assert planned_kernels(dpp, "cpu") == f"{legacy}+dpp.{ops.REVISIONS['dpp']}" != legacy
    assert planned_kernels(lenet, "gpu") is None  # Paddle's ops there

    def runs(*pairs: tuple[str, str | None]) -> list[dict]:
        return [{"label": label, "metrics": {"arithmetic": {"kernels": k}}} for label, k in pairs]

    uses = {"LeNet": ["conv2d", "max_pool2x2"], "dpp": ["conv2d", "dpp"], "nopool": ["conv2d"]}
    assert _one_arithmetic(runs(("LeNet", legacy), ("dpp", f"{legacy}+dpp.2"), ("nopool", legacy)), uses) \
        == f"{legacy}+dpp.2"
    assert _one_arithmetic(runs(("LeNet", legacy), ("nopool", legacy)), uses) == legacy
    assert _one_arithmetic(runs(("LeNet", None), ("nopool", None)), uses) is None
    for bad, what in [((("dpp", legacy), ("dpp", f"{legacy}+dpp.2")), "kernel dpp at revisions 2, e21a994dce6a"),
                      ((("LeNet", f"{legacy}+conv2d.3"), ("nopool", legacy)), "kernel conv2d"),
                      ((("LeNet", legacy), ("nopool", None)), "Paddle's ops")]:
        with pytest.raises(Exception, match=what):
            _one_arithmetic(runs(*bad), uses)


def test_train_vs_test_is_one_panel_per_model(tmp_path) -> None:
    """The zoo's ten models' train and test curves as small multiples (five a row), drawn from the published summary:
    twenty curves in one axes could not be told apart."""
    from PIL import Image

    from paddle_lenet.report import study_figures

    summary = json.load(open(os.path.join(ROOT, "docs", "results", "pooling_zoo_fashion10", "summary.json")))
    assert len(summary["models"]) == 10
    assert "train_vs_test.png" in study_figures(summary, str(tmp_path))
    width, height = Image.open(tmp_path / "train_vs_test.png").size
    assert (width, height) == (round((2.6 * 5 + 0.6) * 110), round((2.3 * 2 + 0.9) * 110))


def test_train_vs_test_of_one_model_keeps_its_legend_inside(tmp_path) -> None:
    """A one-model study's panel is narrower than the legend's two entries side by side (the published LeNet-5 figure
    had both cut off at its edges): there they stack, and no drawn pixel touches the figure's left or right border."""
    import numpy as np
    from PIL import Image

    from paddle_lenet.report import study_figures

    summary = json.load(open(os.path.join(ROOT, "docs", "results", "lenet5_classic_fashion100", "summary.json")))
    assert len(summary["models"]) == 1
    assert "train_vs_test.png" in study_figures(summary, str(tmp_path))
    img = np.asarray(Image.open(tmp_path / "train_vs_test.png").convert("L"))
    assert img[:, :2].min() > 250 and img[:, -2:].min() > 250


def test_a_study_worker_starts_without_the_statistics() -> None:
    """A worker (one run) imports neither SciPy nor matplotlib: the parent computes the statistics and the report,
    and each of a study's runs would otherwise start ~2 s later."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import paddle_lenet.jobs; "
            "print(sorted(m for m in ('scipy', 'matplotlib') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True, timeout=120)
    assert p.stdout.split("\n")[-2] == "[]", p.stdout + p.stderr[-2000:]


def test_a_report_over_two_timing_contexts_says_times_are_not_comparable(study, tmp_path) -> None:
    """Every run records where its time was measured (this CPU by family and model, the cores, the package's code);
    a report whose runs were timed in two contexts (a re-run on faster code, or records from before the field) warns
    in the text and on the cost figure; one context, no warning."""
    from paddle_lenet.engine import code_digest
    from paddle_lenet.ops import cpu_model
    from paddle_lenet.report import study_figures, study_markdown

    root, _ = study
    s = json.load(open(os.path.join(root, "summary.json")))
    (context,) = s["timing"]
    assert json.loads(context) == {"cpu": cpu_model(), "cores": os.cpu_count(), "code": code_digest()}
    assert "Times not comparable" not in open(os.path.join(root, "report.md")).read()
    s["timing"] = [context, "unrecorded"]
    assert "**Times not comparable:** the runs' train times were measured in 2 contexts" in study_markdown(s, [])
    assert "acc_vs_cost.png" in study_figures(s, str(tmp_path))


def test_the_code_digest_follows_the_package_source(tmp_path) -> None:
    """The digest is of the package's files: a copy of the package gives the same one; a one-byte change to a kernel
    source gives another (run in fresh processes: the digest is computed once per process)."""
    import shutil
    import subprocess
    import sys

    code = "import sys; sys.path.insert(0, sys.argv[1]); from paddle_lenet.engine import code_digest; print(code_digest())"

    def digest(where: str) -> str:
        p = subprocess.run([sys.executable, "-c", code, where], capture_output=True, text=True, timeout=120)
        return p.stdout.split()[-1]

    shutil.copytree(os.path.join(ROOT, "paddle_lenet"), tmp_path / "paddle_lenet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    here = digest(ROOT)
    assert digest(str(tmp_path)) == here and len(here) == 12
    src = tmp_path / "paddle_lenet" / "csrc" / "conv2d_cpu.cc"
    src.write_text(src.read_text() + "\n")
    assert digest(str(tmp_path)) != here


def test_a_report_over_two_blas_paths_says_so(study) -> None:
    """Runs whose matmuls took different BLAS code paths (or one recorded before the digest existed) are reported
    with a warning that names the paths; one path, none."""
    from paddle_lenet.report import study_markdown

    root, _ = study
    s = json.load(open(os.path.join(root, "summary.json")))
    assert len(s["arithmetic"]["blas"]) == 1 and "Mixed BLAS" not in open(os.path.join(root, "report.md")).read()
    s["arithmetic"]["blas"] = [s["arithmetic"]["blas"][0], "unrecorded"]
    text = study_markdown(s, [])
    assert "**Mixed BLAS paths:** the runs' matmuls were computed on 2 code paths" in text and "unrecorded" in text


def test_published_studies_ran_on_one_recorded_blas_path_and_report_their_records() -> None:
    """Each study whose records are committed ran on one BLAS path, every run saying which: a run recorded before
    ``arithmetic.blas`` existed cannot be re-made bit for bit, and mixing paths would make equal seeds unequal (the
    three such studies were re-run, issue 20). And its published summary's per-seed accuracies are its records'."""
    studies = sorted(os.path.dirname(r) for r in glob.glob(os.path.join(ROOT, "docs", "results", "*", "runs")))
    assert len(studies) >= 4
    for study in studies:
        summary = json.load(open(os.path.join(study, "summary.json")))
        paths = set()
        for label, m in summary["models"].items():
            records = [json.load(open(os.path.join(study, "runs", label, f"seed_{s}", "metrics.json")))
                       for s in summary["seeds"]]
            paths |= {r["arithmetic"].get("blas") for r in records}
            assert m["acc_top1_runs"] == [r["acc_top1"] for r in records], (study, label)
        assert len(paths) == 1 and None not in paths, (study, paths)
