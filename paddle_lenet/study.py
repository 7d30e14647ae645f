"""Studies: the same experiment over models × seeds, with statistics, robustness and a report.

A study config is a normal config (the shared settings) plus a ``Study`` section listing models,
each with its own overrides. Every run goes through :func:`paddle_lenet.engine.train` into
``<output_dir>/<study>/runs/<label>/seed_<s>/``; finished runs are skipped and partial ones resumed,
so re-running a study continues it — but only runs whose recorded ``config.yml`` matches what the study
asks for now count: a run trained with other settings is refused (or re-run with ``Global.overwrite``),
never reported under the study's name. ``--shard K/N`` splits the runs over machines; ``--report`` reads
whatever has finished.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import signal
import subprocess
import sys
import time
from itertools import combinations
from typing import Any

import numpy as np

from .config import apply_overrides, defaults, read_yaml, validate
from .errors import ConfigError, RunFolderError
from .runfolder import NEUTRAL
from .stats import holm, mde, mean_std, permutation, tost, verdict, welch


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


def _run_parallel(jobs: list[dict[str, Any]], shifts: list[int], slots: list[str | None], done: Any) -> None:
    """Each job in its own ``python -m paddle_lenet.study`` process, one per worker slot.

    A slot is a CPU share or a GPU (``CUDA_VISIBLE_DEVICES``), see :func:`gpu_slots`. Children run in their
    own session so that a terminal's Ctrl-C reaches only this parent, which then passes one SIGTERM on to
    each running child: its run checkpoints at the next step and exits, and no new run starts. The study
    exits 130; running it again continues where it stopped.
    """
    from .errors import TrainingStopped

    pending, running = list(jobs), {}
    free = list(range(len(slots)))
    stop: list[int] = []
    failed = ""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    old = {s: signal.signal(s, lambda signum, frame: stop.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while (pending or running) and not stop:
            while pending and free:
                job, slot = pending.pop(0), free.pop(0)
                wenv = dict(env)
                if slots[slot] is not None:
                    wenv["CUDA_VISIBLE_DEVICES"] = slots[slot]
                cmd = [sys.executable, "-m", "paddle_lenet.study", json.dumps({"job": job, "shifts": shifts})]
                running[subprocess.Popen(cmd, env=wenv, start_new_session=True)] = (job, slot)
            time.sleep(0.1)
            for proc, (job, slot) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[proc]
                free.append(slot)
                if proc.returncode != 0:
                    stop.append(0)
                    failed = f"{job['label']} seed {job['seed']} exited {proc.returncode}"
                    break
                done(_result(job, skipped=False))
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop and stop[0] == 0:
        raise TrainingStopped(f"study run {failed} (its message is above); fix it and run the same command again", 1)
    if stop:
        raise TrainingStopped("study interrupted; finished runs are kept and running ones checkpointed; "
                              "run the same command again to continue", 130)


def _result(job: dict[str, Any], skipped: bool, st: dict[str, Any] | None = None) -> dict[str, Any]:
    folder = _folder(job)
    if st is not None and not os.path.exists(os.path.join(folder, "metrics.json")):
        folder = record_path(st, job)  # finished on another machine (or in another output folder)
    return {"label": job["label"], "seed": job["seed"], "metrics": _read(os.path.join(folder, "metrics.json")),
            "shift_acc": _read(os.path.join(folder, "shift.json")), "classes": _read(os.path.join(folder, "classes.json")),
            "skipped": skipped}


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``'K/N'`` → ``(K, N)`` with 0 ≤ K < N (Slurm's 0-based array index over the array's size)."""
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r} must be K/N, e.g. --shard 0/4 (K counts from 0)") from None
    if not (n >= 1 and 0 <= k < n):
        raise ConfigError(f"--shard {text}: need 0 <= K < N, e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT")
    return k, n


def _here(base: dict[str, Any]) -> dict[str, Any]:
    """Where this machine would compute a run (the device: with it, each job's kernel revision) and the test set's
    fingerprint. A record made with other arithmetic or on another test set is not this study's run."""
    from .data import fingerprint, load_split
    from .engine import select_device

    g, d = base["Global"], base["Data"]
    return {"device": select_device(g["device"]),
            "fingerprint": fingerprint(load_split(d["name"], d["root"], "test"))}


def run_study(path: str, overrides: list[str], shard: tuple[int, int] | None = None,
              report_only: bool = False) -> dict[str, Any] | None:
    """Run the study's runs (all, or one shard's), then write summary.json, report.md and figures.

    A shard only trains; ``report_only`` only reads what the runs recorded and reports, naming missing runs.
    """
    base, jobs = load_study(path, overrides)
    st = base["Study"]
    t0 = time.time()
    shifts = [int(k) for k in st["shifts"]]
    mine = [j for i, j in enumerate(jobs) if shard is None or i % shard[1] == shard[0]]
    data = {} if report_only else _here(base)
    states = {id(j): job_state(j, shifts, st, data) for j in jobs}
    stale = [j for j in (jobs if report_only else mine) if states[id(j)].startswith("stale")]
    if stale and not (base["Global"]["overwrite"] and not report_only):
        j = stale[0]
        raise RunFolderError(f"{j['label']} seed {j['seed']} ({_folder(j)}) is {states[id(j)]}; its numbers would not be "
                             f"this study's. Re-run such runs with -o Global.overwrite=true, or use another Study.name")
    for j in stale:
        j["replace_stale"] = True
    where = "" if shard is None else f" (shard {shard[0]}/{shard[1]}: {len(mine)} of them)"
    devices = "GPU " + ",".join(s for s in st["slots"] if s) if any(st["slots"]) else "CPU"
    results: list[dict[str, Any]] = []

    def done(r: dict[str, Any]) -> None:
        results.append(r)
        job = next(j for j in jobs if j["label"] == r["label"] and j["seed"] == r["seed"])
        if os.path.exists(os.path.join(_folder(job), "shift.json")):
            write_record(st, job)  # a few KB of text: commit the records folder and the run travels
        m = r["metrics"]
        state = "skipped (done)" if r["skipped"] else f"{m['train_seconds']:.0f}s"
        print(f"[{len(results)}/{len(mine)}] {r['label']} seed {r['seed']}: acc_top1 {m['acc_top1']:.4f} "
              f"shift{max(shifts)} {r['shift_acc'].get(str(max(shifts)), float('nan')):.4f} {state}", flush=True)

    finished = ("done", "record")
    if report_only:
        results = [_result(j, skipped=True, st=st) for j in jobs if states[id(j)] in finished]
    else:
        print(f"study {st['name']}: {len(st['models'])} models × {len(st['seeds'])} seeds = {len(jobs)} runs{where}, "
              f"{st['workers']} worker(s) on {devices} -> {st['root']}", flush=True)
        todo = []
        for job in mine:  # finished runs are read back, not re-run: a study resumes where it stopped
            if states[id(job)] in finished:
                done(_result(job, skipped=True, st=st))
            else:
                todo.append(job)
        try:
            if st["workers"] == 1:
                for job in todo:
                    done(run_job(job, shifts))
            else:
                _run_parallel(todo, shifts, st["slots"], done)
        finally:  # a study resumed after Ctrl-C reports the wall time of all its sessions, not just the last
            _add_wall_seconds(records_dir(st), time.time() - t0, shard)  # travels with the records
        if shard is not None:
            print(f"shard {shard[0]}/{shard[1]} done; when every shard has finished: tools/study.py -c {path} --report")
            return None
        results = [_result(j, skipped=True, st=st) for j in jobs]  # in the study's order, whatever finished first
    missing = [f"{j['label']}/seed_{j['seed']}" for j in jobs if states[id(j)] not in finished and report_only]
    from .report import write_study_report

    from .engine import model_kernels

    uses = {j["label"]: model_kernels(j["cfg"]) for j in {j["label"]: j for j in jobs}.values()}
    summary = summarize(base, results, _total_wall_seconds(records_dir(st)), missing, uses)
    write_study_report(summary, st["root"])
    if missing:
        print(f"{len(missing)} of {len(jobs)} runs are missing from the report: {', '.join(missing[:6])}"
              f"{' ...' if len(missing) > 6 else ''}", flush=True)
    return summary


def _add_wall_seconds(root: str, seconds: float, shard: tuple[int, int] | None) -> None:
    """Accumulate wall time across invocations, one file per shard (shards may run at once)."""
    from .files import makedirs, write_json

    name = "wall_seconds.json" if shard is None else f"wall_seconds.shard{shard[0]}of{shard[1]}.json"
    path = os.path.join(root, name)
    total = seconds + (float(_read(path)["wall_seconds"]) if os.path.exists(path) else 0.0)
    makedirs(root)
    write_json(path, {"wall_seconds": round(total, 1)})


def _total_wall_seconds(root: str) -> float:
    """Wall time of the study: its own sessions plus the longest shard (shards run side by side)."""
    import glob

    own = os.path.join(root, "wall_seconds.json")
    total = float(_read(own)["wall_seconds"]) if os.path.exists(own) else 0.0
    shards = [float(_read(p)["wall_seconds"]) for p in glob.glob(os.path.join(root, "wall_seconds.shard*.json"))]
    return total + (max(shards) if shards else 0.0)


def _one_arithmetic(results: list[dict[str, Any]], uses: dict[str, list[str]]) -> str | None:
    """The study's kernel revision (None: Paddle's ops), after checking that every kernel computed all the runs that
    use it with the same bits: a model whose kernels did not change keeps its runs when another kernel's bits do.
    ``uses``: the kernels of each label's model."""
    from . import ops

    recorded = {r["label"]: set() for r in results}
    for r in results:
        recorded[r["label"]].add((r["metrics"].get("arithmetic") or {}).get("kernels"))
    if len({k is None for ks in recorded.values() for k in ks}) > 1:
        raise RunFolderError("the study mixes runs computed with the package's kernels and with Paddle's ops; re-run "
                             "the runs of one kind (Global.fast)")
    revs: dict[str, set[str]] = {}
    for label, ks in recorded.items():
        for k in ks - {None}:
            for name, rev in ops.kernel_revisions(k, uses.get(label, [])).items():
                revs.setdefault(name, set()).add(rev)
    mixed = {n: sorted(v) for n, v in revs.items() if len(v) > 1}
    if mixed:
        n, v = next(iter(sorted(mixed.items())))
        raise RunFolderError(f"the study's runs were computed with different arithmetic (kernel {n} at revisions "
                             f"{', '.join(v)}); re-run the runs of the older code")
    if any(None in ks for ks in recorded.values()):
        return None
    return ops.LEGACY + "".join(f"+{n}.{v}" for n, (v,) in sorted(revs.items()) if v != ops.LEGACY)


def summarize(base: dict[str, Any], results: list[dict[str, Any]], wall: float,
              missing: list[str] | None = None, uses: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Per-model statistics and pairwise tests, stating the settings the runs *recorded*, not the request."""
    from .data import DATASETS

    st = base["Study"]
    if not results:
        raise RunFolderError(f"no finished runs under {st['root']}/runs to report on; run the study first")
    models: dict[str, Any] = {}
    labels = list(dict.fromkeys(r["label"] for r in results))
    for label in labels:
        rs = sorted((r for r in results if r["label"] == label), key=lambda r: r["seed"])
        ms = [r["metrics"] for r in rs]
        entry: dict[str, Any] = {"model": ms[0]["model"], "params": ms[0]["params"], "flops": ms[0]["flops"],
                                 "runs": len(rs), "seeds": [r["seed"] for r in rs]}
        for key in ("trainable_params", "buffers"):
            if key in ms[0]:
                entry[key] = ms[0][key]
        for key in ("acc_top1", "acc_top2", "loss", "train_seconds"):
            if all(key in m for m in ms):
                mean, std = mean_std([m[key] for m in ms])
                entry[f"{key}_mean"], entry[f"{key}_std"] = mean, std
        entry["acc_top1_runs"] = [m["acc_top1"] for m in ms]
        entry["shift_acc"] = {k: mean_std([r["shift_acc"][k] for r in rs])[0] for k in rs[0]["shift_acc"]}
        entry["shift_acc_std"] = {k: mean_std([r["shift_acc"][k] for r in rs])[1] for k in rs[0]["shift_acc"]}
        names = rs[0]["classes"]["class_names"]
        entry["per_class"] = {n: list(mean_std([r["classes"]["per_class_accuracy"][n] for r in rs])) for n in names}
        epochs = [h["epoch"] for h in ms[0].get("history", [])]
        curve = [[h["acc_top1"] for h in m.get("history", [])] for m in ms]
        if epochs and all(len(c) == len(epochs) for c in curve):
            entry["curve"] = {"epoch": epochs, "acc_top1_mean": [mean_std(col)[0] for col in zip(*curve, strict=True)],
                              "acc_top1_std": [mean_std(col)[1] for col in zip(*curve, strict=True)]}
            train = [[h.get("train_acc_top1") for h in m.get("history", [])] for m in ms]
            if all(v is not None for t in train for v in t):
                tr = [mean_std(col)[0] for col in zip(*train, strict=True)]
                te = entry["curve"]["acc_top1_mean"]
                best = int(np.argmax(te))
                entry["curve"]["train_acc_top1_mean"] = tr
                entry["fit"] = {"best_epoch": epochs[best], "best_acc_top1": te[best], "final_acc_top1": te[-1],
                                "final_train_acc_top1": tr[-1], "final_gap": tr[-1] - te[-1],
                                "best_epoch_per_seed": [epochs[int(np.argmax(c))] for c in curve]}
        models[label] = entry
    comparisons = compare_models(models, st["compare"], st["alpha"], st["equivalence_margin"])
    recorded = [r["metrics"] for r in results]

    def agreed(key: str) -> Any:
        values = {json.dumps(m.get(key)) for m in recorded}
        if len(values) != 1:  # cannot happen for runs that passed the config check; never report a guess
            raise RunFolderError(f"the study's runs disagree on {key} ({', '.join(sorted(values))}); re-run the stale ones")
        return recorded[0].get(key)

    name = agreed("dataset")
    agreed("test_fingerprint")  # the same test set for every run, whichever machine ran it
    kernels = _one_arithmetic(results, uses or {})
    isas = sorted({(m.get("arithmetic") or {}).get("isa", "unknown") for m in recorded})
    info = DATASETS.get(name)
    return {"study": st["name"], "study_root": st["root"], "dataset": name,
            "dataset_description": info.description if info else name,
            "train_samples": agreed("train_samples"), "test_samples": agreed("test_samples"),
            "train_limit": base["Data"]["train_limit"], "epochs": agreed("epochs"),
            "seeds": sorted({r["seed"] for r in results}), "models": models, "comparisons": comparisons,
            "family": (f"{len(comparisons)} comparisons of acc_top1 (Study.compare); p-values Holm-adjusted over them"
                       if len(comparisons) > 1 else "one comparison"),
            "alpha": st["alpha"], "equivalence_margin": st["equivalence_margin"],
            "arithmetic": {"kernels": kernels, "isa": isas,
                           "blas": sorted({(m.get("arithmetic") or {}).get("blas", "unrecorded") for m in recorded})},
            "paper": st["paper"], "missing_runs": missing or [], "wall_seconds": round(wall, 1),
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
                       f"{st['workers']} worker(s)"}


def compare_models(models: dict[str, Any], pairs: list[list[str]], alpha: float, margin: float) -> list[dict[str, Any]]:
    """Every pair's acc_top1 difference with its CI, Welch and permutation p, Holm over the family, the minimum
    detectable effect and the equivalence test (TOST, Holm too), and the verdict in words."""
    comparisons = []
    for a, b in pairs:
        if a not in models or b not in models:
            continue
        xa, xb = models[a]["acc_top1_runs"], models[b]["acc_top1_runs"]
        w = welch(xa, xb)
        perm = permutation(xa, xb)
        comparisons.append({"a": a, "b": b, "metric": "acc_top1", "diff": w["diff"], "ci95": w["ci95"],
                            "p_value": w["p_value"], "test": "Welch's t", "permutation_p": perm["p"],
                            "permutation_method": perm["method"], "p_equivalence": tost(xa, xb, margin)})
    family = max(1, len(comparisons))
    for c, p, pe in zip(comparisons, holm([c["p_value"] for c in comparisons]),
                        holm([c["p_equivalence"] for c in comparisons]), strict=True):
        c["p_holm"], c["p_equivalence_holm"], c["equivalence_margin"] = p, pe, margin
        # 80% power at the family's strictest Holm threshold, alpha / m (Bonferroni): what the runs could have seen
        c["mde"] = mde(models[c["a"]]["acc_top1_runs"], models[c["b"]]["acc_top1_runs"], alpha / family)
        c["verdict"] = verdict(p, pe, margin, c["mde"], alpha)
        pa, pb = models[c["a"]].get("per_class"), models[c["b"]].get("per_class")
        if pa and pb:  # where the difference comes from: per-class accuracy differences (classes are equal-sized)
            c["by_class"] = {n: pa[n][0] - pb[n][0] for n in pa}
    return comparisons


def _worker_main(argv: list[str] | None = None) -> int:
    """``python -m paddle_lenet.study JOB_JSON``: one run of a parallel study (see :func:`_run_parallel`)."""
    spec = json.loads((argv or sys.argv[1:])[0])
    run_job(spec["job"], spec["shifts"])
    return 0


if __name__ == "__main__":
    from .cli import run

    run(_worker_main)
