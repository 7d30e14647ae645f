"""A study's runs: resolving a study config into jobs, each job's state, the committed records, one job's run.

What a study worker process (``python -m paddle_lenet.jobs JOB_JSON``) needs, and nothing more: the statistics and
the report (:mod:`paddle_lenet.study`) are the parent's, so a worker does not import SciPy or matplotlib (~2 s of
start-up in each of a study's runs).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from itertools import combinations
from typing import Any

from .config import apply_overrides, defaults, read_yaml, validate
from .errors import ConfigError, RunFolderError
from .runfolder import NEUTRAL

def _seeds(spec: int | list) -> list[int]:
    from .config import INT32

    if isinstance(spec, int):
        return list(range(spec))
    if not spec or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= INT32 for s in spec):
        raise ConfigError(f"Study.seeds must be a count or a list of seeds in [0, 2³¹−1], got {spec!r}")
    if len(set(spec)) != len(spec):
        raise ConfigError(f"Study.seeds={spec} repeats a seed; a repeated seed is the same run counted twice")
    return list(spec)


# Settings a finished run must share with the study's request to count as one of its runs. Unlike resume,
# the number of epochs and the evaluation schedule matter here: they are what the report states.
STUDY_NEUTRAL = NEUTRAL - {("Global", "epochs"), ("Global", "eval_every")}
# A record travels between machines: where the data lies there is not part of what the run is (its content is:
# the test set's fingerprint, checked where the data is at hand).
RECORD_NEUTRAL = STUDY_NEUTRAL | {("Data", "root")}
RECORD_FILES = ("config.yml", "metrics.json", "shift.json", "classes.json")


def records_dir(st: dict[str, Any]) -> str:
    """Where the study keeps its finished runs' records: ``Study.records`` (``{study}`` is the study's name), by
    default ``<output_dir>/<study>/records``. Point it at a committed folder (``docs/results/{study}/runs``) and
    the study reports and continues on any machine."""
    return (st["records"] or os.path.join(st["root"], "records")).replace("{study}", st["name"])


def record_path(st: dict[str, Any], job: dict[str, Any]) -> str:
    return os.path.join(records_dir(st), job["label"], f"seed_{job['seed']}")


def write_record(st: dict[str, Any], job: dict[str, Any]) -> None:
    """Copy a finished run's record (config, metrics with history, shift robustness; no checkpoints: a few KB of
    plain text) to the records folder, each file atomically."""
    from .files import makedirs, write_text

    src, dst = _folder(job), record_path(st, job)
    makedirs(dst)
    for name in RECORD_FILES:
        with open(os.path.join(src, name), encoding="utf-8") as f:
            text = f.read()
        target = os.path.join(dst, name)
        if not os.path.exists(target) or open(target, encoding="utf-8").read() != text:
            write_text(target, text)


def record_state(st: dict[str, Any], job: dict[str, Any], shifts: list[int], data: dict[str, Any]) -> str:
    """``record`` when the committed record is this job's run, ``new`` when there is none, else ``stale: …`` naming
    why (another config, operator revision, arithmetic or test set). Read with safe loaders only."""
    from .files import read_json
    from .models import arch_revision
    from .runfolder import config_difference

    folder = record_path(st, job)
    if not os.path.isdir(folder):
        return "new"
    missing = [f for f in RECORD_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        return f"stale: its record {folder} lacks {missing[0]}"
    try:
        import yaml

        with open(os.path.join(folder, "config.yml"), encoding="utf-8") as f:
            saved = validate(yaml.safe_load(f))
    except Exception as e:  # yaml and the schema raise several types for a damaged file
        raise RunFolderError(f"the record {folder}/config.yml is damaged ({str(e).splitlines()[0][:120]}); "
                             f"restore it from git or delete the record to re-run it") from None
    diff = config_difference(saved, job["cfg"], RECORD_NEUTRAL)
    if diff:
        return f"stale: its record has {diff[0]}={diff[1]!r}, the study asks {diff[2]!r}"
    metrics = read_json(os.path.join(folder, "metrics.json"), "run record")
    shift = read_json(os.path.join(folder, "shift.json"), "run record")
    classes = read_json(os.path.join(folder, "classes.json"), "run record")
    if not isinstance(classes.get("per_class_accuracy"), dict):
        raise RunFolderError(f"the record {folder}/classes.json has no per_class_accuracy; restore it from git or "
                             f"delete the record to re-run it")
    for key in ("acc_top1", "model", "dataset", "flops", "params"):
        if key not in metrics:
            raise RunFolderError(f"the record {folder}/metrics.json has no '{key}'; restore it from git or delete "
                                 f"the record to re-run it")
    if metrics.get("arch_revision", 1) != arch_revision(job["cfg"]["Arch"]):
        return (f"stale: its record was trained with revision {metrics.get('arch_revision', 1)} of its network "
                f"(now {arch_revision(job['cfg']['Arch'])})")
    if set(shift) != {str(k) for k in shifts}:
        return "stale: its record measured other shifts"
    other = _other_arithmetic(metrics, job, data)
    if other:
        return f"stale: its record was {other}"
    if data.get("fingerprint") and metrics.get("test_fingerprint") != data["fingerprint"]:
        return f"stale: its record was evaluated on another test set (fingerprint {metrics.get('test_fingerprint')})"
    return "record"


def _other_arithmetic(metrics: dict[str, Any], job: dict[str, Any], data: dict[str, Any]) -> str | None:
    """How a finished run's arithmetic differs from what this machine computes the job with (None: the same, or no
    device to compare with): a kernel revised since computes other bits, so the run is not this study's number."""
    if "device" not in data:
        return None
    from .engine import planned_kernels

    kernels = (metrics.get("arithmetic") or {}).get("kernels")
    want = planned_kernels(job["cfg"], data["device"])
    if kernels == want:
        return None
    return (f"computed with {'kernels ' + kernels if kernels else 'Paddle ops'}, this machine computes with "
            f"{'kernels ' + want if want else 'Paddle ops'}")


def gpu_slots(workers: int, per_gpu: int, visible: list[str]) -> list[str | None]:
    """Device of each worker slot: ``per_gpu`` slots per visible GPU, or CPU slots (None) without GPUs.

    A study worker started in slot ``i`` gets ``CUDA_VISIBLE_DEVICES=slots[i]``, so each run sees one GPU
    as ``gpu:0`` and runs never share a device beyond ``Study.workers_per_gpu``.
    """
    if not visible:
        return [None] * workers
    slots = [g for g in visible for _ in range(per_gpu)]
    return slots[:workers] if workers else slots


def visible_gpus() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES order), empty on a CPU-only paddle."""
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        return []
    n = paddle.device.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in env.split(",") if x.strip()] if env else [str(i) for i in range(n)]
    return ids[:n]


# Settings a study holds equal across its models: seeds are the study's, and the comparisons and the report
# assume every model was trained and evaluated alike.
PER_STUDY = {("Global", "seed"): "Study.seeds", ("Global", "epochs"): "-o Global.epochs",
             ("Global", "eval_every"): "-o Global.eval_every", ("Data", "name"): "-o Data.name",
             ("Data", "root"): "-o Data.root", ("Data", "train_limit"): "-o Data.train_limit",
             ("Metric", "topk"): "-o Metric.topk"}


def load_study(path: str, overrides: list[str], gpus: list[str] | None = None,
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Resolve a study config into its settings and one validated config per (model, seed).

    ``gpus``: the GPU ids to give workers; None = the visible ones unless ``Global.device`` is ``cpu``.
    """
    from .files import check_name
    from .models import get_entry
    from .ops import cpu_cores

    raw = apply_overrides(read_yaml(path), overrides)
    base = validate(raw)
    st = base["Study"]
    st["name"] = check_name(st["name"] or os.path.splitext(os.path.basename(path))[0], "Study.name")
    if not st["models"]:
        raise ConfigError("Study.models is empty; list models as - {label: NAME, overrides: {Arch.name: NAME}}")
    if 1 not in base["Metric"]["topk"]:
        raise ConfigError(f"Metric.topk={base['Metric']['topk']}: a study compares acc_top1; include 1, "
                          f"e.g. -o Metric.topk=[1,{max(base['Metric']['topk'])}]")
    labels = []
    jobs = []
    seeds = _seeds(st["seeds"])
    root = os.path.join(base["Global"]["output_dir"], st["name"])
    if gpus is None:
        gpus = visible_gpus() if base["Global"]["device"] != "cpu" else []
    on_gpu = base["Global"]["device"] != "cpu" and bool(gpus)
    if on_gpu:  # one worker per GPU (times workers_per_gpu) unless Study.workers says otherwise
        slots = gpu_slots(st["workers"], st["workers_per_gpu"], gpus or [])
    else:
        slots = gpu_slots(st["workers"] or cpu_cores(), 1, [])
    st["workers"] = max(1, min(len(slots), len(seeds) * len(st["models"])))
    st["slots"] = slots[: st["workers"]]
    for i, m in enumerate(st["models"]):
        if not isinstance(m, dict) or not isinstance(m.get("label", ""), str) or set(m) - {"label", "overrides"}:
            raise ConfigError(f"Study.models[{i}] must be a mapping with 'label' and 'overrides', got {m!r}")
        ov = m.get("overrides") or {}
        if not isinstance(ov, dict):
            raise ConfigError(f"Study.models[{i}].overrides must map Section.key to a value, got {ov!r}")
        label = check_name(m.get("label") or ov.get("Arch.name"), f"Study.models[{i}].label")
        if label in labels:
            raise ConfigError(f"Study.models: label '{label}' appears twice; labels name the run folders")
        labels.append(label)
        model_raw = copy.deepcopy(raw)
        model_raw.pop("Study", None)
        for key, value in ov.items():
            if not isinstance(key, str) or key.count(".") != 1:
                raise ConfigError(f"Study.models[{i}] override key {key!r} must be Section.key")
            section, k = key.split(".")
            if section == "Study" or not isinstance(model_raw.setdefault(section, {}), dict):
                raise ConfigError(f"Study.models[{i}] override key {key!r} must name a Global/Arch/Data/Optimizer/Metric key")
            if (section, k) in PER_STUDY:  # every model must be run alike, or the comparison compares settings
                raise ConfigError(f"Study.models[{i}] ({label}) overrides {key}, which the study sets for every run "
                                  f"alike ({PER_STUDY[(section, k)]}); set it for the whole study instead")
            model_raw[section][k] = value
        model_cfg = validate(model_raw)
        get_entry(model_cfg["Arch"]["name"])  # an unknown model fails before any run starts
        for seed in seeds:
            cfg = copy.deepcopy(model_cfg)
            cfg["Study"] = defaults()["Study"]
            cfg["Global"].update(seed=seed, output_dir=os.path.join(root, "runs", label), name=f"seed_{seed}",
                                 print_every=0, overwrite=False, resume=False)
            if not cfg["Global"]["kernel_threads"]:  # share the cores between the workers, never oversubscribe
                cfg["Global"]["kernel_threads"] = max(1, cpu_cores() // st["workers"])
            jobs.append({"label": label, "seed": seed, "cfg": cfg})
    # seed-major order: a study stopped early (or a shard) has every model on its first seeds
    jobs.sort(key=lambda j: seeds.index(j["seed"]))
    pairs = st["compare"] or [list(p) for p in combinations(labels, 2)]
    seen: set[frozenset] = set()
    for p in pairs:
        if not (isinstance(p, list) and len(p) == 2 and all(x in labels for x in p) and p[0] != p[1]):
            raise ConfigError(f"Study.compare entry {p!r} must be a pair of two different model labels from {labels}")
        if frozenset(p) in seen:  # a pair named twice would count twice in the Holm family
            raise ConfigError(f"Study.compare names the pair {p!r} twice; list each comparison once")
        seen.add(frozenset(p))
    st["compare"] = pairs
    st["seeds"] = seeds
    st["root"] = root
    return base, jobs


def _folder(job: dict[str, Any]) -> str:
    return os.path.join(job["cfg"]["Global"]["output_dir"], job["cfg"]["Global"]["name"])


def job_state(job: dict[str, Any], shifts: list[int], st: dict[str, Any] | None = None,
              data: dict[str, Any] | None = None) -> str:
    """``done``, ``partial``, ``new``, ``record`` (finished elsewhere: its committed record counts), or
    ``stale: <key> was X, the study asks Y`` — from the run folder, else from the study's record of the run."""
    from .runfolder import RunFolder, config_difference

    rf = RunFolder(job["cfg"])
    if st is not None and not (os.path.isdir(rf.dir) and (rf.holds_run() or os.path.exists(rf.config_path))):
        return record_state(st, job, shifts, data or {})
    saved = rf.saved_config() if os.path.isdir(rf.dir) else None
    if saved is not None:
        diff = config_difference(saved, job["cfg"], STUDY_NEUTRAL)
        if diff:
            return f"stale: {diff[0]} was {diff[1]!r}, the study asks {diff[2]!r}"
    elif rf.holds_run():
        return "stale: it has no config.yml to compare with"
    if not os.path.exists(rf.metrics_path):
        return "partial" if rf.holds_run() else "new"
    from .models import arch_revision

    metrics = _read(rf.metrics_path)
    recorded = metrics.get("arch_revision", 1)
    if recorded != arch_revision(job["cfg"]["Arch"]):
        return (f"stale: it was trained with revision {recorded} of its network, which has since been corrected "
                f"(now revision {arch_revision(job['cfg']['Arch'])})")
    other = _other_arithmetic(metrics, job, data or {})
    if other:
        return f"stale: it was {other}"
    spath = os.path.join(rf.dir, "shift.json")
    if not os.path.exists(spath) or set(_read(spath)) != {str(k) for k in shifts} \
            or not os.path.exists(os.path.join(rf.dir, "classes.json")):
        return "shift"  # trained; the shift test or the per-class count is missing, or measured other shifts
    return "done"


def _read(path: str) -> Any:
    from .files import read_json

    return read_json(path, "study file")


def run_job(job: dict[str, Any], shifts: list[int]) -> dict[str, Any]:
    """Train (or resume, or re-run when stale and allowed) one run and measure its shift robustness."""
    from .cli import quiet_paddle

    quiet_paddle()
    from .engine import measure_run, train
    from .files import write_json

    cfg = copy.deepcopy(job["cfg"])
    folder = _folder(job)
    state = job_state(job, shifts)
    if job.get("replace_stale"):  # the study found it stale (also by what only it compares: the arithmetic)
        state = "stale"
    if state.startswith("stale"):
        if not job.get("replace_stale"):
            raise RunFolderError(f"{folder} is {state}; run the study with -o Global.overwrite=true to re-run such runs")
        cfg["Global"]["overwrite"] = True
    if state not in ("done", "shift"):
        cfg["Global"]["resume"] = state == "partial"
        train(cfg, quiet=True, prefix=f"[{job['label']} seed {job['seed']}] ", progress=True)
    if state != "done":
        shift, classes = measure_run(cfg, shifts)
        write_json(os.path.join(folder, "classes.json"), classes)
        write_json(os.path.join(folder, "shift.json"), shift)  # last: its presence marks the run measured
    return _result(job, skipped=state == "done")


def _result(job: dict[str, Any], skipped: bool, st: dict[str, Any] | None = None) -> dict[str, Any]:
    folder = _folder(job)
    if st is not None and not os.path.exists(os.path.join(folder, "metrics.json")):
        folder = record_path(st, job)  # finished on another machine (or in another output folder)
    return {"label": job["label"], "seed": job["seed"], "metrics": _read(os.path.join(folder, "metrics.json")),
            "shift_acc": _read(os.path.join(folder, "shift.json")), "classes": _read(os.path.join(folder, "classes.json")),
            "skipped": skipped}


def _worker_main(argv: list[str] | None = None) -> int:
    """``python -m paddle_lenet.jobs JOB_JSON``: one run of a parallel study (see :func:`_run_parallel`)."""
    spec = json.loads((argv or sys.argv[1:])[0])
    run_job(spec["job"], spec["shifts"])
    return 0


if __name__ == "__main__":
    from .cli import run

    run(_worker_main, quiet_stops=True)  # stopped by its study, which says so in one line
