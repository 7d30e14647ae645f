"""Hostile input, table-driven: every tool, every class of bad value, file and path.

Each case asserts the promise of the README's "Guarantees": the documented exit code, exactly one stderr line
(the error, no traceback) and that nothing on disk was created or changed. Cases run two at a time (each is a
real subprocess of a tool) to keep the suite's time in check.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import MNIST5K, ROOT

LENET = os.path.join(ROOT, "configs", "lenet.yml")
STUDY = os.path.join(ROOT, "configs", "study", "pooling_vs_stride.yml")


def _snapshot(folder: str) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def _train_args(*extra: str) -> list[str]:
    return ["train", "-c", LENET, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}", "-o", "Global.epochs=1",
            *extra]


# (id, argv (tool first; {w} = the case's workspace, {out} = {w}/out), exit code, needle in the error line)
CASES: list[tuple[str, list[str], int, str]] = [
    # --- config values: 0, -1, huge, wrong type, non-finite, relations
    ("epochs0", _train_args("-o", "Global.epochs=0"), 2, "Global.epochs=0 is out of range"),
    ("epochs_neg", _train_args("-o", "Global.epochs=-1"), 2, "out of range"),
    ("epochs_huge", _train_args("-o", "Global.epochs=10000000000"), 2, "out of range"),
    ("epochs_float", _train_args("-o", "Global.epochs=1.5"), 2, "must be int"),
    ("epochs_str", _train_args("-o", "Global.epochs=ten"), 2, "must be int"),
    ("epochs_bool", _train_args("-o", "Global.epochs=true"), 2, "must be int"),
    ("seed_neg", _train_args("-o", "Global.seed=-1"), 2, "Global.seed=-1 is out of range"),
    ("seed_huge", _train_args("-o", "Global.seed=99999999999999"), 2, "out of range"),
    ("threads_huge", _train_args("-o", "Global.threads=100000"), 2, "Global.threads"),
    ("threads0", _train_args("-o", "Global.threads=0"), 2, "Global.threads"),
    ("kthreads_huge", _train_args("-o", "Global.kernel_threads=100000"), 2, "Global.kernel_threads"),
    ("batch0", _train_args("-o", "Data.batch_size=0"), 2, "Data.batch_size"),
    ("eval_batch_neg", _train_args("-o", "Data.eval_batch_size=-1"), 2, "Data.eval_batch_size=-1 is out of range"),
    ("train_limit0", _train_args("-o", "Data.train_limit=0"), 2, "Data.train_limit"),
    ("train_limit_huge", _train_args("-o", "Data.train_limit=5000"), 2, "more than MNIST5k's 4,000"),
    ("workers_neg", _train_args("-o", "Data.num_workers=-2"), 2, "Data.num_workers"),
    ("lr0", _train_args("-o", "Optimizer.learning_rate=0"), 2, "Optimizer.learning_rate"),
    ("lr_neg", _train_args("-o", "Optimizer.learning_rate=-0.1"), 2, "Optimizer.learning_rate"),
    ("lr_inf", _train_args("-o", "Optimizer.learning_rate=.inf"), 2, "finite"),
    ("lr_nan", _train_args("-o", "Optimizer.learning_rate=.nan"), 2, "finite"),
    ("wd_neg", _train_args("-o", "Optimizer.weight_decay=-0.1"), 2, "Optimizer.weight_decay"),
    ("momentum_neg", _train_args("-o", "Optimizer.name=Momentum", "-o", "Optimizer.momentum=-0.5"), 2, "momentum"),
    ("momentum1", _train_args("-o", "Optimizer.name=Momentum", "-o", "Optimizer.momentum=1"), 2, "[0, 1)"),
    ("gamma0", _train_args("-o", "Optimizer.gamma=0"), 2, "Optimizer.gamma"),
    ("milestones_late", _train_args("-o", "Optimizer.milestones=[5]"), 2, "after the last epoch"),
    ("milestones_order", _train_args("-o", "Global.epochs=3", "-o", "Optimizer.milestones=[2,1]"), 2, "increasing"),
    ("milestones_str", _train_args("-o", "Optimizer.milestones=[a]"), 2, "list of integers"),
    ("pool_p_neg", _train_args("-o", "Arch.pool=lp", "-o", "Arch.pool_p=-2"), 2, "Arch.pool_p"),
    ("pool_p_zero", _train_args("-o", "Arch.pool=lp", "-o", "Arch.pool_p=0"), 2, "Arch.pool_p"),
    ("pool_p_unused", _train_args("-o", "Arch.pool_p=2"), 2, "Arch.pool=lp"),
    ("pool_bad", _train_args("-o", "Arch.pool=median"), 2, "Arch.pool='median' is not valid"),
    ("topk_big", _train_args("-o", "Metric.topk=[11]"), 2, "top-11"),
    ("topk_dup", _train_args("-o", "Metric.topk=[1,1]"), 2, "repeats"),
    ("topk_zero", _train_args("-o", "Metric.topk=[0]"), 2, "out of range"),
    ("topk_empty", _train_args("-o", "Metric.topk=[]"), 2, "Metric.topk"),
    ("classes_few", _train_args("-o", "Arch.num_classes=3"), 2, "fewer than MNIST5k's 10"),
    ("head_on_nopool_bad", _train_args("-o", "Arch.name=LeNet_nopool", "-o", "Arch.pool=avg"), 2, "no option Arch.pool"),
    ("unknown_key", _train_args("-o", "Global.epochz=1"), 2, "did you mean 'Global.epochs'"),
    ("unknown_section", _train_args("-o", "Gobal.epochs=1"), 2, "unknown config section"),
    ("malformed", _train_args("-o", "Global.epochs"), 2, "malformed override"),
    ("bad_yaml_value", _train_args("-o", "Global.epochs=[1"), 2, "not valid YAML"),
    ("model_unknown", _train_args("-o", "Arch.name=LeNet9"), 2, "registered models"),
    ("model_shape", _train_args("-o", "Arch.name=All_CNN_C"), 2, "built for 3×32×32"),
    ("device_bad", _train_args("-o", "Global.device=tpu"), 2, "Global.device"),
    ("dataset_unknown", _train_args("-o", "Data.name=SVHN"), 2, "Data.name='SVHN'"),
    ("mnist5k_with_root", _train_args("-o", "Data.root=/tmp"), 2, "reads no Data.root"),
    ("resume_and_overwrite", _train_args("-o", "Global.resume=true", "-o", "Global.overwrite=true"), 2, "contradict"),
    # --- names and paths
    ("name_dotdot", _train_args("-o", "Global.name=.."), 2, "not a plain name"),
    ("name_parent", _train_args("-o", "Global.name=../x"), 2, "not a plain name"),
    ("name_abs", _train_args("-o", "Global.name=/tmp/x"), 2, "not a plain name"),
    ("name_empty", _train_args("-o", "Global.name=''"), 2, "Global.name"),
    ("name_long", _train_args("-o", "Global.name=" + "n" * 300), 2, "not a plain name"),
    ("name_hidden", _train_args("-o", "Global.name=.git"), 2, "not a plain name"),
    ("output_is_file", _train_args("-o", "Global.output_dir={w}/afile"), 2, "is a file"),
    ("output_under_file", _train_args("-o", "Global.output_dir={w}/afile/runs"), 2, "a file stands where a folder"),
    ("output_too_long", _train_args("-o", "Global.output_dir={w}/" + "d" * 300), 2, "the path is too long"),
    ("data_root_missing", ["train", "-c", LENET, "-o", "Data.root={w}/nothing", "-o", "Global.output_dir={out}"], 2,
     "is not a folder"),
    ("data_root_truncated", ["train", "-c", LENET, "-o", "Data.root={w}/trunc", "-o", "Global.output_dir={out}"], 2,
     "truncated"),
    # --- config files
    ("config_missing", ["train", "-c", "{w}/none.yml"], 2, "not found"),
    ("config_dir", ["train", "-c", "{w}"], 2, "is a folder"),
    ("config_list", ["train", "-c", "{w}/list.yml"], 2, "got a YAML list"),
    ("config_scalar", ["train", "-c", "{w}/scalar.yml"], 2, "got a YAML int"),
    ("config_dupkey", ["train", "-c", "{w}/dup.yml"], 2, "appears twice"),
    ("config_section_list", ["train", "-c", "{w}/seclist.yml"], 2, "must be a mapping"),
    ("config_python_tag", ["train", "-c", "{w}/tag.yml"], 2, "not valid YAML"),
    ("config_binary", ["train", "-c", "{w}/binary.yml"], 2, "config file"),
    # --- eval / export on runs that are not there or are damaged
    ("eval_no_run", ["eval", "-c", LENET, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}"], 2, "not found"),
    ("eval_folder_no_config", ["eval", "-c", "{w}/emptyrun"], 2, "without config.yml"),
    ("eval_corrupt_config", ["eval", "-c", "{w}/badrun"], 2, "is damaged"),
    ("export_no_run", ["export", "-c", LENET, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                       "--out", "{w}/exp"], 2, "not found"),
    # --- predict
    ("predict_no_model", ["predict", "--model-dir", "{w}/nomodel", "{w}/afile"], 2, "does not exist"),
    ("predict_topk0", ["predict", "--model-dir", "{w}/nomodel", "--topk", "0", "{w}/afile"], 2, "--topk"),
    # --- study
    ("study_seeds_dup", ["study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                         "-o", "Study.seeds=[0,0]"], 2, "repeats a seed"),
    ("study_seeds0", ["study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                      "-o", "Study.seeds=0"], 2, "Study.seeds"),
    ("study_seeds_neg", ["study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                         "-o", "Study.seeds=[-1]"], 2, "Study.seeds"),
    ("study_label_dotdot", ["study", "-c", "{w}/study_dotdot.yml", "-o", "Global.output_dir={out}"], 2, "not a plain name"),
    ("study_name_parent", ["study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                           "-o", "Study.name=../x"], 2, "not a plain name"),
    ("study_shift_big", ["study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                         "-o", "Study.shifts=[0,28]"], 2, "out of view"),
    ("study_compare_self", ["study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                            "-o", "Study.compare=[[LeNet,LeNet]]"], 2, "two different model labels"),
    ("study_shard_bad", ["study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                         "--shard", "4/4"], 2, "0 <= K < N"),
    ("study_shard_text", ["study", "-c", STUDY, "--shard", "a/b"], 2, "must be K/N"),
    ("study_report_empty", ["study", "-c", STUDY, "-o", "Data.name=MNIST5k", "-o", "Global.output_dir={out}",
                            "--report"], 2, "no finished runs"),
    # --- benchmark, count_params, show_samples, dashboard
    ("bench_warmup_neg", ["benchmark", "-c", LENET, "--warmup", "-10"], 2, "--warmup"),
    ("bench_steps0", ["benchmark", "-c", LENET, "--steps", "0"], 2, "--steps"),
    ("bench_pairs_text", ["benchmark", "-c", LENET, "--pairs", "x"], 2, "--pairs"),
    ("bench_torch_other_model", ["benchmark", "-c", LENET, "-o", "Data.name=MNIST5k", "-o", "Arch.pool=avg",
                                 "--reference", "torch"], 2, "drop Arch.pool / Arch.head"),
    ("count_params_bad_cfg", ["count_params", "-c", LENET, "-o", "Arch.pool=median"], 2, "Arch.pool"),
    ("count_params_flag", ["count_params", "--jsn"], 2, "unrecognized arguments"),
    ("samples_n0", ["show_samples", "-c", LENET, "-o", "Data.name=MNIST5k", "--n", "0", "--out", "{w}/s.png"], 2, "--n"),
    ("samples_out_dir", ["show_samples", "-c", LENET, "-o", "Data.name=MNIST5k", "--out", "{w}/afile/s.png"], 2,
     "cannot"),
    ("dashboard_no_logdir", ["dashboard", "--logdir", "{w}/nothing"], 2, "is not a folder"),
    ("dashboard_port", ["dashboard", "--logdir", "{w}", "--port", "70000"], 2, "not a port"),
]


def _workspace(w: str) -> None:
    os.makedirs(os.path.join(w, "out"))
    open(os.path.join(w, "afile"), "w").write("not a folder\n")
    open(os.path.join(w, "list.yml"), "w").write("- a\n- b\n")
    open(os.path.join(w, "scalar.yml"), "w").write("42\n")
    open(os.path.join(w, "dup.yml"), "w").write("Global: {epochs: 1}\nGlobal: {epochs: 2}\n")
    open(os.path.join(w, "seclist.yml"), "w").write("Global: [1, 2]\n")
    open(os.path.join(w, "tag.yml"), "w").write("Global: !!python/object/apply:os.system ['echo hi']\n")
    open(os.path.join(w, "binary.yml"), "wb").write(b"\xff\xfe\x00\x81garbage")
    open(os.path.join(w, "study_dotdot.yml"), "w").write(
        "Data: {name: MNIST5k}\nStudy:\n  models:\n    - {label: '..', overrides: {Arch.name: LeNet}}\n")
    os.makedirs(os.path.join(w, "emptyrun"))
    os.makedirs(os.path.join(w, "badrun"))
    open(os.path.join(w, "badrun", "config.yml"), "w").write("Global: {epochs: [\n")
    os.makedirs(os.path.join(w, "trunc"))
    for f in os.listdir(MNIST5K):
        if f.endswith(".gz"):
            shutil.copy(os.path.join(MNIST5K, f), os.path.join(w, "trunc", f))
    raw = open(os.path.join(w, "trunc", "train-images-idx3-ubyte.gz"), "rb").read()
    open(os.path.join(w, "trunc", "train-images-idx3-ubyte.gz"), "wb").write(raw[: len(raw) // 3])
    assert gzip  # (truncated gzip: the data check names it)


def _run_case(w: str, argv: list[str]) -> subprocess.CompletedProcess:
    args = [a.format(w=w, out=os.path.join(w, "out")) for a in argv]
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", f"{args[0]}.py"), *args[1:]],
                          capture_output=True, text=True, timeout=300, cwd=w, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, bool]]:
    """Run every case, two at a time, each in its own fresh workspace; record whether the workspace changed."""
    base = str(tmp_path_factory.mktemp("hostile"))

    def one(case: tuple[str, list[str], int, str]) -> tuple[str, tuple[subprocess.CompletedProcess, bool]]:
        w = os.path.join(base, case[0])
        _workspace(w)
        before = _snapshot(w)
        p = _run_case(w, case[1])
        return case[0], (p, _snapshot(w) == before)

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, CASES))


def test_enough_cases_across_all_tools() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    tools = {c[1][0] for c in CASES}
    assert tools >= {"train", "eval", "export", "predict", "study", "benchmark", "count_params", "show_samples",
                     "dashboard"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(outcomes, case) -> None:
    name, _, code, needle = case
    p, unchanged = outcomes[name]
    lines = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    assert needle in lines[0], lines[0]
    assert unchanged, f"{name} changed the workspace"
